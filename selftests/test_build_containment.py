"""Hostile CUDA builds: nvcc runs contained, takes no option from the submission, and its cache serves no one else.

Each attack of ``fixtures/adversarial/build-*`` is built beside the honest control (the correct demo) with the same
cache; the build is driven directly, as ``gpu_cases`` drives it. Build-only: nvcc is needed, a GPU is not. Files
git cannot keep (the demo's kernel, the targets of a payload, a sparse file) are made here in a temporary copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from plugins.discover.entry_points import resolve_cuda
from plugins.isolate import build as build_module
from plugins.isolate import build_box, build_cache, containment, runspace
from plugins.isolate.build import BuildResult, build, nvcc_path, unsafe_name
from plugins.isolate.build_box import BuildLimits
from plugins.isolate.sandbox import Limits, Program, Sandbox
from reference import flash_attention as fwd

pytestmark = pytest.mark.skipif(nvcc_path() is None, reason="needs nvcc")
ADVERSARIAL = Path(__file__).resolve().parent / "fixtures" / "adversarial"
DEMO = REPO / "submissions" / "demo-tiled" / "softmax_topk"
EXPORTS = ("softmax_topk",)
FWD_CASE = next(c for c in fwd.CASES if c.id == "b1-h2-n40-d64-t64-causal")
ESCAPES = ("READ ", "WROTE ", "CONNECTED ", "SIGNALLED ", "SEES ")  # what the planted payload reports it managed


def attack(tmp_path: Path, name: str) -> Path:
    """A copy of the attack's folder with the demo's kernel beside it (as demo_kernel.cu)."""
    folder = tmp_path / name / "softmax_topk"
    shutil.copytree(ADVERSARIAL / name / "softmax_topk", folder, symlinks=True)
    shutil.copy(DEMO / "softmax_topk.cu", folder / "demo_kernel.cu")
    return folder


def built(folder: Path, source: str, tmp_path: Path, **options) -> BuildResult:
    return build(folder, source, EXPORTS, cache=tmp_path / "cache", **options)


@pytest.fixture
def targets(tmp_path: Path):
    """What a payload aims at: a file only the grader's user may read, a folder of the grader's, a port the grader
    listens on, the grader's pid; written as targets.sh for the payload to source."""
    grader = tmp_path / "grader"
    grader.mkdir()
    secret = grader / "secret.txt"
    secret.write_text(f"TOKEN-{secrets.token_hex(8)}\n")
    secret.chmod(0o600)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        values = {
            "READ_FILES": f"{secret} {Path.home()}/.bashrc",
            "SEE_PATHS": f"{REPO} {grader}",
            "WRITE_DIRS": f"{grader} {tmp_path}",
            "PORT": str(server.getsockname()[1]),
            "GRADER_PID": str(os.getpid()),
        }
        yield "".join(f'{k}="{v}"\n' for k, v in values.items()), grader


def fwd_inputs() -> dict:
    return fwd.make_inputs(FWD_CASE, np.random.default_rng(0))


def escapes(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(ESCAPES)]


def test_control_builds_contained(tmp_path):
    """The correct demo builds in the build's containment, exports its function, and is then served from the cache."""
    first = built(DEMO, "softmax_topk.cu", tmp_path)
    again = built(DEMO, "softmax_topk.cu", tmp_path)
    assert first.ok and not first.cached, first.message
    assert "no network" in first.message or containment.probe().level != "namespaces", first.message
    assert again.ok and again.cached and again.library == first.library


def test_options_in_a_file_name_reach_no_compiler(tmp_path, targets):
    """A source named --options-file=opts.cu is compiled as a source by the grader's g++: the planted bin/g++ that
    opts.cu names never runs, and nothing outside the build changes."""
    script, _ = targets
    folder = attack(tmp_path, "build-options-file")
    (folder / "bin" / "targets.sh").write_text(script)
    assert resolve_cuda(folder, EXPORTS, ("softmax_topk",)).chosen == {"softmax_topk": "--options-file=opts.cu"}
    result = built(folder, "--options-file=opts.cu", tmp_path)
    assert "PLANTED COMPILER RAN" not in result.log, result.log[:2000]
    assert result.ok, result.message
    assert not list(tmp_path.rglob("PWNED"))


def test_shell_in_a_file_name_is_refused(tmp_path, targets):
    """A source whose name a shell would run ($(sh x)) is refused with a reason; its payload never runs."""
    script, _ = targets
    folder = attack(tmp_path, "build-shell-name")
    (folder / "targets.sh").write_text(script)
    result = built(folder, "topk$(sh x).cu", tmp_path)
    assert not result.ok and "rename the file" in result.message, result.message
    assert "SHELL PAYLOAD RAN" not in result.log and not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize(
    ("name", "safe"),
    [("softmax_topk.cu", True), ("src/my kernel.cu", True), ("--options-file=opts.cu", True), ("a`b`.cu", False),
     ("a$(b).cu", False), ('a".cu', False), ("a\\b.cu", False), ("a\nb.cu", False), ("../up.cu", False),
     ("/etc/x.cu", False)],
)  # fmt: skip
def test_unsafe_names(name, safe):
    """Names nvcc's shell would interpret, or that leave the folder, are refused; dashes and spaces are fine."""
    assert (unsafe_name(name) is None) == safe


def build_level(monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    """Force the containment level the build box is chosen from (the grader's own override)."""
    if level == "namespaces" and containment.probe().level != "namespaces":
        pytest.skip("needs bwrap with namespaces (apt-get install bubblewrap)")
    if level == "uid" and os.geteuid() != 0:
        pytest.skip("the uid rung needs a grader running as root")
    monkeypatch.setenv("KERNELGRADE_CONTAINMENT", level)
    containment.probe.cache_clear()
    build_box.box.cache_clear()


@pytest.fixture(autouse=True)
def fresh_probes():
    yield
    containment.probe.cache_clear()
    build_box.box.cache_clear()


@pytest.mark.parametrize("level", ["namespaces", "uid"])
def test_a_running_compiler_is_contained(tmp_path, targets, monkeypatch, level):
    """Should a compiler run the submission's code, that code reads no grader file, writes nothing outside its output
    folder, reaches no network and cannot signal the grader (the planted g++ run as the build step itself)."""
    script, _ = targets
    folder = attack(tmp_path, "build-options-file")
    (folder / "bin" / "targets.sh").write_text(script)
    build_level(monkeypatch, level)
    space = runspace.default()
    where = build_box.box(space.root)
    work = build_box.make_work(space, folder, where)
    try:
        ran = build_box.run(["/bin/bash", str(work.seen_src / "bin" / "g++"), "--version"], work, where,
                            BuildLimits(seconds=60), space)  # fmt: skip
    finally:
        shutil.rmtree(work.scratch, ignore_errors=True)
    assert "PLANTED COMPILER RAN" in ran.log and ran.returncode == 0, ran.log
    seen = [line for line in escapes(ran.log) if not (level == "uid" and line == f"SEES {REPO}")]
    assert seen == [], ran.log  # nobody may see the repo (world-readable), never write it
    assert not list(tmp_path.rglob("PWNED"))


def test_assembler_reads_no_grader_file(tmp_path, targets):
    """.incbin of a grader's file (0600) fails in the build: the secret is in no library, log or message."""
    _, grader = targets
    secret = (grader / "secret.txt").read_bytes().strip()
    folder = attack(tmp_path, "build-reads-secrets")
    (folder / "secret_path.h").write_text(f'#define SECRET_PATH "{grader / "secret.txt"}"\n')
    result = built(folder, "adapter.cu", tmp_path)
    assert secret not in (result.message + result.log).encode()
    assert not any(secret in path.read_bytes() for path in (tmp_path / "cache").rglob("*") if path.is_file())
    assert built(DEMO, "softmax_topk.cu", tmp_path).ok


def leftovers(marker: str) -> list[int]:
    """Processes whose command line names ``marker``, killed here (this test started them)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return found


def test_a_build_that_never_ends_is_stopped_whole(tmp_path):
    """Exponential template instantiation: stopped at the time limit with no process of it left (nvcc's front end
    included), and at the memory limit (RLIMIT_AS) with the compiler's own out-of-memory error."""
    folder = attack(tmp_path, "build-never-ends")
    source = f"never_{secrets.token_hex(4)}.cu"
    (folder / "adapter.cu").rename(folder / source)
    timed = built(folder, source, tmp_path, limits=BuildLimits(seconds=6))
    assert leftovers(source) == []
    assert not timed.ok and "did not finish within 6 s; all its processes were killed" in timed.message
    capped = built(folder, source, tmp_path, limits=BuildLimits(seconds=120, memory_bytes=512 * 2**20))
    assert not capped.ok and "out of memory" in capped.message, capped.message
    assert built(DEMO, "softmax_topk.cu", tmp_path).ok


def test_a_log_flood_is_cut(tmp_path):
    """A build whose errors never end is stopped at the output cap; the log kept is its head and tail, a few KiB."""
    folder = attack(tmp_path, "build-log-flood")
    result = built(folder, "adapter.cu", tmp_path, limits=BuildLimits(seconds=120))
    assert not result.ok and "its output passed 8 MiB, so it was stopped" in result.message, result.message
    assert "#include nested depth" in result.message and "bytes of output cut" in result.log
    assert len(result.log) < 100_000
    assert built(DEMO, "softmax_topk.cu", tmp_path).ok


def test_an_include_outside_the_folder_is_named(tmp_path):
    """The build sees only the folder's copy: an include of ../shared/ fails, and the message says why."""
    folder = attack(tmp_path, "build-include-outside")
    (folder.parent / "shared").mkdir()
    shutil.move(folder / "demo_kernel.cu", folder.parent / "shared" / "demo_kernel.cu")
    result = built(folder, "adapter.cu", tmp_path)
    assert not result.ok
    assert "sees only the submission's folder" in result.message and "../shared/demo_kernel.cu" in result.message


@pytest.mark.parametrize("forgery", ["changed library", "entry of another key", "record signed by no one"])
def test_a_poisoned_cache_entry_is_built_again(tmp_path, forgery):
    """A cached library that was changed, an entry copied from another build, or a record re-made without the
    grader's key: none is served; the control is built again from its own sources."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "k.cu").write_text('extern "C" int softmax_topk() { return 7; }\n')
    planted = built(other, "k.cu", tmp_path)
    victim = built(DEMO, "softmax_topk.cu", tmp_path)
    entry = victim.library.parent
    if forgery == "changed library":
        entry.joinpath("library.so").write_bytes(planted.library.read_bytes())
    elif forgery == "entry of another key":
        shutil.rmtree(entry)
        shutil.copytree(planted.library.parent, entry)
    else:
        record = json.loads((entry / "record.json").read_text())
        entry.joinpath("library.so").write_bytes(planted.library.read_bytes())
        record["files"]["library.so"] = build_cache.hashlib.sha256(planted.library.read_bytes()).hexdigest()
        (entry / "record.json").write_text(json.dumps(record))
    again = built(DEMO, "softmax_topk.cu", tmp_path)
    assert again.ok and not again.cached and "did not verify" in again.message, again.message
    assert again.library.read_bytes() != planted.library.read_bytes()


def test_the_cache_is_the_graders_alone(tmp_path):
    """The cache folder and its entries are 0700, the grader's; another user (nobody) cannot add an entry."""
    result = built(DEMO, "softmax_topk.cu", tmp_path)
    for path in (tmp_path / "cache", result.library.parent):
        assert path.stat().st_mode & 0o777 == 0o700 and path.stat().st_uid == os.geteuid()
    if os.geteuid() == 0:
        plant = subprocess.run(["/usr/bin/mkdir", str(tmp_path / "cache" / "planted")], user=containment.NOBODY,
                               capture_output=True, check=False)  # fmt: skip
        assert plant.returncode != 0 and not (tmp_path / "cache" / "planted").exists()


def test_a_child_cannot_plant_in_the_cache(tmp_path, monkeypatch):
    """A sandbox child that knows where the cache is writes nothing there; the control's entry still verifies."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    control = build(DEMO, "softmax_topk.cu", EXPORTS)
    cache = tmp_path / "home" / ".cache" / "kernelgrade" / "cuda"
    assert control.ok and cache in control.library.parents, control.library
    folder = tmp_path / "poisoner"
    shutil.copytree(ADVERSARIAL / "build-cache-poisoner" / "flash_attention", folder)
    (folder / "target.txt").write_text(str(cache))
    program = Program("reference.flash_attention", (("flash_attention_fwd", "impl.py"),), folder)
    sandbox = Sandbox(program, Limits(call_timeout_s=10, memory_bytes=1 << 30, device="cpu"), REPO)
    try:
        outcome = sandbox.run(fwd_inputs(), dict(FWD_CASE.params), {})
    finally:
        sandbox.close()
    # The payload's own raise names what it tried (so the attack ran), never that it wrote
    assert outcome.status == "error" and ("list " in outcome.message or "write " in outcome.message), outcome.message
    assert "wrote" not in outcome.message, outcome.message
    again = build(DEMO, "softmax_topk.cu", EXPORTS)
    assert again.cached and again.library == control.library


def test_the_build_reads_only_the_private_copy(tmp_path):
    """Through the grading path, the build reads the run's copy: a 3 GiB sparse header in the original folder (left
    out of the copy) is never read, so the grader's peak memory stays small."""
    folder = tmp_path / "model" / "softmax_topk"
    shutil.copytree(DEMO, folder)
    with open(folder / "weights.h", "wb") as handle:
        handle.truncate(3 * 2**30)
    script = (
        "import json, resource, sys\nfrom pathlib import Path\nfrom plugins.isolate import runspace\n"
        "from plugins.isolate.gpu_cases import built\n"
        "space = runspace.RunSpace.create(Path(sys.argv[1]))\nspace.copy_submissions([Path(sys.argv[2])])\n"
        "result = built(Path(sys.argv[2]), 'softmax_topk.cu', ('softmax_topk',), space)\nspace.remove()\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(json.dumps({'ok': result.ok, 'message': result.message, 'peak': peak}))\n"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(folder)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    facts = json.loads(done.stdout.splitlines()[-1]) if done.stdout else {}
    assert facts.get("ok"), done.stdout + done.stderr[-3000:]
    assert facts["peak"] < 2**30, facts


def test_children_as_the_graders_user_get_a_cache_per_run(tmp_path, monkeypatch):
    """Where children run as the grader's own user (process-group), builds are cached in the run's folder only."""
    build_level(monkeypatch, "process-group")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    space = runspace.RunSpace.create()  # under /tmp: nobody must reach its scratch folders
    try:
        result = build(DEMO, "softmax_topk.cu", EXPORTS, space=space)
        assert result.ok and space.root / "build-cache" in result.library.parents, result.library
        assert "cached per run" in result.message and not (tmp_path / "xdg" / "kernelgrade").exists()
    finally:
        space.remove()


def test_a_build_step_cannot_fork_without_end(tmp_path):
    """A step that forks 200 sleepers gets no more than its process cap (RLIMIT_NPROC, per user namespace)."""
    space = runspace.default()
    where = build_box.box(space.root)
    if where.uid is None and os.geteuid() == 0:
        pytest.skip("build steps run as root here, which RLIMIT_NPROC exempts (see the box's warnings)")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs the system's /usr/bin/python3 (the step sees no other interpreter)")
    forks = (
        "import os, time\nn = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    n += 1\nprint('forked', n)\n"
    )
    work = build_box.make_work(space, DEMO, where)
    try:
        ran = build_box.run(["/usr/bin/python3", "-c", forks], work, where, BuildLimits(processes=20), space)
    finally:
        shutil.rmtree(work.scratch, ignore_errors=True)
    forked = int(ran.log.split("forked ")[1].split()[0])
    cap = build_box._rlimits(BuildLimits(processes=20), where.uid)["RLIMIT_NPROC"]  # 20 over the user's own tasks
    assert 0 < forked <= cap < 200, ran.log


def test_exports_not_checked_are_said(tmp_path, monkeypatch):
    """Where nm is missing (or fails), the build still passes but says that the exports went unchecked, naming them:
    otherwise a missing extern "C" shows only later, in the loader's words."""
    which = shutil.which
    monkeypatch.setattr(build_module.shutil, "which", lambda name, *a, **k: None if name == "nm" else which(name))
    result = built(DEMO, "softmax_topk.cu", tmp_path)
    assert result.ok and f"exports not checked ({', '.join(EXPORTS)})" in result.message, result.message
