"""Options, read once into a frozen :class:`GraderConfig` in ``config.stash``; plus the run's seed and GPU hand-out.

Configuration flows one way: ``pytest.ini`` -> command-line options -> this config -> everything else. Under xdist the
controller picks the seed and hands each worker a GPU (``pytest_configure_node``), so every worker draws the same inputs
and a restarted worker gets a free GPU back instead of double-booking one.

The package sits under every stage but :mod:`plugins.base` and imports none of them: the options are declared in
:mod:`.options`, values read as text are checked in :mod:`.checks`, the GPU pool is :mod:`.gpus`. A bad value is a
``pytest.UsageError``; the reports folder, which holds the last run that graded, is left as it is. ``--baseline`` and
``--judge-grades`` are read by the report stage (:mod:`plugins.report.comparisons`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from plugins.base.host import visible_gpus
from plugins.config import checks, gpus
from plugins.config.options import (  # noqa: F401 (the option defaults are read from here)
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_MEMORY_LIMIT_MB,
    KEEP_RUNS,
    RUBRIC_FILE,
    pytest_addoption,
)

CONFIG_KEY = pytest.StashKey["GraderConfig"]()


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
    device: str  # "cpu" or gpus.GPU_DEVICE, resolved from "auto"
    gpu: str | None  # the GPU this process's children may use
    measure_speed: bool
    speed_repeats: int
    speed_warmup: int
    train_data: Path | None = None  # --train-data: the ternary challenge trains on this file instead of its corpus
    shard: tuple[int, int] | None = None  # --shard=I/N (I counts from 1): grade only this share of the pairs
    # --task=NAME|PATH: the task profile (reference/tasks) for every model of the run, a built-in name or an absolute
    # path; None: each model's own kernelgrade-task.toml, the repo's, else the default (plugins/discover/tasks.py).
    task: str | None = None
    speed_max_trials: int = 20  # --speed-max-trials (never under speed_repeats): the cap of paired trials per case
    time_failed: bool = False  # --time-failed: time speed cases of submissions that failed a correctness case too
    # The reports' history and fail-fast (issue 21): numbered runs kept, CI exit on regression, and whether a
    # submission's other cases of a challenge fail at once after timeouts on its first two (failfast.py).
    keep_runs: int = KEEP_RUNS
    fail_on_regression: bool = False
    fail_fast: bool = True
    # --compile-cache=DIR: submissions' compile caches (Triton, inductor, CUDA JIT) kept across runs in DIR; None:
    # each lives for the run only (plugins/isolate/compile_cache.py).
    compile_cache: Path | None = None

    @property
    def on_gpu(self) -> bool:
        """Whether this run hands GPU children a GPU (``--device`` resolved to the GPU)."""
        return self.device == gpus.GPU_DEVICE

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", None)
    root = config.rootpath
    option = config.option
    checked = checks.checked_options(config)
    if checked["shard"] is not None and checked["seed"] is None:  # shards of one roster must draw the same inputs
        raise pytest.UsageError(f"--shard={option.shard}: needs --seed N, the same N for every shard")
    device = worker["kernelgrade_device"] if worker else gpus.resolve_device(option.device)
    fresh_seed = checked["seed"] if checked["seed"] is not None else random.randrange(2**31)
    seed = worker["kernelgrade_seed"] if worker else fresh_seed
    gpu = worker.get("kernelgrade_gpu") if worker else (visible_gpus()[0] if device == gpus.GPU_DEVICE else None)
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
        speed_max_trials=max(checked["speed_repeats"], checked["speed_max_trials"] or 4 * checked["speed_repeats"]),
        train_data=Path(option.train_data).expanduser().resolve() if option.train_data else None,
        shard=checked["shard"],
        task=checks.task_option(option.task),
        time_failed=bool(option.time_failed),
        keep_runs=checked["keep_runs"],
        fail_on_regression=option.fail_on_regression,
        fail_fast=not option.no_fail_fast,
        compile_cache=Path(option.compile_cache).expanduser().resolve() if option.compile_cache else None,
    )
    if device == gpus.GPU_DEVICE and not worker:
        gpus.open_pool(config)


def reports_dir(config: pytest.Config) -> Path:
    """Read on its own because pytest-html's path must be set before the full config exists."""
    return Path(config.option.reports_dir or config.rootpath / "reports").expanduser().resolve()


def grader_config(config: pytest.Config) -> GraderConfig:
    return config.stash[CONFIG_KEY]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: the same seed for every worker, and a GPU: the least-used one, which deals GPUs round-robin
    in worker order (gw0 the first, gw1 the second, ...) and gives a replacement worker the GPU its predecessor
    freed."""
    config = node.config
    node.workerinput["kernelgrade_seed"] = grader_config(config).seed
    node.workerinput["kernelgrade_device"] = grader_config(config).device
    gpus.hand_out(node)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: a finished or crashed worker gives its GPU back to the pool."""
    gpus.take_back(node)
