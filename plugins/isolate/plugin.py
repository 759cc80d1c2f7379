"""Pytest side of isolation: the per-process sandbox pool and the ``run_case`` fixture the challenge tests call.

``run_case(submission, case)`` draws the case's inputs (the same for every model in a run), computes the float64 truth
once per case in this process, runs the submission in its sandbox, judges the result and attaches the record to the
test report. Speed cases also time the reference baseline in a sandbox of its own, under the same limits.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from plugins.compare.judge import judge
from plugins.config import GraderConfig, grader_config
from plugins.discover.submissions import Submission
from plugins.grade import records as r
from plugins.isolate.sandbox import Limits, Outcome, Program, SandboxPool
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
    """Inputs and truths cached per case, baseline timings per case; one instance per pytest process."""

    def __init__(self, cfg: GraderConfig, pool: SandboxPool):
        self.cfg, self.pool = cfg, pool
        self._truths: dict[tuple[str, str], tuple[dict[str, np.ndarray], Expected]] = {}
        self._baselines: dict[tuple[str, str], Outcome] = {}

    def truth(self, reference: ModuleType, case: Case) -> tuple[dict[str, np.ndarray], Expected]:
        key = (reference.CHALLENGE.id, case.id)
        if key not in self._truths:
            # The seed mixes the run's seed with the case: fresh inputs per run, identical for every model in it.
            rng = np.random.default_rng([self.cfg.seed, zlib.crc32(f"{key[0]}/{key[1]}".encode())])
            inputs = reference.make_inputs(case, rng)
            self._truths[key] = (inputs, reference.expected(case, inputs))
        return self._truths[key]

    def measure(self, case: Case) -> dict[str, Any]:
        if case.params.get("mem"):
            return {"memory": True}
        if case.is_speed:
            return {"warmup": self.cfg.speed_warmup, "repeats": self.cfg.speed_repeats}
        return {}

    def run(self, submission: Submission, case: Case) -> r.CaseRecord:
        reference = reference_module(submission.challenge)
        index = reference.CASES.index(case)
        if submission.missing:
            return _unrunnable(submission, case, index, f"no Python file defines {', '.join(submission.missing)}")
        inputs, expected = self.truth(reference, case)
        program = Program(reference.__name__, submission.entries, submission.folder)
        outcome = self.pool.get(program).run(inputs, dict(case.params), self.measure(case))
        baseline = self._baseline(reference, case, inputs) if case.is_speed and outcome.status == "ok" else None
        return judge(submission, case, index, expected, outcome, baseline)

    def _baseline(self, reference: ModuleType, case: Case, inputs: dict[str, np.ndarray]) -> Outcome:
        key = (reference.CHALLENGE.id, case.id)
        if key not in self._baselines:
            entries = tuple((name, "") for name in reference.CHALLENGE.entry_points)
            program = Program(reference.__name__, entries, None)
            self._baselines[key] = self.pool.get(program).run(inputs, dict(case.params), self.measure(case))
        return self._baselines[key]


def _unrunnable(submission: Submission, case: Case, index: int, message: str) -> r.CaseRecord:
    return r.CaseRecord(
        model=submission.model,
        challenge=submission.challenge,
        case=case.id,
        case_index=index,
        category=case.category,
        guards=case.guards,
        outcome=r.ERROR,
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
        request.node.user_properties.append((r.RECORD_PROPERTY, record.to_dict()))
        return record

    return run
