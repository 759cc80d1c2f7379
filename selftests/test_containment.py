"""The sandbox's walls, driven directly: the folder copy, what a child can reach, what outlives it, what it costs.

Mirrors ``plugins/isolate/runspace.py``, ``containment.py`` and ``measure.py``; the grading-run view of the same
attacks is ``test_adversarial_sandbox.py``.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
import tracemalloc

import numpy as np
import pytest
from test_sandbox import CASE, LIMITS, make, program, run_once, running_with

from conftest import REPO
from plugins.base import records as r
from plugins.isolate import containment, runspace
from plugins.isolate.plugin import _below_floor
from plugins.isolate.sandbox import Limits, Sandbox
from reference import flash_attention as fwd

NAMESPACES = pytest.mark.skipif(
    containment.probe().level != "namespaces", reason="needs bwrap with namespaces (apt-get install bubblewrap)"
)
CORRECT_CALL = "def flash_attention_fwd(Q, K, V, t, c):\n    return V.copy()\n"


def test_copy_refuses_special_files_and_links_out(tmp_path):
    """FIFOs, sockets and links leaving the folder are left out with a note; a link inside it is kept."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "impl.py").write_text("x = 1\n")
    os.mkfifo(source / "data.fifo")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(source / "control.sock"))
    (source / "zero.bin").symlink_to("/dev/zero")
    (source / "sub" / "up.txt").symlink_to("../../outside.txt")
    (source / "alias.py").symlink_to("impl.py")
    notes = runspace.copy_folder(source, tmp_path / "copy")
    copied = {p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*")}
    assert copied == {"impl.py", "alias.py", "sub"}
    assert (tmp_path / "copy" / "alias.py").read_text() == "x = 1\n"
    assert [n.split(" ")[2] for n in notes] == ["control.sock", "data.fifo", "sub/up.txt", "zero.bin"], notes


def test_copy_keeps_sparse_files_sparse(tmp_path):
    """A 48 MiB file holding 5 bytes stays a few KiB on disk; a 1 GiB one is over the cap and never read."""
    source = tmp_path / "src"
    source.mkdir()
    with open(source / "mid.bin", "wb") as handle:
        handle.seek(48 * 2**20 - 5)
        handle.write(b"data!")
    with open(source / "big.bin", "wb") as handle:
        handle.truncate(2**30)
    notes = runspace.copy_folder(source, tmp_path / "copy")
    copy = tmp_path / "copy" / "mid.bin"
    assert copy.stat().st_size == 48 * 2**20 and copy.stat().st_blocks * 512 <= 64 * 1024
    assert copy.read_bytes()[-5:] == b"data!"
    assert notes == ["left out: big.bin (1024 MiB) is over the 64 MiB cap per file"]


def test_stale_run_folders_are_removed(tmp_path):
    """A run folder whose process is gone is removed by the next run's start; a live run's folder stays."""
    dead = tmp_path / f"{runspace.RUN_PREFIX}999999999-12345-abcd"
    alive = tmp_path / f"{runspace.RUN_PREFIX}{os.getpid()}-{runspace.process_start(os.getpid())}-abcd"
    for folder in (dead, alive):
        (folder / "sandboxes").mkdir(parents=True)
    space = runspace.RunSpace.create(tmp_path)
    try:
        assert not dead.exists() and alive.exists()
        assert stat.S_IMODE(space.root.stat().st_mode) == 0o711
        assert stat.S_IMODE((space.root / "speed.lock").stat().st_mode) == 0o600
    finally:
        space.remove()
    assert not space.root.exists()


def test_output_flood_costs_the_grader_nothing(tmp_path):
    """200 MiB printed at import: the grader keeps a short tail, holds no more than a few MiB, writes nothing."""
    folder = make(tmp_path, "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 2**20)\n" + CORRECT_CALL)
    sandbox = Sandbox(program(folder), Limits(call_timeout_s=60, memory_bytes=1 << 30, device="cpu"), REPO)
    tracemalloc.start()
    try:
        outcome = sandbox.run(fwd.make_inputs(CASE, np.random.default_rng(0)), dict(CASE.params), {})
        peak = tracemalloc.get_traced_memory()[1]
        copies = (sandbox._scratch / "work", sandbox._scratch / "src")  # the folder's copies: what it holds, no output
        written = sum(p.stat().st_size for p in sandbox._scratch.rglob("*") if p.is_file() and p.parent not in copies)
    finally:
        tracemalloc.stop()
        sandbox.close()
    assert outcome.status == "ok" and f"[... {200 * 2**20 - LIMITS.output_tail_chars} bytes cut" in outcome.stdout
    assert peak < 8 * 2**20 and written == 0


@NAMESPACES
def test_child_cannot_reach_the_grader(tmp_path, monkeypatch):
    """In its namespaces the child's parent is an init that ignores it, the repo is read-only, the run folder (and its
    speed lock) and the grader's home are not there, credentials are not in its environment, and the network is
    loopback only (a port the grader listens on is not there)."""
    lock = runspace.default().root / "speed.lock"
    home = tmp_path / "home"
    home.mkdir()
    (home / "key").write_text("secret")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KG_SELFTEST_API_TOKEN", "secret")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe = (
            "import os, socket\ndef flash_attention_fwd(Q, K, V, t, c):\n    facts = [f'ppid={os.getppid()}']\n"
            "    facts.append('token' if 'KG_SELFTEST_API_TOKEN' in os.environ else 'no token')\n"
            f"    targets = (({str(REPO / 'plugins' / 'x')!r}, 'w'), ({str(lock)!r}, 'r'),\n"
            f"               ({str(home / 'key')!r}, 'r'))\n"
            "    for path, mode in targets:\n"
            "        try:\n            open(path, mode)\n            facts.append('opened ' + path)\n"
            "        except OSError as exc:\n            facts.append(type(exc).__name__)\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)\n"
            "        facts.append('connected')\n    except OSError:\n        facts.append('no network')\n"
            "    raise RuntimeError(' '.join(facts))\n"
        )
        outcome = run_once(make(tmp_path, probe))
    facts = "ppid=1 no token OSError FileNotFoundError FileNotFoundError no network"
    assert outcome.message.split(": ", 1)[1] == facts, outcome.message


def test_nothing_outlives_the_sandbox(tmp_path):
    """A setsid double fork started by a call is gone once the sandbox closes (cgroup, or PID namespace)."""
    marker = f"{time.time() % 1000:.6f}"
    escape = (
        "import os, subprocess\ndef flash_attention_fwd(Q, K, V, t, c):\n    if os.fork() == 0:\n        os.setsid()\n"
        f"        subprocess.Popen(['sleep', '{marker}'])\n        os._exit(0)\n    os.wait()\n    return V.copy()\n"
    )
    sandbox = Sandbox(program(make(tmp_path, escape)), LIMITS, REPO)
    try:
        assert sandbox.run(fwd.make_inputs(CASE, np.random.default_rng(0)), dict(CASE.params), {}).status == "ok"
        assert running_with(marker)
    finally:
        sandbox.close()
    time.sleep(0.2)
    assert not running_with(marker)


def test_measured_and_unmeasured_calls_look_the_same(tmp_path):
    """The memory case and a plain case run the same code in the child: same stack, no tracing on either."""
    spy = (
        "import sys, tracemalloc\ndef flash_attention_fwd(Q, K, V, t, c):\n    frames, f = [], sys._getframe(1)\n"
        "    while f:\n        frames.append((f.f_code.co_name, sorted(f.f_locals)))\n        f = f.f_back\n"
        "    print(tracemalloc.is_tracing(), frames)\n    return V.copy()\n"
    )
    sandbox = Sandbox(program(make(tmp_path, spy)), LIMITS, REPO)
    memory_case = next(c for c in fwd.CASES if c.category == "memory")
    try:
        seen = [
            sandbox.run(fwd.make_inputs(case, np.random.default_rng(0)), dict(case.params), {}).stdout
            for case in (CASE, memory_case)
        ]
    finally:
        sandbox.close()
    assert seen[0] == seen[1] and seen[0].startswith("False")


def test_weaker_containment_is_reported(monkeypatch):
    """Without bwrap the level drops and the reason is a warning the reports show; a run still works."""
    monkeypatch.setenv("KERNELGRADE_CONTAINMENT", "process-group")
    containment.probe.cache_clear()
    try:
        level = containment.probe()
        outcome = run_once(REPO / "selftests" / "fixtures" / "submissions" / "bad-noisy" / "flash_attention")
    finally:
        containment.probe.cache_clear()
    assert level.level == "process-group" and any("rlimits only" in w for w in level.to_dict()["warnings"])
    assert outcome.status == "ok"


def test_time_under_the_floor_is_wrong():
    """A passed speed case whose median is under the arithmetic floor is wrong, with the reason; above it, unchanged."""
    case = next(c for c in fwd.CASES if c.is_speed)
    floor = fwd.min_flops(case) / 320e9
    for median, outcome, checks in ((floor / 2, r.WRONG, ["time floor"]), (floor * 2, r.PASSED, [])):
        record = r.CaseRecord.for_case("m", "flash_attention", case, 0, r.PASSED, speed={"median_s": median})
        graded = _below_floor(record, (floor, "how"))
        assert graded.outcome == outcome and [c["name"] for c in graded.checks] == checks


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the grader's children run as nobody only under root")
def test_a_child_as_nobody_reads_no_copy_and_no_manifest(tmp_path):
    """The run's copies and manifest are the grader's alone: a process as nobody (a GPU child on a host where CUDA does
    not start in bwrap; seen on an H100) can reach neither, so it cannot find or run another model's code."""
    source = tmp_path / "model" / "flash_attention"
    source.mkdir(parents=True)
    (source / "impl.py").write_text(CORRECT_CALL)
    tmp_path.chmod(0o755)
    space = runspace.RunSpace.create(tmp_path)
    try:
        space.copy_submissions([source])
        copy = next((space.root / "copies").iterdir())
        assert stat.S_IMODE((space.root / "copies").stat().st_mode) == 0o700
        assert stat.S_IMODE((space.root / "manifest.json").stat().st_mode) == 0o600
        probe = 'for p in "$@"; do cat "$p" >/dev/null 2>&1 && echo read || echo refused; done'
        targets = [str(space.root / "manifest.json"), str(copy / "impl.py")]
        done = subprocess.run(
            ["/bin/sh", "-c", probe, "probe", *targets], user=containment.NOBODY, capture_output=True, text=True
        )
        assert done.stdout.split() == ["refused", "refused"], done.stdout + done.stderr
    finally:
        space.remove()
