"""Pytest side of isolation: the per-process sandbox pool and the ``run_case`` fixture the challenge tests call.

``run_case(submission, case)`` draws the case's inputs (the same for every model in a run), computes the float64 truth
once per case in this process, runs the submission in its sandbox, judges the result and attaches the record to the
test report. Speed cases time the submission and the reference baseline (in a sandbox of its own, under the same
limits) in alternation.
"""

from __future__ import annotations

import contextlib
import fcntl
import statistics
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from plugins.compare.judge import judge
from plugins.config import GraderConfig, grader_config
from plugins.discover.submissions import Submission
from plugins.grade import records as r
from plugins.isolate.sandbox import Limits, Outcome, Program, Sandbox, SandboxPool
from reference.challenges import reference_module
from reference.contract import Case, Expected


@pytest.fixture(scope="session")
def sandbox_pool(pytestconfig: pytest.Config) -> Iterator[SandboxPool]:
    cfg = grader_config(pytestconfig)
    limits = Limits(
        call_timeout_s=cfg.call_timeout_s,
        memory_bytes=cfg.memory_limit_mb * 2**20,
        device=cfg.device,
        gpu=cfg.gpu,
        gpu_memory_fraction=cfg.gpu_memory_fraction,
    )
    pool = SandboxPool(limits, cfg.repo)
    yield pool
    pool.close()


class CaseRunner:
    """Inputs and truths cached per case; one instance per pytest process."""

    def __init__(self, cfg: GraderConfig, pool: SandboxPool):
        self.cfg, self.pool = cfg, pool
        self._truths: dict[tuple[str, str], tuple[dict[str, np.ndarray], Expected]] = {}

    def truth(self, reference: ModuleType, case: Case) -> tuple[dict[str, np.ndarray], Expected]:
        key = (reference.CHALLENGE.id, case.id)
        if key not in self._truths:
            # The seed mixes the run's seed with the case: fresh inputs per run, identical for every model in it.
            rng = np.random.default_rng([self.cfg.seed, zlib.crc32(f"{key[0]}/{key[1]}".encode())])
            inputs = reference.make_inputs(case, rng)
            self._truths[key] = (inputs, reference.expected(case, inputs))
        return self._truths[key]

    def run(self, submission: Submission, case: Case) -> r.CaseRecord:
        reference = reference_module(submission.challenge)
        index = reference.CASES.index(case)
        if submission.missing:
            return _unrunnable(submission, case, index, f"no Python file defines {', '.join(submission.missing)}")
        inputs, expected = self.truth(reference, case)
        sandbox = self.pool.get(Program(reference.__name__, submission.entries, submission.folder))
        if not case.is_speed:
            measure = {"memory": True} if case.category == "memory" else {}
            return judge(submission, case, index, expected, sandbox.run(inputs, dict(case.params), measure))
        baseline = self.pool.get(Program(reference.__name__, _own_entries(reference), None))
        outcome, timed_baseline = self._race(sandbox, baseline, inputs, dict(case.params))
        return judge(submission, case, index, expected, outcome, timed_baseline)

    def _race(
        self, sandbox: Sandbox, baseline: Sandbox, inputs: dict[str, np.ndarray], params: dict[str, Any]
    ) -> tuple[Outcome, Outcome | None]:
        """Time the submission and the reference baseline in alternation, one call each per round, so that both see
        the same machine load; and time one speed case at a time on this machine (a lock shared by xdist workers)."""
        with _speed_lock():
            rounds: list[tuple[Outcome, Outcome]] = []
            for i in range(self.cfg.speed_repeats):
                measure = {"warmup": self.cfg.speed_warmup if i == 0 else 0, "repeats": 1}
                mine = sandbox.run(inputs, params, measure)
                if mine.status != "ok":
                    return mine, None
                rounds.append((mine, baseline.run(inputs, params, measure)))
        first, first_base = rounds[0]
        if any(base.status != "ok" for _, base in rounds):
            return first, None
        for outcome, which in ((first, 0), (first_base, 1)):
            times = [_measured(pair[which])["times"][0] for pair in rounds]
            _measured(outcome).update(times=times, seconds=statistics.median(times))
        return first, first_base


def _measured(outcome: Outcome) -> dict[str, Any]:
    return next(c for c in outcome.calls if c.get("measured"))


def _own_entries(reference: ModuleType) -> tuple[tuple[str, str], ...]:
    """The reference module's own vectorised entry points, which speed cases are timed against."""
    return tuple((name, "") for name in reference.CHALLENGE.entry_points)


@contextlib.contextmanager
def _speed_lock() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / "kernelgrade-speed.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unrunnable(submission: Submission, case: Case, index: int, message: str) -> r.CaseRecord:
    return r.CaseRecord.for_case(
        submission.model,
        submission.challenge,
        case,
        index,
        r.ERROR,
        message=message,
        runtime=submission.runtime,
        loaded=submission.describe(),
    )


@pytest.fixture(scope="session")
def case_runner(pytestconfig: pytest.Config, sandbox_pool: SandboxPool) -> CaseRunner:
    return CaseRunner(grader_config(pytestconfig), sandbox_pool)


@pytest.fixture
def run_case(request: pytest.FixtureRequest, case_runner: CaseRunner) -> Callable[[Submission, Case], r.CaseRecord]:
    """Run one case of one submission; the record travels on the report. Speed cases skip under ``--no-speed``."""

    def run(submission: Submission, case: Case) -> r.CaseRecord:
        if case.is_speed and not case_runner.cfg.measure_speed:
            pytest.skip("speed not measured (--no-speed)")
        record = case_runner.run(submission, case)
        record.nodeid = request.node.nodeid
        # What the submission printed shows beside the test in pytest's output and in report.html (escaped there).
        for stream in ("stdout", "stderr"):
            if getattr(record, stream):
                request.node.add_report_section("call", f"submission {stream}", getattr(record, stream))
        request.node.user_properties.append((r.RECORD_PROPERTY, record.to_dict()))
        return record

    return run
