"""Options, read once into a frozen :class:`GraderConfig` in ``config.stash``; plus the run's seed and GPU hand-out.

Configuration flows one way: ``pytest.ini`` -> command-line options -> this config -> everything else. Under xdist the
controller picks the seed and hands each worker a GPU (``pytest_configure_node``), so every worker draws the same inputs
and a restarted worker gets a free GPU back instead of double-booking one.
"""

from __future__ import annotations

import functools
import math
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from plugins.discover import shard

CONFIG_KEY = pytest.StashKey["GraderConfig"]()
GPU_POOL_KEY = pytest.StashKey[dict[str, int]]()
COMPARISON_INPUTS_KEY = pytest.StashKey[dict[str, Any]]()  # "baseline", "judge": (path as given, what it holds)
RUBRIC_FILE = Path(__file__).resolve().parent / "grade" / "rubric.toml"
# Defaults of --call-timeout and --memory-limit-mb, named because `kernelgrade check` imports a submission under the
# same limits as a grading run.
DEFAULT_CALL_TIMEOUT_S = 60.0
DEFAULT_MEMORY_LIMIT_MB = 4096


@dataclass(frozen=True)
class GraderConfig:
    """Everything the grader reads from the command line, resolved."""

    repo: Path
    submissions_dir: Path
    models: tuple[str, ...]  # empty: every discovered model
    reports_dir: Path
    rubric: Path
    seed: int
    call_timeout_s: float
    memory_limit_mb: int
    gpu_memory_fraction: float
    device: str  # "cpu" or "cuda", resolved from "auto"
    gpu: str | None  # the GPU this process's children may use
    measure_speed: bool
    speed_repeats: int
    speed_warmup: int
    train_data: Path | None = None  # --train-data: the ternary challenge trains on this file instead of its corpus
    shard: tuple[int, int] | None = None  # --shard=I/N (I counts from 1): grade only this share of the pairs
    # --task=NAME|PATH: the task profile (reference/tasks) for every model of the run, a built-in name or an absolute
    # path; None: each model's own kernelgrade-task.toml, the repo's, else the default (plugins/discover/tasks.py).
    task: str | None = None
    # The reports' history and fail-fast (issue 21): numbered runs kept, CI exit on regression, and whether a
    # submission's remaining cases of a challenge fail at once after two timeouts in a row.
    keep_runs: int = 20
    fail_on_regression: bool = False
    fail_fast: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


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
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where submissions may run: auto uses a GPU when one is present (default: auto)",
    )
    group.addoption("--no-speed", action="store_true", help="skip speed cases; grades then leave speed out")
    group.addoption(
        "--speed-repeats",
        default="5",
        metavar="N",
        help="timed calls per speed case (default: 5; a case whose timed calls add up to under half a second gets up "
        "to four times as many)",
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
        default="20",
        metavar="N",
        help="numbered runs kept in <reports-dir>/history/, oldest deleted first (default: 20)",
    )
    group.addoption(
        "--no-fail-fast",
        action="store_true",
        help="run every case of a submission that timed out twice in a row (default: its remaining cases of that "
        "challenge fail at once as not run)",
    )
    group.addoption(
        "--judge-grades",
        metavar="FILE",
        help="CSV with a header model,challenge,grade (a rubric letter or a 0-100 score): reports add where this "
        "judge and the execution grades disagree by more than one letter step, with the cases that explain it",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", None)
    root = config.rootpath
    option = config.option
    checked = checked_options(config)
    if checked["shard"] is not None and checked["seed"] is None:  # shards of one roster must draw the same inputs
        raise _usage_error(config, f"--shard={option.shard}: needs --seed N, the same N for every shard")
    device = worker["kernelgrade_device"] if worker else _resolve_device(option.device)
    fresh_seed = checked["seed"] if checked["seed"] is not None else random.randrange(2**31)
    seed = worker["kernelgrade_seed"] if worker else fresh_seed
    gpu = worker.get("kernelgrade_gpu") if worker else (visible_gpus()[0] if device == "cuda" else None)
    config.stash[CONFIG_KEY] = GraderConfig(
        repo=root,
        submissions_dir=Path(option.submissions_dir or root / "submissions").expanduser().resolve(),
        models=tuple(m.strip() for arg in option.model for m in arg.split(",") if m.strip()),
        reports_dir=reports_dir(config),
        rubric=Path(option.rubric or RUBRIC_FILE).expanduser().resolve(),
        seed=seed,
        call_timeout_s=checked["call_timeout"],
        memory_limit_mb=checked["memory_limit_mb"],
        gpu_memory_fraction=checked["gpu_memory_fraction"],
        device=device,
        gpu=gpu,
        measure_speed=not option.no_speed,
        speed_repeats=checked["speed_repeats"],
        speed_warmup=1,
        train_data=Path(option.train_data).expanduser().resolve() if option.train_data else None,
        shard=checked["shard"],
        task=_task_option(option.task),
        keep_runs=checked["keep_runs"],
        fail_on_regression=option.fail_on_regression,
        fail_fast=not option.no_fail_fast,
    )
    if device == "cuda" and not worker:
        config.stash[GPU_POOL_KEY] = {gpu: 0 for gpu in visible_gpus()}
    if not worker:
        config.stash[COMPARISON_INPUTS_KEY] = checked_comparison_inputs(config)


# option -> (parse, rule it must meet, the rule in words); parse errors and broken rules are usage errors (exit 4).
_NUMBERS: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool], str]] = {
    "call_timeout": (float, lambda v: math.isfinite(v) and v > 0, "a finite number of seconds > 0"),
    "memory_limit_mb": (int, lambda v: v > 0, "a whole number of MiB > 0"),
    "seed": (int, lambda v: v >= 0, "a whole number >= 0"),
    "speed_repeats": (int, lambda v: v >= 1, "a whole number >= 1"),
    "gpu_memory_fraction": (float, lambda v: math.isfinite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "shard": (shard.parse, shard.in_range, shard.WORDS),
    "keep_runs": (int, lambda v: v >= 1, "a whole number >= 1"),
}


def checked_options(config: pytest.Config) -> dict[str, Any]:
    """The numeric options parsed and checked; a bad one raises a usage error that names it and the rule."""
    values: dict[str, Any] = {}
    for name, (parse, rule, words) in _NUMBERS.items():
        raw = getattr(config.option, name)
        if raw is None:
            values[name] = None
            continue
        try:
            value = parse(str(raw).strip())
            ok = rule(value)
        except (ValueError, OverflowError):
            ok = False
        if not ok:
            flag = "--" + name.replace("_", "-")
            raise _usage_error(config, f"{flag}={raw}: must be {words}")
        values[name] = value
    return values


def checked_comparison_inputs(config: pytest.Config) -> dict[str, Any]:
    """``--baseline`` and ``--judge-grades`` read now, before the run moves its reports folder aside (the baseline may
    be the results.json it replaces); one that cannot be read as documented is a usage error."""
    from plugins.grade.rubric import load_rubric  # late: the grade and report packages import this module
    from plugins.report import compare_runs, inert, judge_grades

    option, inputs = config.option, {}
    wanted = option.baseline or ("last" if option.fail_on_regression else None)
    if wanted:
        try:
            inputs["baseline"] = compare_runs.baseline_input(wanted, reports_dir(config), given=bool(option.baseline))
        except compare_runs.BaselineError as exc:
            raise _usage_error(config, inert.one_line(f"--baseline={wanted}: {exc}")) from None
    if option.judge_grades:
        try:
            rubric = load_rubric(Path(option.rubric or RUBRIC_FILE).expanduser())
        except (OSError, ValueError, KeyError, TypeError):
            return inputs  # the grade plugin reports the unreadable rubric as the usage error
        try:
            rows = judge_grades.read_judge_file(Path(option.judge_grades).expanduser(), rubric)
        except judge_grades.JudgeFileError as exc:
            # the file's own text (a model name) is in the message: shown, never sent to the terminal as is
            raise _usage_error(config, inert.one_line(f"--judge-grades={option.judge_grades}: {exc}")) from None
        inputs["judge"] = (option.judge_grades, rows)
    return inputs


def _usage_error(config: pytest.Config, message: str) -> Exception:
    from plugins.report import lifecycle  # late: the report package imports this module

    return lifecycle.usage_error(config, message)


def _task_option(value: str | None) -> str | None:
    """``--task`` as given for a built-in profile's name (or a name that is no file: the usage error then shows it as
    given), else the file's absolute path."""
    from reference.tasks import BUILT_IN  # late: it imports every reference module

    if value is None or value in BUILT_IN or not Path(value).expanduser().exists():
        return value
    return str(Path(value).expanduser().resolve())


def reports_dir(config: pytest.Config) -> Path:
    """Read on its own because pytest-html's path must be set before the full config exists."""
    return Path(config.option.reports_dir or config.rootpath / "reports").expanduser().resolve()


def grader_config(config: pytest.Config) -> GraderConfig:
    return config.stash[CONFIG_KEY]


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity: a scheduler's allocation, not the whole host)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def gpu_count() -> int:
    """GPUs visible to nvidia-smi; asking the driver this way creates no CUDA context in the grader. Asked once per
    process: nvidia-smi takes up to a second or two on a host without the driver's persistence mode, and the
    controller asks several times before its workers start."""
    listing = run_quietly(["nvidia-smi", "-L"]) if shutil.which("nvidia-smi") else ""
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def visible_gpus() -> list[str]:
    """The GPUs this run may hand out: those in the grader's own ``CUDA_VISIBLE_DEVICES`` when it is set (a scheduler's
    allocation, say ``2,3``; set but empty, none), else every GPU nvidia-smi lists."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:  # set but empty hides every GPU, as it does for CUDA itself
        return [g.strip() for g in given.split(",") if g.strip()]
    return [str(i) for i in range(gpu_count())]


def run_quietly(command: list[str]) -> str:
    """A command's stdout, or "" if it is missing, fails or hangs (for optional facts such as the GPU's name)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if visible_gpus() else "cpu"
    if choice == "cuda" and not visible_gpus():
        raise pytest.UsageError(
            "--device cuda: no GPU is visible (nvidia-smi -L lists none, or CUDA_VISIBLE_DEVICES hides them)"
        )
    return choice


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: the same seed for every worker, and a GPU: the least-used one, which deals GPUs round-robin
    in worker order (gw0 the first, gw1 the second, ...) and gives a replacement worker the GPU its predecessor
    freed."""
    config = node.config
    node.workerinput["kernelgrade_seed"] = grader_config(config).seed
    node.workerinput["kernelgrade_device"] = grader_config(config).device
    pool = config.stash.get(GPU_POOL_KEY, {})
    if pool:
        gpu = min(pool, key=lambda g: (pool[g], int(g)))
        pool[gpu] += 1
        node.workerinput["kernelgrade_gpu"] = gpu


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: a finished or crashed worker gives its GPU back to the pool."""
    pool = node.config.stash.get(GPU_POOL_KEY, {})
    gpu = node.workerinput.get("kernelgrade_gpu")
    if gpu in pool:
        pool[gpu] -= 1
