"""The grader's command-line options, declared for ``pytest_addoption`` (read once by :mod:`plugins.config`)."""

from __future__ import annotations

from pathlib import Path

import pytest

RUBRIC_FILE = Path(__file__).resolve().parent.parent / "grade" / "rubric.toml"
# Defaults of --call-timeout and --memory-limit-mb, named because `kernelgrade check` imports a submission under the
# same limits as a grading run.
DEFAULT_CALL_TIMEOUT_S = 60.0
DEFAULT_MEMORY_LIMIT_MB = 4096
KEEP_RUNS = 20  # numbered runs kept in <reports-dir>/history/ (--keep-runs; also for a run that failed early)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kernelgrade", "grading of model submissions")
    group.addoption(
        "--submissions-dir",
        metavar="PATH",
        help="folder of <model>/<challenge>/ submissions to grade, "
        "or a clone of a model-comparison repo holding one (default: ./submissions)",
    )
    group.addoption(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="grade only this model (exact name; repeatable or comma-separated)",
    )
    group.addoption(
        "--reports-dir",
        metavar="PATH",
        help="where grades.md, results.json, report.html and badges/ are written (default: ./reports)",
    )
    group.addoption("--rubric", metavar="PATH", help=f"grading weights and letter thresholds (default: {RUBRIC_FILE})")
    # Numbers are read as text and checked in pytest_configure, so a bad value is one clear usage-error line.
    group.addoption(
        "--seed", metavar="N", help="seed for the hidden inputs, >= 0 (default: fresh per run, shown in reports)"
    )
    group.addoption(
        "--call-timeout",
        default=f"{DEFAULT_CALL_TIMEOUT_S:g}",
        metavar="SECONDS",
        help=f"wall-clock limit for one case of one submission (default: {DEFAULT_CALL_TIMEOUT_S:g})",
    )
    group.addoption(
        "--memory-limit-mb",
        default=str(DEFAULT_MEMORY_LIMIT_MB),
        metavar="MB",
        help="host memory cap of each submission's process: address space on CPU runs, data segment on GPU runs "
        f"(default: {DEFAULT_MEMORY_LIMIT_MB})",
    )
    group.addoption(
        "--gpu-memory-fraction",
        default="0.5",
        metavar="F",
        help="share of the GPU's memory each submission's process may take through torch, on GPU runs (default: 0.5)",
    )
    group.addoption(
        "--device",
        choices=("auto", "cpu", "cuda"),  # "cuda": torch's name for the GPU (plugins.config.gpus.GPU_DEVICE)
        default="auto",
        help="where submissions may run: auto uses a GPU when one is present (default: auto)",
    )
    group.addoption("--no-speed", action="store_true", help="skip speed cases; grades then leave speed out")
    group.addoption(
        "--speed-repeats",
        default="5",
        metavar="N",
        help="least paired trials per speed case (default: 5); more follow until the ratio's 95%% interval is within "
        "10%% of it, up to --speed-max-trials",
    )
    group.addoption(
        "--speed-max-trials",
        metavar="N",
        help="most paired trials per speed case (default: four times --speed-repeats; never fewer than it)",
    )
    group.addoption(
        "--time-failed",
        action="store_true",
        help="time the speed case of a submission that failed a correctness case of the same challenge (default: not "
        "timed, recorded as not_timed, no credit)",
    )
    group.addoption(
        "--compile-cache",
        metavar="DIR",
        help="keep each submission's compiled kernels (Triton, torch inductor, the CUDA driver's JIT) across runs in "
        "DIR (made 0700), keyed by every byte of its folder and the challenge; only for children under bwrap "
        "(default: off, each run compiles afresh; within a run a submission's children share one cache)",
    )
    group.addoption(
        "--train-data",
        metavar="PATH",
        help="ternary training: train and evaluate on this text file (bytes as tokens, last 10%% held out) instead of "
        "the grader's synthetic corpus",
    )
    group.addoption(
        "--shard",
        metavar="I/N",
        help="grade shard I of N (counting from 1: 1/3, 2/3, 3/3), a fixed share of the (submission, challenge) "
        "pairs; give every shard the same --seed and join them with python -m plugins.report.merge",
    )
    group.addoption(
        "--task",
        metavar="NAME|PATH",
        help="task profile for every model: a built-in one (kernelgrade, scaffold) or a TOML file saying which rules "
        "the models' prompts stated; cases depending on other rules run as beyond the task (shown, not scored). "
        "Default: a model folder's kernelgrade-task.toml, else the submissions root's, else kernelgrade",
    )
    group.addoption(
        "--baseline",
        metavar="last|N|PATH",
        help="an earlier run to compare with: last (the newest finished run of --reports-dir), N (run N of its "
        "history/) or a results.json; reports add grade deltas, newly failing and passing cases, and speed changes "
        "beyond the noise",
    )
    group.addoption(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 if a grade dropped by more than one letter step or a case newly fails against --baseline "
        "(default baseline: last), else 0, whatever the submissions' own failures (for CI)",
    )
    group.addoption(
        "--keep-runs",
        default=str(KEEP_RUNS),
        metavar="N",
        help=f"numbered runs kept in <reports-dir>/history/, oldest deleted first (default: {KEEP_RUNS})",
    )
    group.addoption(
        "--no-fail-fast",
        action="store_true",
        help="run every case of a submission that timed out on the first two cases of a challenge (default: its "
        "other cases of that challenge fail at once as not run)",
    )
    group.addoption(
        "--judge-grades",
        metavar="FILE",
        help="CSV with a header model,challenge,grade (a rubric letter or a 0-100 score): reports add where this "
        "judge and the execution grades disagree by more than one letter step, with the cases that explain it",
    )
