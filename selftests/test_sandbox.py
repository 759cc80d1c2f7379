"""Isolation: each failure a submission can have becomes its own named outcome, and none leaks into another run.

Each bad submission here stands for one failure (see the fixture's docstring); the sandbox is driven directly, as the
grading plugin drives it, with short limits.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import FIXTURES, REPO
from plugins.base.host import gpu_count
from plugins.isolate import plugin as plugin_module
from plugins.isolate import sandbox as sandbox_module
from plugins.isolate import wire
from plugins.isolate.runtimes import cuda as cuda_runtime
from plugins.isolate.sandbox import DEFAULT_PIPE_BYTES, Limits, Program, Sandbox, SandboxPool
from reference import flash_attention as fwd
from reference import ternary_training as ternary

CASE = next(c for c in fwd.CASES if c.id == "b1-h2-n40-d64-t64-causal")
LIMITS = Limits(call_timeout_s=3, memory_bytes=1 << 30, device="cpu")
# A direct, correct implementation; tests prepend lines to its body to make one behaviour bad.
CORRECT = """import numpy as np


def flash_attention_fwd(Q, K, V, tile_size, causal=True):
    #BODY
    s = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    if causal:
        s = np.where(np.tri(Q.shape[-2], dtype=bool), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ V
"""


def program(folder: Path, file: str = "impl.py") -> Program:
    return Program("reference.flash_attention", (("flash_attention_fwd", file),), folder)


def run_once(folder: Path, tile: int | None = None, limits: Limits = LIMITS):
    sandbox = Sandbox(program(folder), limits, REPO)
    try:
        inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
        params = dict(CASE.params) | ({"tile": tile} if tile else {})
        return sandbox.run(inputs, params, {})
    finally:
        sandbox.close()


def make(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "impl.py").write_text(source)
    return folder


@pytest.mark.parametrize(
    ("fixture", "status", "fragment"),
    [
        ("bad-timeout", "timeout", "no answer within 3 s"),
        ("bad-segfault", "crash", "SIGSEGV"),
        ("bad-memory", "oom", "MemoryError"),
        ("bad-raise", "error", "deliberate failure"),
        ("bad-exit", "crash", "status 3"),
    ],
)
def test_each_failure_has_its_own_outcome(fixture, status, fragment):
    outcome = run_once(FIXTURES / fixture / "flash_attention")
    assert outcome.status == status
    assert fragment in outcome.message + outcome.traceback


NEEDS_GPU = pytest.mark.skipif(not gpu_count(), reason="needs a GPU (run on the H200 device machine)")


def run_gpu_child(folder: Path, limits: Limits):
    """One layer-1 case of ternary training in the torch runtime, whose children are handed the GPU on GPU runs, with
    ``ternarize`` from ``folder/impl.py``; flash attention's children never get a GPU."""
    case = next(c for c in ternary.CASES if c.params.get("layer") == 1)
    sandbox = Sandbox(Program(ternary.__name__, (("ternarize", "impl.py"),), folder, "torch"), limits, REPO)
    try:
        return sandbox.run(ternary.make_inputs(case, np.random.default_rng(0)), dict(case.params), {})
    finally:
        sandbox.close()


def test_memory_cap_is_a_real_limit(tmp_path):
    """2 GiB fits in the machine's RAM but not under a 1 GiB cap (RLIMIT_AS; a NumPy child of a GPU run has it too)."""
    folder = make(tmp_path, "import numpy as np\ndef flash_attention_fwd(Q, K, V, t, c):\n    return np.ones(2**28)\n")
    for device, gpu in (("cpu", None), ("cuda", "0")):
        limits = Limits(call_timeout_s=30, memory_bytes=1 << 30, device=device, gpu=gpu)
        assert run_once(folder, limits=limits).status == "oom"


@NEEDS_GPU
def test_gpu_child_memory_cap_is_a_real_limit(tmp_path):
    """The same under RLIMIT_DATA, which GPU children get (the driver's virtual reservations break RLIMIT_AS)."""
    folder = make(tmp_path, "import numpy as np\ndef ternarize(w, g):\n    return np.ones(2**28), None\n")
    limits = Limits(call_timeout_s=60, memory_bytes=1 << 30, device="cuda", gpu="0")
    assert run_gpu_child(folder, limits).status == "oom"


@NEEDS_GPU
@pytest.mark.parametrize(("share", "fragment"), [(0.3, "RuntimeError: allocated"), (0.7, "OutOfMemoryError")])
def test_gpu_memory_fraction_caps_torch(tmp_path, share, fragment):
    """Under a 0.5 cap a GPU child may take 30% of the GPU but not 70%, though the card has room for either."""
    folder = make(
        tmp_path,
        "import torch\ndef ternarize(w, group):\n"
        f"    x = torch.empty(int(torch.cuda.mem_get_info()[1] * {share}), dtype=torch.uint8, device='cuda')\n"
        "    raise RuntimeError('allocated')\n",
    )
    limits = Limits(call_timeout_s=60, memory_bytes=16 << 30, device="cuda", gpu="0", gpu_memory_fraction=0.5)
    outcome = run_gpu_child(folder, limits)
    assert fragment in outcome.message, outcome.message + outcome.traceback


def test_exception_keeps_its_traceback():
    outcome = run_once(FIXTURES / "bad-raise" / "flash_attention")
    assert "RuntimeError: deliberate failure" in outcome.traceback and "impl.py" in outcome.traceback


def test_noisy_import_is_graded_and_output_truncated():
    """Printing, reading files and seeding at import do not stop a correct submission; output is kept, cut short."""
    outcome = run_once(FIXTURES / "bad-noisy" / "flash_attention")
    assert outcome.status == "ok" and outcome.outputs["O"].shape == (1, 2, 40, 64)
    assert "bytes cut" in outcome.stdout and len(outcome.stdout) < 2 * LIMITS.output_tail_chars


def test_crash_restarts_the_child_for_the_next_case(tmp_path):
    """After a segfault on one case, the same sandbox serves the next case from a fresh process."""
    folder = make(tmp_path, CORRECT.replace("#BODY", "if tile_size == 13:\n        __import__('ctypes').string_at(0)"))
    sandbox = Sandbox(program(folder), LIMITS, REPO)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    try:
        assert sandbox.run(inputs, dict(CASE.params) | {"tile": 13}, {}).status == "crash"
        assert sandbox.run(inputs, dict(CASE.params), {}).status == "ok"
    finally:
        sandbox.close()


def test_one_submission_cannot_touch_another(tmp_path):
    """A crash in one sandbox of a pool leaves another's process and results alone."""
    pool = SandboxPool(LIMITS, REPO)
    good = pool.get(program(FIXTURES / "bad-noisy" / "flash_attention"))
    bad = pool.get(program(FIXTURES / "bad-segfault" / "flash_attention"))
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    try:
        first = good.run(inputs, dict(CASE.params), {})
        pid = good.process.pid
        assert bad.run(inputs, dict(CASE.params), {}).status == "crash"
        second = good.run(inputs, dict(CASE.params), {})
        assert good.process.pid == pid and np.array_equal(first.outputs["O"], second.outputs["O"])
    finally:
        pool.close()


def test_a_pool_closes_the_children_it_drops_and_all_at_its_end(tmp_path):
    """Past ``keep`` children the least recently used one is closed (in the background, so the case that needed the
    place does not wait for it); ``close`` waits until every child is gone and its scratch folder removed."""
    pool = SandboxPool(LIMITS, REPO, keep=1)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    sandboxes = []
    try:
        for name in ("first", "second", "third"):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "impl.py").write_text(CORRECT)
            sandbox = pool.get(program(folder))
            assert sandbox.run(inputs, dict(CASE.params), {}).status == "ok"
            sandboxes.append((sandbox, sandbox.process, sandbox._scratch))
    finally:
        pool.close()
    for sandbox, process, scratch in sandboxes:
        assert sandbox.process is None and process.poll() is not None and not scratch.exists()


def test_timeout_kills_the_whole_process_group(tmp_path):
    """A submission that starts a helper process and hangs: after the timeout neither is left running."""
    marker = f"{time.time() % 1000:.6f}"  # sleep's argument: finds the helper in /proc whatever its pid namespace
    folder = make(
        tmp_path,
        f"import subprocess\ndef flash_attention_fwd(Q, K, V, t, c):\n"
        f"    subprocess.Popen(['sleep', '{marker}'])\n    while True:\n        pass\n",
    )
    assert run_once(folder).status == "timeout"
    time.sleep(0.2)
    assert not running_with(marker)


def running_with(marker: str) -> list[int]:
    """Live processes (not zombies) whose command line holds ``marker``."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(name))
    return found


def test_works_on_a_copy_of_the_folder(tmp_path):
    """Files a submission writes in its working directory land in the temporary copy, not the original."""
    folder = make(tmp_path, CORRECT.replace("#BODY", "open('scratch.txt', 'w').write('x')"))
    (folder / "notes.txt").write_text("notes")
    assert run_once(folder).status == "ok"
    assert not (folder / "scratch.txt").exists()


@pytest.mark.parametrize(
    "change",
    ["Q *= 2", "K.sort(axis=-1)", "V[0, 0, 3, 5], V[0, 0, 7, 1] = V[0, 0, 7, 1], V[0, 0, 3, 5]", "Q.flat[-1] += 1e-9"],
    ids=["scaled", "sorted", "two-swapped", "last-bit"],
)
def test_modifying_inputs_breaks_the_contract(tmp_path, change):
    """Every kind of in-place change is caught by the child's checksum: all of an input, its order, two elements
    swapped, the last element's low bits."""
    folder = make(tmp_path, f"def flash_attention_fwd(Q, K, V, t, c):\n    {change}\n    return V.copy()\n")
    outcome = run_once(folder)
    assert outcome.status == "error" and outcome.kind == "contract" and "modified its input" in outcome.message


def test_a_timed_pairs_pipes_are_widened_and_given_back(tmp_path):
    """``set_pipes`` changes the request and answer pipes of the running child and of any child started later; the
    default capacity comes back after (what ``plugin._timed`` does around a timed pair)."""
    sandbox = Sandbox(program(make(tmp_path, CORRECT.replace("#BODY", ""))), LIMITS, REPO)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    try:
        assert sandbox.run(inputs, dict(CASE.params), {}).status == "ok"

        def capacity() -> set[int]:
            return {fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) for fd in (sandbox._request, sandbox._response)}

        assert capacity() == {DEFAULT_PIPE_BYTES}
        sandbox.set_pipes(1 << 20)
        assert capacity() == {1 << 20}
        sandbox.close()  # a restart keeps the timed capacity
        assert sandbox.run(inputs, dict(CASE.params), {}).status == "ok" and capacity() == {1 << 20}
        sandbox.set_pipes(DEFAULT_PIPE_BYTES)
        assert capacity() == {DEFAULT_PIPE_BYTES}
    finally:
        sandbox.close()


def test_the_timed_block_widens_both_children_and_gives_back_even_on_failure():
    """``plugin._timed`` (around every timed CPU pair in ``_race``): both children's pipes at the timed capacity inside
    the block, the default after it, also when a trial raised; pinned only where the slot has cores."""

    class Child:
        def __init__(self):
            self.calls: list[tuple[str, Any]] = []

        def set_pipes(self, size: int) -> None:
            self.calls.append(("pipes", size))

        def pin(self, cores: set[int] | None) -> None:
            self.calls.append(("pin", cores))

    children = [Child(), Child()]
    with pytest.raises(RuntimeError), plugin_module._timed(children, None, 1 << 20):
        assert all(c.calls == [("pipes", 1 << 20)] for c in children)
        raise RuntimeError("a trial failed")
    assert all(c.calls == [("pipes", 1 << 20), ("pipes", DEFAULT_PIPE_BYTES)] for c in children)
    children = [Child(), Child()]
    with plugin_module._timed(children, {2, 3}, 1 << 19):
        pass
    expected = [("pipes", 1 << 19), ("pin", {2, 3}), ("pipes", DEFAULT_PIPE_BYTES), ("pin", None)]
    assert all(c.calls == expected for c in children)


@pytest.mark.parametrize(
    ("euid", "soft_pages", "pairs", "expected"),
    [
        (0, 16384, 64, 1 << 20),  # root: not charged
        (1000, 16384, 8, 1 << 20),  # 64 MiB soft limit, 8 pairs: 32 MiB / 32 pipes
        (1000, 16384, 9, 512 << 10),  # 32 MiB / 36 pipes: the power of two below
        (1000, 16384, 300, 64 << 10),  # never below the default
        (1000, 0, 300, 1 << 20),  # no soft limit
    ],
)
def test_timed_pipes_stay_within_half_the_users_soft_limit(monkeypatch, tmp_path, euid, soft_pages, pairs, expected):
    limit = tmp_path / "pipe-user-pages-soft"
    limit.write_text(f"{soft_pages}\n")
    monkeypatch.setattr(sandbox_module, "_PIPE_SOFT_LIMIT", limit)
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: euid)
    monkeypatch.setattr(sandbox_module.os, "sysconf", lambda name: 4096)
    assert sandbox_module.timed_pipe_bytes(pairs) == expected


@pytest.mark.parametrize(
    ("source", "status"), [("def flash_attention_fwd(:\n", "error"), ("while True:\n    pass\n", "timeout")]
)
def test_import_failures_and_hangs(tmp_path, source, status):
    """A module that does not import, or never finishes importing, fails every case of it at once: the second case
    gets the same outcome without another import (and without waiting out another timeout)."""
    sandbox = Sandbox(program(make(tmp_path, source)), LIMITS, REPO)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    try:
        first = sandbox.run(inputs, dict(CASE.params), {})
        start = time.monotonic()
        second = sandbox.run(inputs, dict(CASE.params), {})
        assert time.monotonic() - start < 1.0 and sandbox.process is None
    finally:
        sandbox.close()
    assert first.status == second.status == status and "while importing" in first.message


def test_wire_refuses_non_numeric_arrays():
    """Object arrays (which would need pickle) are refused by the reader."""
    read, write = os.pipe()
    try:
        wire.write_all(write, wire.encode({}, {"x": np.array([object()], dtype=object)}))
        with pytest.raises(wire.WireError):
            wire.recv(read)
    finally:
        os.close(read)
        os.close(write)


def test_child_environment_caps_threads_and_hides_gpus(tmp_path):
    """BLAS and OpenMP run single-threaded in the child, and a CPU run sees no GPU."""
    folder = make(
        tmp_path,
        CORRECT.replace(
            "#BODY",
            "import os\n    assert os.environ['OMP_NUM_THREADS'] == os.environ['OPENBLAS_NUM_THREADS'] == '1'\n"
            "    assert os.environ['CUDA_VISIBLE_DEVICES'] == ''",
        ),
    )
    outcome = run_once(folder)
    assert outcome.status == "ok", outcome.traceback


def test_a_child_started_ahead_answers_the_first_request_without_a_start(tmp_path):
    """``start_ahead`` (a speed case, before it waits for the phase and takes its slot) starts the child once, counted
    in ``start_seconds``; the first request then finds it running. An import that fails is kept for that request."""
    sandbox = Sandbox(program(make(tmp_path, CORRECT)), LIMITS, REPO)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    try:
        sandbox.start_ahead()
        started, pid = sandbox.start_seconds, sandbox.process.pid
        sandbox.start_ahead()  # already running: nothing
        assert started > 0 and sandbox.process.pid == pid
        assert sandbox.run(inputs, dict(CASE.params), {}).status == "ok"
        assert sandbox.start_seconds == started and sandbox.process.pid == pid
    finally:
        sandbox.close()
    (tmp_path / "b").mkdir()
    broken = Sandbox(program(make(tmp_path / "b", "def flash_attention_fwd(:\n")), LIMITS, REPO)
    try:
        broken.start_ahead()
        outcome = broken.run(inputs, dict(CASE.params), {})
        assert outcome.status == "error" and "while importing" in outcome.message
    finally:
        broken.close()


@pytest.mark.parametrize(
    ("message", "restarted"),
    [
        (cuda_runtime.refusal("softmax_topk", 1), False),  # the CUDA runtime's own error for a launch that refused
        ("CUDA error: an illegal memory access was encountered", True),
        ("RuntimeError: CUDA error: device-side assert triggered", True),
    ],
)
def test_only_a_device_fault_restarts_the_child(tmp_path, message, restarted):
    """An error naming a device fault ends the child (its CUDA context is unusable); any other error, the CUDA
    runtime's refusal of a launch included, keeps it for the next case (a restart of a GPU child costs seconds)."""
    body = f"if tile_size == 13:\n        raise RuntimeError({message!r})"
    sandbox = Sandbox(program(make(tmp_path, CORRECT.replace("#BODY", body))), LIMITS, REPO)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    try:
        assert sandbox.run(inputs, dict(CASE.params), {}).status == "ok"
        first = sandbox.process.pid
        assert sandbox.run(inputs, dict(CASE.params) | {"tile": 13}, {}).status == "error"
        assert (sandbox.process is None) is restarted
        assert sandbox.run(inputs, dict(CASE.params), {}).status == "ok"
        assert (sandbox.process.pid != first) is restarted
    finally:
        sandbox.close()
