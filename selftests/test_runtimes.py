"""Runtimes as objects (plugins/isolate/runtimes/): which one a folder gets, what each needs, and the triton runtime's
child loader (torch CUDA tensors in, NumPy out, inputs guarded), the last on a GPU only."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from plugins.base.host import gpu_count
from plugins.grade import rubric
from plugins.isolate import child, runtimes
from reference.challenges import all_challenges
from reference.contract import Challenge, ContractError

needs_gpu = pytest.mark.skipif(not gpu_count(), reason="needs a GPU (run on the device machine)")
RUNTIMES_DIR = Path(runtimes.__file__).resolve().parent
EITHER = Challenge("either", "CUDA or Triton", ("either",), ("f",), runtimes=("cuda", "triton"))


def test_every_contract_names_known_runtimes():
    """A contract naming a runtime the grader lacks would fail at discovery; the loader file of each one exists."""
    for challenge in all_challenges():
        assert challenge.runtimes and all(name in runtimes.RUNTIMES for name in challenge.runtimes), challenge.id
    for rt in runtimes.RUNTIMES.values():
        assert (RUNTIMES_DIR / f"{rt.loader}.py").is_file(), rt.name


@pytest.mark.parametrize(
    ("files", "want"),
    [
        ({"kernel.cu": "", "notes.py": ""}, "cuda"),  # CUDA first in the contract's order
        ({"kernel.py": ""}, "triton"),
        ({"sub/deep/kernel.py": ""}, "triton"),
        ({"adapter.py": "", "old/kernel.cu": ""}, "triton"),  # an adapter at the top decides
        ({".hidden/kernel.cu": "", "k.py": ""}, "triton"),  # hidden folders are not code
        ({"PROMPT.md": ""}, "cuda"),  # no code: the first runtime, which then names the files it lacks
    ],
)
def test_a_folder_gets_the_first_runtime_whose_files_it_holds(tmp_path, files, want):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert runtimes.for_folder(EITHER, tmp_path).name == want


def test_a_single_runtime_challenge_needs_no_look_at_the_folder(tmp_path):
    only_python = Challenge("p", "P", ("p",), ("f",))
    (tmp_path / "kernel.cu").write_text("")
    assert runtimes.for_folder(only_python, tmp_path) is runtimes.PYTHON


def test_skip_reasons_follow_the_runtime():
    """No GPU skips a GPU runtime's run cases and keeps its build case; no nvcc skips everything of a build; a package
    the runtime needs and the machine lacks is named."""
    assert runtimes.PYTHON.skip_reason(False, False, False) is None
    assert runtimes.CUDA.skip_reason(False, True, True) is None  # the build case, graded without a GPU
    assert runtimes.CUDA.skip_reason(False, True, False).startswith("no GPU: this CUDA case")
    assert runtimes.CUDA.skip_reason(True, False, True).startswith("no nvcc")
    lacking = runtimes.Runtime("x", "X", ".x", "adapter.x", "python", "python", packages=("no_such_package_kg",))
    assert lacking.skip_reason(True, True, False).startswith("no_such_package_kg not installed")
    cuda_without_torch = replace(runtimes.CUDA, packages=("no_such_package_kg",))
    assert cuda_without_torch.skip_reason(False, True, True) is None  # a build needs nvcc, not the run's packages
    assert runtimes.case_skip(runtimes.TRITON, True, True, True).startswith("no build step")


def test_typed_arrays_carry_bit_patterns_only():
    """``run.typed`` takes the carrier dtype alone: a float32 array handed as bfloat16 would be read as garbage."""
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)  # 1.0 and -2.0 in bfloat16
    typed = child.Typed(bits, "bfloat16")
    assert typed.array is bits and typed.dtype == "bfloat16" and child._digest(typed) == child._digest(bits)
    with pytest.raises(TypeError):
        child.Typed(bits.astype(np.float32), "bfloat16")
    with pytest.raises(TypeError):
        child.Typed(bits, "float8")


def _loader(name: str):
    spec = importlib.util.spec_from_file_location(f"_test_loader_{name}", RUNTIMES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_gpu
def test_triton_runtime_hands_tensors_and_guards_inputs():
    """Arrays arrive as CUDA tensors of their shape and dtype (bfloat16 from its bits), results leave as NumPy
    (bfloat16 as float32), a write into an input is a broken contract, and ``:timed`` times the last call."""
    import torch

    triton_loader = _loader("triton")
    cuda = triton_loader._sibling("cuda")
    driver = SimpleNamespace(ContractError=ContractError)

    def twice(x, y, scale):
        assert x.is_cuda and x.dtype == torch.bfloat16 and y.dtype == torch.float16 and x.shape == (2, 3)
        return (x.float() * scale).to(torch.bfloat16), y * 2

    wrapped = triton_loader.TensorFunction("twice", twice, torch, driver, cuda)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # exact: small integers are bfloat16 values
    y = np.ones(4, dtype=np.float16)
    got_x, got_y = wrapped(child.Typed(bits, "bfloat16"), y, 2.0)
    assert got_x.dtype == np.float32 and np.array_equal(got_x, 2 * x)
    assert got_y.dtype == np.float16 and np.array_equal(got_y, 2 * y)
    times = wrapped.timed()
    assert len(times["submission"]) == cuda.TRIALS and len(times["copy"]) == cuda.TRIALS

    def scribbles(x):
        x.add_(1)
        return x

    with pytest.raises(ContractError, match="modified its input"):
        triton_loader.TensorFunction("scribbles", scribbles, torch, driver, cuda)(y)


class _CpuEvent:
    """A CUDA event stand-in for the CPU test below: every timed call reads 1 ms (nothing here is a timing)."""

    def __init__(self, **_: object):
        pass

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, _: object) -> float:
        return 1.0


def test_triton_runtime_logic_on_cpu_torch(monkeypatch):
    """Without a GPU: the triton runtime's conversions, guards and timer on CPU tensors (torch's device calls patched
    to the CPU), so CI checks the loader's own logic; the GPU test above checks it on the device."""
    torch = pytest.importorskip("torch")
    randint, empty = torch.randint, torch.empty
    monkeypatch.setattr(torch, "randint", lambda *a, device=None, **k: randint(*a, **k))
    monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: empty(*a, **k))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "Event", _CpuEvent)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: SimpleNamespace(L2_cache_size=1 << 20))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    triton_loader = _loader("triton")
    cuda = triton_loader._sibling("cuda")
    driver = SimpleNamespace(ContractError=ContractError)

    def twice(x, y, scale):
        assert x.dtype == torch.bfloat16 and y.dtype == torch.float16 and x.shape == (2, 3)
        return (x.float() * scale).to(torch.bfloat16), y * 2

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    wrapped = triton_loader.TensorFunction("twice", twice, torch, driver, cuda)
    got_x, got_y = wrapped(child.Typed(bits, "bfloat16"), np.ones(4, dtype=np.float16), 2.0)
    assert got_x.dtype == np.float32 and np.array_equal(got_x, 2 * x) and got_y.dtype == np.float16
    assert {"submission", "copy"} <= set(wrapped.timed())

    def scribbles(y):
        return y.add_(1)

    with pytest.raises(ContractError, match="modified its input"):
        triton_loader.TensorFunction("scribbles", scribbles, torch, driver, cuda)(np.ones(4, dtype=np.float16))
    typed = cuda.Guarded(torch, child.Typed(bits, "bfloat16"), "in").typed()  # the CUDA runtime's view of it
    assert typed.dtype == torch.bfloat16 and typed.shape == (2, 3)


def test_the_read_once_floor_is_recomputed_by_the_grader():
    """A GPU speed case's floor check comes from the raw times and the grader's own sizes (``read_once_check``),
    judged as a case is: a child that reports a flattering ``floor_over_time`` of its own is overruled, and one that
    sends that figure without the times it is derived from fails the check as missing (before, its word stood)."""
    from dataclasses import replace as changed

    from plugins.base.records import Outcome
    from plugins.compare.judge import judge
    from plugins.discover.submissions import Submission
    from reference import paged_attention_decode as pa

    speed = next(c for c in pa.CASES if c.is_speed)
    small = changed(speed, params={**speed.params, "context_lens": [32, 32], "num_heads": 8, "num_kv_heads": 2})
    inputs = pa.make_inputs(small, np.random.default_rng(0))
    expected = pa.expected(small, inputs)
    submission = Submission("m", "paged_attention_decode", Path("m"), (), (), False, ())
    answer = {"out": expected.values["out"].astype(np.float32), "floor_over_time": np.asarray(0.1)}

    def judged(outputs):
        record = judge(submission, small, pa.CASES.index(speed), expected, Outcome("ok", outputs=outputs))
        return record, {c["name"]: c for c in record.checks}["floor_over_time"]

    honest, _ = judged(answer | {"time_copy": np.full(5, 1e-4), "time_submission": np.full(5, 1e-3)})
    assert honest.outcome == "passed", honest.message  # the floor is a tenth of the measured time: plausible
    faster_than_reading, check = judged(answer | {"time_copy": np.full(5, 2e-3), "time_submission": np.full(5, 1e-4)})
    read, copied = pa.read_bytes(small.params), inputs["k_cache"].nbytes
    assert faster_than_reading.outcome == "wrong" and not check["passed"]  # the child's 0.1 did not stand
    assert check["bound_ratio"] * pa.FLOOR_SLACK == pytest.approx(read * 2e-3 / (2 * copied) / 1e-4)
    no_times, check = judged(answer)
    assert no_times.outcome == "wrong" and not check["passed"], check


def test_a_submission_that_cannot_run_here_is_listed_with_the_reason(grade):
    """A Triton kernel on a machine without a GPU skips every case: the reports still list it, as ``skipped here`` with
    the machine's reason, left out of the ranking's score and coverage like a CUDA source only built here (before,
    skipped tests left no record and the submission vanished from every table)."""
    run = grade("--device=cpu", "--no-speed", "--model", "demo-triton", tests="tests/test_paged_attention")
    assert run.returncode == 0, run.output[-3000:]
    assert run.summary["status"] == "complete", run.summary["status_detail"]  # skipped here is not "did not run"
    paged = run.summary["models"]["demo-triton"]["challenges"]["paged_attention_decode"]
    assert paged["letter"] == rubric.SKIPPED_HERE
    assert paged["notes"][0].startswith("skipped here: no GPU"), paged["notes"]  # the run cases' reason leads
    row = next(r for r in run.summary["ranking"] if r["model"] == "demo-triton")
    assert row["rank"] is None and row["skipped_here"] == 1 and row["coverage"] == "0 of 0"
    records = [c for c in run.summary["cases"] if c["model"] == "demo-triton"]
    assert records and all(c["outcome"] == "skipped" and c["message"] for c in records)
    markdown = (run.reports / "grades.md").read_text()
    assert "demo-triton" in markdown and "(+1 skipped here)" in markdown
    rows = [line.split("|") for line in markdown.splitlines() if line.startswith("| demo-triton")]
    breakdown = next(cells for cells in rows if cells[2].strip() == "skipped here")  # model, grade, points, …
    assert breakdown[3].strip() == "—"  # no points where nothing ran (before: 0.0, as if it had scored nothing)
    assert "passed for every model" not in markdown  # nothing ran, so nothing is said to have passed


def test_a_runtime_timed_on_the_device_must_need_the_gpu():
    """``timing="device"`` routes a runtime's cases to the GPU cases (CUDA events in the child): one that says so
    without needing the GPU is refused where it is defined, not found out on a machine without one."""
    with pytest.raises(ValueError, match="does not need the GPU"):
        runtimes.Runtime("x", "X", ".py", "adapter.py", "python", "python", timing="device")
    assert all(rt.needs_gpu for rt in runtimes.RUNTIMES.values() if rt.timing == "device")
