"""The GPU rung (plugins/isolate/gpu_rung.py), on the CPU machine: the CUDA probe is replaced by one that answers as a
host would, so the ladder, the children it starts and the facts it reports are the real ones.

``fake_cuda`` answers as the H200 host did before the GPU binds (CUDA starts outside bwrap only), or as a host where it
starts only without a user namespace; the children then show from inside where they run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO
from plugins.compare.judge import judge
from plugins.discover.submissions import Submission
from plugins.isolate import containment, gpu_rung, runspace
from plugins.isolate.sandbox import Limits, Program, Sandbox
from plugins.isolate.sandbox_report import SandboxReport
from plugins.isolate.truths import TruthStore
from reference import flash_attention as fwd
from reference import ternary_training as ternary

pytestmark = pytest.mark.skipif(
    containment.probe().level != "namespaces", reason="needs bwrap with namespaces (apt-get install bubblewrap)"
)
ADVERSARIAL = Path(__file__).resolve().parent / "fixtures" / "adversarial"
GPU_LIMITS = Limits(call_timeout_s=20, memory_bytes=2 << 30, device="cuda", gpu="0")
CASE = next(c for c in fwd.CASES if c.id == "b1-h2-n40-d64-t64-causal")
TERNARY_CASE = next(c for c in ternary.CASES if c.params.get("layer") == 1)
# Raised from inside a child: where it runs (its parent is bwrap's init in a PID namespace of its own), its user
# namespace's uid map, the GPU it was given, and whether it sees the real run folder (the one with the manifest).
WHERE = (
    "import json, os\n"
    "def where():\n"
    "    root = os.getcwd().rsplit('/sandboxes/', 1)[0]\n"
    "    raise RuntimeError('WHERE' + json.dumps({'ppid': os.getppid(), 'uid': os.getuid(),\n"
    "        'uid_map': ' '.join(open('/proc/self/uid_map').read().split()),\n"
    "        'gpu': os.environ.get('CUDA_VISIBLE_DEVICES'), 'run_folder': os.path.exists(root + '/manifest.json')}))\n"
)


def fake_cuda(monkeypatch: pytest.MonkeyPatch, starts_in: set[str]) -> list[str]:
    """CUDA starts on the host and in the rungs named (``gpu_rung.RUNGS``), nowhere else; returns the rungs probed."""
    probed: list[str] = []

    def cuda_starts(level, userns, nobody, group, repo, gpu) -> str:
        rung = gpu_rung.GpuMode(userns, False, nobody=nobody).rung
        host = userns is None and not nobody and group is None and not probed
        probed.append("host" if host else rung)
        return "" if host or rung in starts_in else "CUDA error 304 (CUDA_ERROR_OPERATING_SYSTEM)"

    monkeypatch.setattr(gpu_rung, "_cuda_starts", cuda_starts)
    gpu_rung.gpu_mode.cache_clear()
    return probed


@pytest.fixture
def space(tmp_path: Path):
    made = runspace.RunSpace.create(tmp_path)
    yield made
    made.remove()
    gpu_rung.gpu_mode.cache_clear()


def where(
    folder: Path, driver: str, entry: str, case, space: runspace.RunSpace, runtime: str = "python"
) -> tuple[dict, Sandbox]:
    """Where a child of ``driver`` in ``runtime`` runs and what it sees (the torch runtime is handed the GPU)."""
    (folder / "impl.py").write_text(WHERE + f"{entry} = lambda *args: where()\n")
    sandbox = Sandbox(Program(driver, ((entry, "impl.py"),), folder, runtime), GPU_LIMITS, REPO, space)
    try:
        reference = ternary if driver == ternary.__name__ else fwd
        outcome = sandbox.run(reference.make_inputs(case, np.random.default_rng(0)), dict(case.params), {})
    finally:
        sandbox.close()
    return json.loads(outcome.traceback.rpartition("WHERE")[2]), sandbox


def test_only_gpu_runtimes_and_gpu_child_submissions_are_handed_the_gpu(tmp_path):
    """CUDA builds, Triton/torch functions and ternary submissions get the GPU; NumPy challenges and every reference
    baseline do not."""
    assert gpu_rung.needs_gpu(Program("reference.softmax_topk", (), tmp_path, "cuda"))
    assert gpu_rung.needs_gpu(Program("reference.softmax_topk", (), tmp_path, "triton"))
    assert gpu_rung.needs_gpu(Program("reference.ternary_training", (), tmp_path, "torch"))
    assert not gpu_rung.needs_gpu(Program("reference.ternary_training", (), tmp_path))  # a NumPy submission
    assert not gpu_rung.needs_gpu(Program("reference.ternary_training", (), None))  # its reference baseline is NumPy
    numpy_ones = ("flash_attention", "kv_cache", "beam_search")
    assert not any(gpu_rung.needs_gpu(Program(f"reference.{c}", (), tmp_path)) for c in numpy_ones)


def test_numpy_child_on_a_gpu_run_gets_the_cpu_sandbox(tmp_path, monkeypatch, space):
    """Where CUDA starts only outside bwrap (the H200 before the binds), a NumPy child of a GPU run still runs in the
    full sandbox and sees no GPU; no CUDA probe is even made for it."""
    probed = fake_cuda(monkeypatch, {"uid", "process-group"})
    (tmp_path / "sub").mkdir()
    seen, sandbox = where(tmp_path / "sub", fwd.__name__, "flash_attention_fwd", CASE, space)
    assert seen == {"ppid": 1, "uid": 0, "uid_map": "0 0 1", "gpu": "", "run_folder": False}, seen
    assert not sandbox.gpu and sandbox.rung == "namespaces" and probed == []


def test_gpu_child_falls_back_only_as_far_as_cuda_needs(tmp_path, monkeypatch, space):
    """Where CUDA starts only without a user namespace, a GPU child gets bwrap without one: its own PID namespace,
    the run folder hidden, its GPU visible; the facts name the rung and why the stronger one failed."""
    fake_cuda(monkeypatch, {"namespaces-without-userns"})
    (tmp_path / "sub").mkdir()
    seen, sandbox = where(tmp_path / "sub", ternary.__name__, "ternarize", TERNARY_CASE, space, "torch")
    assert seen == {"ppid": 1, "uid": 0, "uid_map": "0 0 4294967295", "gpu": "0", "run_folder": False}, seen
    facts = SandboxReport(space, [], SimpleNamespace(device="cuda", on_gpu=True, gpu="0", repo=REPO)).summary()
    assert facts["gpu"]["rung"] == sandbox.rung == "namespaces-without-userns"
    cgroups = space.cgroup_parent(containment.probe()) is not None
    rungs = ["namespaces", "namespaces without a cgroup"] if cgroups else ["namespaces"]
    assert facts["gpu"]["tried"] == [f"{r}: CUDA error 304 (CUDA_ERROR_OPERATING_SYSTEM)" for r in rungs]
    assert "--ro-bind /sys/devices" in facts["gpu"]["binds"]  # what CUDA reads in /sys, bound by name
    assert any("without a user namespace" in w for w in facts["warnings"])


def test_no_contained_rung_keeps_the_gpu_child_in_the_sandbox(tmp_path, monkeypatch, space):
    """Where CUDA starts in no contained rung, the GPU child is never run as the grader's own user: it stays in the
    full sandbox (its GPU work then fails) and the facts list every rung tried, with a warning."""
    probed = fake_cuda(monkeypatch, {"process-group"})
    (tmp_path / "sub").mkdir()
    seen, _ = where(tmp_path / "sub", ternary.__name__, "ternarize", TERNARY_CASE, space, "torch")
    assert seen["ppid"] == 1 and seen["uid_map"] == "0 0 1" and not seen["run_folder"], seen
    assert "process-group" not in probed
    facts = SandboxReport(space, [], SimpleNamespace(device="cuda", on_gpu=True, gpu="0", repo=REPO)).summary()
    assert facts["gpu"]["rung"] == "namespaces" and len(facts["gpu"]["tried"]) == len(probed) - 1
    assert any("CUDA starts in no contained rung" in w for w in facts["warnings"])


def test_the_rung_is_probed_once_per_run(tmp_path, monkeypatch, space):
    """The run's first GPU child probes and records the rung; another process of the run reads it (no probe)."""
    probed = fake_cuda(monkeypatch, {"namespaces"})
    (tmp_path / "sub").mkdir()
    where(tmp_path / "sub", ternary.__name__, "ternarize", TERNARY_CASE, space, "torch")
    assert probed == ["host", "namespaces"]
    gpu_rung.gpu_mode.cache_clear()  # as a fresh xdist worker of the same run
    level = containment.probe()
    mode = gpu_rung.gpu_mode(level, space.cgroup_parent(level), REPO, "1", gpu_rung.record_path(space.root))
    assert mode.rung == "namespaces" and mode.warning is None and probed == ["host", "namespaces"]


def test_planted_truths_never_run_in_the_grader(tmp_path, monkeypatch, space):
    """truth-planter, a NumPy child of a GPU run where CUDA starts only outside bwrap, plants pickles under the names
    of the run's truths; the control's case is then judged on a truth computed by the grader: it passes, and no
    payload ran."""
    fake_cuda(monkeypatch, {"uid", "process-group"})
    store = TruthStore(space.root / "truths")
    attack = ADVERSARIAL / "truth-planter" / "flash_attention"
    control = tmp_path / "control"
    shutil.copytree(REPO / "submissions" / "demo-tiled" / "flash_attention", control)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    outcomes = {}
    for name, folder, file in (("attack", attack, "impl.py"), ("control", control, "flash_attention.py")):
        sandbox = Sandbox(Program(fwd.__name__, (("flash_attention_fwd", file),), folder), GPU_LIMITS, REPO, space)
        try:
            outcomes[name] = sandbox.run(inputs, dict(CASE.params), {})
        finally:
            sandbox.close()
    truth = store.get(("flash_attention", CASE.id, 0), lambda: fwd.expected(CASE, inputs))
    entries = (("flash_attention_fwd", "flash_attention.py"),)
    submission = Submission("control", "flash_attention", control, entries, (), False, ())
    assert judge(submission, CASE, 0, truth, outcomes["control"]).outcome == "passed"
    assert not (space.root / "payload-ran").exists()
    assert outcomes["attack"].status == "ok" and not list((space.root / "truths").glob("*.pkl"))
