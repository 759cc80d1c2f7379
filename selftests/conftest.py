"""Helpers for the grader's self-tests: start grading runs in subprocesses and read back what they wrote.

A grading run is the real thing: ``python -m pytest`` on the repo's ``tests/`` with the repo's ``pytest.ini`` and
``conftest.py``, writing its reports into a temporary folder. The demo roster is graded once per session (with and
without ``-n 2``), whichever worker asks first, and shared by the tests that read it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "submissions"
ROSTER_SEED = "20261130"


@dataclass
class GradingRun:
    """A finished grading run: exit code, combined output and the reports folder."""

    returncode: int
    output: str
    reports: Path

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.reports / "results.json").read_text())

    def records(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Case records keyed by (model, challenge, case)."""
        return {(c["model"], c["challenge"], c["case"]): c for c in self.summary["cases"]}

    def letters(self) -> dict[str, dict[str, str]]:
        return {m: {c: g["letter"] for c, g in d["challenges"].items()} for m, d in self.summary["models"].items()}


FLASH_TESTS = "tests/test_flash"  # the flash-attention package: the roster tests below assert its grades


def run_grader(
    workdir: Path, *args: str, as_user: bool = False, timeout: float = 900, tests: str = FLASH_TESTS
) -> GradingRun:
    """Grade with extra arguments; reports go to ``workdir/reports``. Never raises on exit codes.

    By default pytest is pointed at the repo explicitly (``-c``, ``--rootdir``) from ``workdir`` and collects only
    ``tests`` (a test package of one challenge family, relative to the repo), so each challenge's self-tests grade its
    own cases and stay independent of the others'; ``as_user`` instead runs exactly as the README says, from the repo
    root with nothing but the given arguments.
    """
    reports = workdir / "reports"
    located = [] if as_user else ["-c", str(REPO / "pytest.ini"), "--rootdir", str(REPO)]
    command = [sys.executable, "-m", "pytest", *located, "-p", "no:cacheprovider", f"--reports-dir={reports}", *args]
    if not as_user:
        command.append(str(REPO / tests))
    done = subprocess.run(
        command, cwd=REPO if as_user else workdir, capture_output=True, text=True, timeout=timeout, check=False
    )
    return GradingRun(done.returncode, done.stdout + done.stderr, reports)


SCAFFOLD_SUFFIX = "-scaffold"  # the same fixture again, graded under the scaffold task profile


def under_both_profiles(root: Path, fixture: str) -> Path:
    """A submissions folder holding ``fixture`` twice: as itself (our prompts, kernelgrade) and as
    ``<fixture>-scaffold``, whose kernelgrade-task.toml says it was written to the public prompts."""
    subs = root / "subs"
    shutil.copytree(FIXTURES / fixture, subs / fixture)
    shutil.copytree(FIXTURES / fixture, subs / f"{fixture}{SCAFFOLD_SUFFIX}")
    (subs / f"{fixture}{SCAFFOLD_SUFFIX}" / "kernelgrade-task.toml").write_text('task = "scaffold"\n')
    return subs


def full_marks_beyond_notes_only(grade: dict[str, Any], rule: str) -> set[str]:
    """Assert a challenge grade is full marks (A+, 100 points) whose only failures are cases beyond the task that
    depend on ``rule``; returns those cases."""
    assert (grade["letter"], grade["points"]) == ("A+", 100.0), grade
    assert grade["failed"] and all(rule in f["beyond"] for f in grade["failed"]), grade["failed"]
    return {f["case"] for f in grade["failed"]}


@pytest.fixture
def grade(tmp_path: Path):
    """``grade(*args)``: one grading run in a fresh temporary folder."""
    counter = iter(range(100))

    def run(*args: str, as_user: bool = False, tests: str = FLASH_TESTS) -> GradingRun:
        workdir = tmp_path / f"run{next(counter)}"
        workdir.mkdir()
        return run_grader(workdir, *args, as_user=as_user, tests=tests)

    return run


def session_temp(worker_basetemp: Path | str) -> Path:
    """The self-test session's own temporary folder, the one above each xdist worker's (xdist gives a local worker
    ``--basetemp=<the session's>/popen-gwN``): what the workers share, pruned by pytest with its old runs."""
    return Path(worker_basetemp).parent


def shared_run(tmp_path_factory: pytest.TempPathFactory, name: str, *args: str) -> GradingRun:
    """``run_grader(folder, *args)`` once per self-test session, whichever xdist worker asks first; the others wait for
    it and read the same run. A session fixture alone runs once per worker: under ``--dist loadfile`` the modules that
    read the flash roster often land on both, and the roster ran twice (59 and 69 s of set-up on the 2-core
    machine)."""
    if not os.environ.get("PYTEST_XDIST_TESTRUNUID"):
        return run_grader(tmp_path_factory.mktemp(name), *args)
    folder = session_temp(tmp_path_factory.getbasetemp()) / f"shared-{name}"
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        done = folder / "run.json"
        if done.exists():
            kept = json.loads(done.read_text())
            return GradingRun(kept["returncode"], kept["output"], Path(kept["reports"]))
        (folder / "run").mkdir(exist_ok=True)  # a worker that died while running it left it half-written
        run = run_grader(folder / "run", *args)
        done.write_text(json.dumps({"returncode": run.returncode, "output": run.output, "reports": str(run.reports)}))
        return run


@pytest.fixture(scope="session")
def roster(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    """The bundled demo roster on flash attention, graded without speed (timings must not move the asserted grades)."""
    return shared_run(tmp_path_factory, "roster", "--no-speed", "--seed", ROSTER_SEED)


@pytest.fixture(scope="session")
def roster_parallel(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    """The same roster, challenges and seed under ``-n 2``."""
    return shared_run(tmp_path_factory, "roster-n2", "-n", "2", "--no-speed", "--seed", ROSTER_SEED)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under xdist, a test marked ``exclusive`` (it times something, or a verdict it asserts depends on the machine
    being idle) runs while no other self-test runs: it takes the workers' shared lock file exclusively, every other
    test (its fixtures' set-up included) shares it. Without xdist, nothing to do. The lock file lies in the session's
    temporary folder (in the system's, every session left one behind)."""
    basetemp = item.config.option.basetemp
    if not os.environ.get("PYTEST_XDIST_TESTRUNUID") or not basetemp:
        return (yield)
    with open(session_temp(basetemp) / "exclusive.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if item.get_closest_marker("exclusive") else fcntl.LOCK_SH)
        return (yield)


# The modules with the longest wall times on the 2-core machine, longest first (set-up and calls, `--durations=0`
# under -n 2, 2026-12-07: ternary 198 s, grading runs 142, sandbox attacks 126, KV cache 89, DFlash 71, KV own model,
# report attacks and build containment 51 to 54). ``--dist loadfile`` hands modules out in collection
# order, so one of these started last held one worker for minutes after the other had run dry.
LONGEST_FIRST = (
    "test_ternary_training.py",
    "test_grading_runs.py",
    "test_adversarial_sandbox.py",
    "test_kv_cache.py",
    "test_dflash.py",
    "test_kv_cache_own.py",
    "test_adversarial_reports.py",
    "test_build_containment.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first (stable otherwise), so the last module to start is a short one."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
