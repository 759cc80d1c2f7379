"""Compile caches (plugins/isolate/compile_cache.py): shared by the children of one (submission, challenge) and by no
other owner, private to the grader's run, and kept across runs only under --compile-cache, keyed by content.

Each child here runs a small submission that lists its compile cache and leaves a file in it (``SEEN``): a later child
that finds the file shares the earlier one's cache.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from plugins.isolate import compile_cache, containment, runspace
from plugins.isolate.sandbox import Limits, Program, Sandbox
from reference import flash_attention as fwd

CASE = next(c for c in fwd.CASES if c.id == "b1-h2-n40-d64-t64-causal")
LIMITS = Limits(call_timeout_s=20, memory_bytes=1 << 30, device="cpu")
# Raised from inside a child: its three JIT cache variables and what the cache held before it left its own file there.
SEEN = (
    "import json, os\n"
    "def seen(*args):\n"
    "    paths = {os.environ[v] for v in ('TRITON_CACHE_DIR', 'TORCHINDUCTOR_CACHE_DIR', 'CUDA_CACHE_PATH')}\n"
    "    cache = paths.pop() if len(paths) == 1 else None\n"
    "    found = sorted(os.listdir(cache)) if cache else None\n"
    "    if cache:\n"
    "        open(os.path.join(cache, 'kernel-' + os.urandom(8).hex()), 'w').write('compiled')\n"
    "    raise RuntimeError('SEEN' + json.dumps({'cache': cache, 'found': found, 'uid': os.getuid()}))\n"
    "flash_attention_fwd = seen\n"
)


@pytest.fixture
def space(tmp_path: Path):
    made = runspace.RunSpace.create(tmp_path)
    yield made
    made.remove()


def submission(tmp_path: Path, name: str, extra: str = "") -> Path:
    folder = tmp_path / name / "flash_attention"
    folder.mkdir(parents=True)
    (folder / "impl.py").write_text(SEEN + extra)
    return folder


def child_sees(folder: Path, who: str, space: runspace.RunSpace, limits: Limits = LIMITS) -> dict:
    """What one fresh child of ``folder`` under the cache owner ``who`` saw (the child is closed after)."""
    program = Program(fwd.__name__, (("flash_attention_fwd", "impl.py"),), folder, cache=who)
    sandbox = Sandbox(program, limits, REPO, space)
    try:
        outcome = sandbox.run(fwd.make_inputs(CASE, np.random.default_rng(0)), dict(CASE.params), {})
    finally:
        sandbox.close()
    assert "SEEN" in outcome.traceback, outcome.message + outcome.traceback
    return json.loads(outcome.traceback.rpartition("SEEN")[2].splitlines()[0])


def test_one_owners_children_share_a_cache_that_no_other_owner_sees(tmp_path, space):
    """The second child of a (model, challenge) finds the first one's kernel; another model's child, and the folder of
    the challenge's reference baseline, hold nothing of it."""
    mine, theirs = submission(tmp_path, "model-a"), submission(tmp_path, "model-b")
    owner_a, owner_b = (
        compile_cache.owner("model-a", "flash_attention"),
        compile_cache.owner("model-b", "flash_attention"),
    )
    first = child_sees(mine, owner_a, space)
    second = child_sees(mine, owner_a, space)
    other = child_sees(theirs, owner_b, space)
    assert first["found"] == [] and len(second["found"]) == 1 and second["cache"] == first["cache"], (first, second)
    assert other["found"] == [] and other["cache"] != first["cache"], other
    baseline = compile_cache.prepare(space, compile_cache.owner(None, "flash_attention"), None, None)
    assert str(baseline) not in (first["cache"], other["cache"]) and os.listdir(baseline) == []


def test_owners_never_collide():
    """A model named like the baseline's tag, or holding the separator, still has a cache of its own."""
    owners = {
        compile_cache.owner(None, "softmax_topk"),
        compile_cache.owner("baseline", "softmax_topk"),
        compile_cache.owner("", "softmax_topk"),
        compile_cache.owner("softmax_topk", "softmax_topk"),
        compile_cache.owner("a", "softmax_topk"),
    }
    assert len(owners) == 5


def test_cache_folder_is_private(tmp_path, space):
    """The cache is the grader's folder, mode 0700, under a 0711 folder; its name comes from the run's 0600 key."""
    seen = child_sees(submission(tmp_path, "model-a"), compile_cache.owner("model-a", "flash_attention"), space)
    cache = Path(seen["cache"])
    assert cache.parent == space.root / "compile"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and cache.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o711
    assert stat.S_IMODE((space.root / "compile.key").stat().st_mode) == 0o600
    assert cache.name == compile_cache.folder_name(space, compile_cache.owner("model-a", "flash_attention"))
    other_run = runspace.RunSpace.create(tmp_path)
    try:  # the same owner in another run: another name (each run has its own key)
        assert compile_cache.folder_name(other_run, compile_cache.owner("model-a", "flash_attention")) != cache.name
    finally:
        other_run.remove()


ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the grader's children run as nobody only under root"
)


def as_nobody(script: str, *args: str) -> list[str]:
    done = subprocess.run(
        ["/bin/sh", "-c", script, "probe", *args], user=containment.NOBODY, capture_output=True, text=True
    )
    return done.stdout.split()


@pytest.fixture
def open_base():
    """A folder every user can pass through, as the run's base ($TMPDIR, /tmp) is: pytest's own tmp_path is not."""
    base = Path(tempfile.mkdtemp(prefix="kernelgrade-cache-test-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@ROOT_ONLY
def test_uid_rung_cache_is_writable_by_the_child_user_and_unlisted(open_base):
    """At the uid rung (no bwrap: GPU children on the H100 host) the owner's cache is nobody's, mode 0700: nobody
    writes in it by its name, but can neither list the run's caches nor read the key that names them."""
    space = runspace.RunSpace.create(open_base)
    try:
        cache = compile_cache.prepare(space, compile_cache.owner("model-a", "softmax_topk"), None, containment.NOBODY)
        assert cache.stat().st_uid == containment.NOBODY and stat.S_IMODE(cache.stat().st_mode) == 0o700
        probe = (
            'touch "$1/kernel" && echo wrote || echo refused; ls "$2" >/dev/null 2>&1 && echo listed || echo refused; '
            'cat "$3" >/dev/null 2>&1 && echo read || echo refused'
        )
        targets = [str(cache), str(space.root / "compile"), str(space.root / "compile.key")]
        assert as_nobody(probe, *targets) == ["wrote", "refused", "refused"]
    finally:
        space.remove()


@ROOT_ONLY
def test_uid_rung_children_share_the_cache_as_nobody(open_base, monkeypatch):
    """The same with real children at the uid rung: they run as nobody and the owner's second child finds the first's
    kernel (skipped where nobody cannot run this interpreter, as on a machine whose Python lives under /root)."""
    monkeypatch.setenv("KERNELGRADE_CONTAINMENT", "uid")
    containment.probe.cache_clear()
    space = runspace.RunSpace.create(open_base)
    try:
        if containment.probe().level != "uid":
            pytest.skip("the user nobody cannot run this interpreter here: no uid rung on this machine")
        folder, who = submission(open_base, "model-a"), compile_cache.owner("model-a", "flash_attention")
        first, second = child_sees(folder, who, space), child_sees(folder, who, space)
        assert first["uid"] == containment.NOBODY and len(second["found"]) == 1, (first, second)
        assert Path(first["cache"]).stat().st_uid == containment.NOBODY
    finally:
        space.remove()
        containment.probe.cache_clear()


def test_across_runs_keyed_by_content(tmp_path):
    """Under --compile-cache a submission's next run finds its kernels; one byte changed, or another model's identical
    folder, finds none. The store is made 0700."""
    store = tmp_path / "store"
    limits = replace(LIMITS, compile_cache=store)
    folder, twin = submission(tmp_path, "model-a"), submission(tmp_path, "model-b")
    owner_a, owner_b = (
        compile_cache.owner("model-a", "flash_attention"),
        compile_cache.owner("model-b", "flash_attention"),
    )
    runs = []
    for change in ("", "", "# one byte more\n"):
        (folder / "impl.py").write_text(SEEN + change)
        space = runspace.RunSpace.create(tmp_path)
        space.copy_submissions([folder, twin])
        try:
            runs.append(child_sees(folder, owner_a, space, limits))
            if not change:
                runs.append(child_sees(twin, owner_b, space, limits))
            assert compile_cache.save(space) == []
        finally:
            space.remove()
    first, twin_first, second, twin_second, changed = runs
    assert first["found"] == [] and len(second["found"]) == 1, (first, second)
    assert twin_first["found"] == [] and len(twin_second["found"]) == 1, (twin_first, twin_second)
    assert changed["found"] == [], changed
    assert stat.S_IMODE(store.stat().st_mode) == 0o700 and len(os.listdir(store)) == 3


def test_without_the_option_nothing_outlives_the_run(tmp_path):
    """Without --compile-cache the kernels a run compiled are gone with the run's folder: nothing is saved."""
    space = runspace.RunSpace.create(tmp_path)
    folder = submission(tmp_path, "model-a")
    space.copy_submissions([folder])
    seen = child_sees(folder, compile_cache.owner("model-a", "flash_attention"), space)
    assert compile_cache.save(space) == []
    space.remove()
    assert not Path(seen["cache"]).exists()
    assert not [p for p in tmp_path.rglob("kernel-*")], "a compiled kernel outlived the run"


def test_an_overfull_cache_is_emptied_before_the_next_child(tmp_path, space, monkeypatch):
    """A cache over its caps (its own children filled it) starts empty for the owner's next child."""
    monkeypatch.setattr(compile_cache, "MAX_FILES", 1)
    folder, who = submission(tmp_path, "model-a"), compile_cache.owner("model-a", "flash_attention")
    child_sees(folder, who, space)
    child_sees(folder, who, space)
    assert child_sees(folder, who, space)["found"] == []


def test_speed_record_splits_out_the_first_calls_compile(monkeypatch):
    """The child's account of a timed case names ``compile``: the first warm-up call's excess over the later ones (a
    Triton kernel compiles at its first call), summed over the launches; a launch with nothing to compile adds 0.
    The clock is a fake one that each launch advances, so nothing here is timed."""
    from test_speed_paired import _FakeTorch

    from plugins.isolate.runtimes import cuda as cuda_loader

    clock = [0.0]
    first = {"triton"}

    def launch(label: str, cost: float, compile_s: float = 0.0):
        def run() -> None:
            clock[0] += cost + (compile_s if label in first else 0.0)
            first.discard(label)

        return run

    monkeypatch.setattr(cuda_loader, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    launches = {"submission": launch("submission", 0.25), "triton": launch("triton", 0.5, compile_s=4.0)}
    times = cuda_loader.time_launches(_FakeTorch(), launches, lambda: None)
    assert times["wall_compile"] == [4.0] and times["wall_warmup"] == [4.0 + 3 * 0.75]
