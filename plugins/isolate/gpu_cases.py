"""Cases of submissions whose runtime runs on the GPU (``plugins/isolate/runtimes/``: CUDA C++, Triton/torch): build
where the runtime has a build, then run in the sandbox on the GPU, or skip without one.

A CUDA source is built once (``build.py``: nvcc contained like the submission's code, on the run's private copy of the
folder, cached); a source that does not build gets the outcome ``build`` on every case, with the compiler's first
errors. A challenge's ``build`` case grades the build alone, so a machine with nvcc and no GPU (CI) still gives every
CUDA submission a verdict; its run cases are skipped "no GPU". A runtime without a build (Triton compiles at the first
call) skips the build case. Run cases load the submission in the sandbox child (``runtimes/cuda.py``,
``runtimes/triton.py``). Speed cases are timed inside the child on the device (CUDA events, L2 flushed, fixed trials),
against the contract's ``speed_baselines`` and the read-once floor (``read_bytes`` at the copy bandwidth of the run).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from plugins.base import records as r
from plugins.base.wording import markdown_table as table
from plugins.compare import paired
from plugins.compare.judge import judge, unrunnable
from plugins.config import GraderConfig
from plugins.discover.submissions import Submission
from plugins.isolate import compile_cache, runspace, runtimes
from plugins.isolate.build import BuildResult, build, nvcc_path
from plugins.isolate.runtimes.cuda import FAULT_PREFIX, TRIALS
from plugins.isolate.sandbox import Program, Sandbox
from reference.challenges import all_challenges, reference_module
from reference.contract import Case, copied_bytes, read_once_floor


def device_timed(submission: Submission) -> bool:
    """Whether this module runs the submission's cases: its runtime times speed cases on the device, in the child
    (``Runtime.timing``), rather than against the reference's own child."""
    return runtimes.runtime(submission.runtime).timing == "device"


def skip_reason(submission: Submission, case: Case, cfg: GraderConfig) -> str | None:
    """Why a case is not run here, or None, for any runtime (``runtimes.case_skip``): no nvcc skips every case of a
    build, a missing package (MLX) or no GPU the run cases, and a runtime without a build the build case."""
    rt = runtimes.runtime(submission.runtime)
    return runtimes.case_skip(rt, bool(case.params.get("build")), cfg.on_gpu, nvcc_path() is not None)


@functools.cache
def built(folder: Path, source: str, exports: tuple[str, ...], space: runspace.RunSpace) -> BuildResult:
    """One build per submission per process (the disk cache then shares it between processes and runs), from the
    run's private copy of ``folder``: the build never reads the original folder."""
    entry = space.manifest().get(str(folder))
    if not entry or not entry.get("copy"):
        notes = "; ".join(entry["notes"]) if entry else "the folder was not copied before the run"
        return BuildResult(False, None, f"no private copy of the folder to build from ({notes})", "", "", False)
    return build(Path(entry["copy"]), source, exports, space=space)


def run_gpu_case(
    runner: Any, reference: ModuleType, submission: Submission, case: Case, index: int, lock: Callable[[], Any]
) -> r.CaseRecord:
    """Build where the runtime has a build, then judge one case: the build case on the build alone, run cases in the
    sandbox on the GPU."""
    rt = runtimes.runtime(submission.runtime)
    if rt.build:
        program = _built_program(runner, reference, submission, case, index)
        if isinstance(program, r.CaseRecord):
            return program
    else:
        program = Program(reference.__name__, submission.entries, submission.folder, rt.name, _cache(submission))
    if case.is_speed and (refused := runner.not_timed(submission, case, index, ended=True)):
        return refused
    inputs, expected = runner.truth(reference, case, settings=submission.challenge_task.settings_tag)
    sandbox = runner.pool.get(program)
    if case.is_speed and (refused := runner.speed_phase(submission, case, index, [sandbox], on_device=True)):
        return refused
    if case.is_speed:
        warm_up(runner, reference, case, sandbox)
    with lock() if case.is_speed else contextlib.nullcontext():  # one timed case at a time on this machine
        outcome = sandbox.run(inputs, dict(case.params), {})
    graded = judge(submission, case, index, expected, outcome)
    if graded.outcome == r.CRASH:
        graded.message = fault_message(graded)
    if case.is_speed and graded.passed:
        graded.speed = speed_figures(reference, outcome.outputs, case, inputs)
    return graded


def warm_up(runner: Any, reference: ModuleType, case: Case, sandbox: Sandbox) -> None:
    """The speed request once, untimed, on fresh inputs, before the timed one takes the GPU's slot: the first calls
    of every launch it times compile there (the submission's Triton kernels, the grader's Triton baseline) and load
    torch's kernels. In the slot they took 1.3 to 5.8 s of each case's 1.4 to 6.0 s (H100 host, 2026-12-07), so GPU
    cases queued for compiles. It holds the slot shared (``CaseRunner.warm_up_lock``): warm-ups run beside each
    other, never beside a timed case. Its outcome decides nothing (the timed request is judged on its own); a child
    that died in it is started again by the timed request, as before."""
    began = time.perf_counter()
    inputs = runner.warm_up_inputs(reference, case)
    with runner.warm_up_lock() as cores:
        if cores is not None:
            sandbox.pin(cores)
        try:
            sandbox.run(inputs, dict(case.params), {})
        finally:
            if cores is not None:
                sandbox.pin(None)
    runner.parts["warm_s"] = time.perf_counter() - began


def _built_program(
    runner: Any, reference: ModuleType, submission: Submission, case: Case, index: int
) -> Program | r.CaseRecord:
    """The child's program once the source built (its folder is the build's: the library and its log, no source), or
    the case's record when the build decides it (a failed build; the build case, graded on the build alone)."""

    def record(outcome: str, message: str) -> r.CaseRecord:
        return unrunnable(submission, case, index, message, outcome)

    sources = {file for _, file in submission.entries}
    if len(sources) != 1:
        return record(r.ERROR, f"entry points are defined in several .cu files ({', '.join(sorted(sources))}): "
                      "the grader builds one translation unit; add an adapter.cu that includes them")  # fmt: skip
    exports = tuple(name for name, _ in submission.entries)
    began = time.perf_counter()
    result = built(submission.folder, sources.pop(), exports, runner.pool.space)
    runner.parts["build_s"] = time.perf_counter() - began  # nvcc, or a look in the build cache
    if not result.ok:
        return record(r.BUILD, result.message)
    if case.params.get("build"):
        return record(r.PASSED, result.message)
    entries = tuple((n, result.library.name) for n, _ in submission.entries)
    return Program(reference.__name__, entries, result.library.parent, submission.runtime, _cache(submission))


def _cache(submission: Submission) -> str:
    """Whose compile cache the submission's children share (the Triton kernels, the driver's JIT): its own alone."""
    return compile_cache.owner(submission.model, submission.challenge)


def missing_message(submission: Submission) -> str:
    """Why an entry point of a CUDA source was not found (a Python runtime's missing entry needs no more words)."""
    if runtimes.runtime(submission.runtime).entries_by != "extern-c":
        return ""
    if any(file == "." for file, _ in submission.problems):
        return "no CUDA source (.cu file) in the folder"
    names = ", ".join(submission.missing)
    return f'no .cu file defines extern "C" {names}(...): define it exactly as the contract says, or add an adapter.cu'


def fault_message(record: r.CaseRecord) -> str:
    """A crash with the CUDA error the child reported before exiting (its stderr), when there is one."""
    lines = [line for line in record.stderr.splitlines() if line.startswith(FAULT_PREFIX)]
    if not lines:
        return record.message
    return f"CUDA fault: {lines[-1][len(FAULT_PREFIX) :]} (the next case runs in a fresh process)"


def speed_figures(
    reference: ModuleType, outputs: dict[str, np.ndarray], case: Case, inputs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Median and spread of the kernel time; the credited ``ratio`` to the contract's torch baseline as the median of
    per-trial ratios with its interval (``paired.figures``: the child times both in each trial), the read-once floor
    (the bytes the case must read, ``read_bytes``, at the copy bandwidth of the same run: the child copies its largest
    input, which reads and writes each byte once), and the child's own account of its wall time (``child_wall_s``:
    warm-up, the JIT ``compile`` within it, flushes, trials; shown, never scored). The record's ``timing`` has the
    rest: ``start_s`` (starting the child) and ``build_s`` (nvcc, or a cache look-up)."""
    times = outputs["time_submission"]
    median = float(np.median(times))
    read = reference.read_bytes(case.params)
    floor_s = read_once_floor(outputs["time_copy"].tolist(), copied_bytes(inputs), read)  # the grader's own inputs
    figures = paired.figures(times.tolist(), outputs["time_torch"].tolist()) | {
        "baseline": reference.SPEED_BASELINE_WORDS,
        "floor_s": floor_s,
        "floor_ratio": median / floor_s,  # 1 would be reading what the case must read once at the copy bandwidth
        "copy_bandwidth_gbs": read / floor_s / 1e9,
        "stopped": f"fixed {times.size} trials on the device",
    }
    if "time_triton" in outputs:
        figures["triton_median_s"] = float(np.median(outputs["time_triton"]))
    wall = {k.removeprefix("time_wall_"): float(np.sum(v)) for k, v in outputs.items() if k.startswith("time_wall_")}
    if wall:
        figures["child_wall_s"] = wall
    return figures


def pytest_grader_report_sections(summary: dict[str, Any], config: Any) -> list[tuple[str, str]] | None:
    """grades.md: the kernel times of GPU runtimes' speed cases, with both ratios and the Triton reference."""
    del config
    timed = {c.id for c in all_challenges() if any(rt.timing == "device" for rt in runtimes.of(c))}
    rows = [
        [
            c["model"], c["case"], _ms(s["median_s"]), _ms(s["spread_s"]), _ms(s["baseline_median_s"]),
            f"{s['ratio']:.2f}x", _ms(s["floor_s"]), f"{s['floor_ratio']:.2f}x",
            _ms(s["triton_median_s"]) if "triton_median_s" in s else "—",
        ]
        for c in summary["cases"]
        if c["challenge"] in timed and (s := c.get("speed"))
    ]  # fmt: skip
    if not rows:
        return None
    baselines = "; ".join(f"{cid}: {reference_module(cid).SPEED_BASELINE_WORDS}" for cid in sorted(timed))
    headers = ["model", "case", "median ms", "spread ms", "torch ms", "vs torch", "floor ms", "vs floor", "triton ms"]
    intro = (
        f"Kernel time on the GPU: CUDA events around one call, L2 flushed (twice its size written) and the device "
        f"synchronised before each call, in {TRIALS} trials after warm-up, each timing the kernel and torch once; "
        "'vs torch' is the median of the per-trial ratios. torch is the challenge's torch baseline on the same input "
        f"({baselines}); the floor is the bytes a case must read, read once at the device-to-device copy bandwidth "
        "measured in the same run."
    )
    return [("GPU kernel speed", intro + "\n\n" + table(headers, rows))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"
