"""Pytest side of isolation: the per-process sandbox pool and the ``run_case`` fixture the challenge tests call.

``run_case(submission, case)`` draws the case's inputs (the same for every model in a run), computes the float64 truth
once per case in this process, runs the submission in its sandbox, judges the result and attaches the record to the
test report. Speed cases time the submission and the reference baseline (in a sandbox of its own, under the same
limits) in alternation, each timed trial on fresh inputs that are judged like the first.

Before any submission code runs, the run's first process makes the run's private folder and copies every selected
submission into it (``runspace.py``); xdist workers attach to it. Every measurement is the grader's (``sandbox.py``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from plugins.base import records as r
from plugins.base.host import visible_gpus
from plugins.base.wording import speed_words
from plugins.compare import paired
from plugins.compare.comparator import Comparison
from plugins.compare.judge import judge, unrunnable
from plugins.config import GraderConfig, grader_config
from plugins.discover.plugin import SUBMISSIONS_KEY
from plugins.discover.submissions import Submission
from plugins.isolate import failfast, fairness, gpu_cases, runspace, sandbox_report, schedule, verdicts, wire
from plugins.isolate.compile_cache import owner as cache_owner
from plugins.isolate.compile_cache import save as save_compile_caches
from plugins.isolate.measure import time_floor
from plugins.isolate.sandbox import DEFAULT_PIPE_BYTES, Limits, Outcome, Program, Sandbox, SandboxPool, timed_pipe_bytes
from plugins.isolate.truths import TruthStore
from reference.challenges import reference_module
from reference.contract import Case, Expected

# Submissions of GPU runtimes (build, run on the GPU or skip "no GPU") live in gpu_cases; its grades.md section is a
# hook implementation, registered through this plugin module. (A build-only grade is the summary's BUILT_ONLY status.)
pytest_grader_report_sections = gpu_cases.pytest_grader_report_sections


RUN_SPACE_KEY = runspace.RUN_SPACE_KEY
# Inputs and truths kept in a worker's memory: two challenges' worth (at most 19 cases each, plus a speed case's
# trials). Older ones are read back from the run's shared store when needed; keeping all held gigabytes per worker.
KEEP_TRUTHS = 48
PROBES_KEY = pytest.StashKey[dict[tuple[str, str], tuple[int, ...]]]()  # fail fast's probes (pytest_collection_finish)
WARMUP_TRIAL = 1_000_000  # the rng stream of a speed case's untimed warm-up call (timed trials are 0, 1, ...)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """The run's private folder, with every selected submission copied before any of their code runs (the xdist
    controller, or the only process, makes it; workers attach to it)."""
    worker = getattr(config, "workerinput", None)
    if worker and "kernelgrade_run" in worker:
        config.stash[RUN_SPACE_KEY] = runspace.RunSpace.attach(worker["kernelgrade_run"])
        return
    space = runspace.RunSpace.create()
    submissions = config.stash.get(SUBMISSIONS_KEY, [])
    space.copy_submissions([s.folder for s in submissions])
    config.stash[RUN_SPACE_KEY] = space
    report = sandbox_report.SandboxReport(space, submissions, grader_config(config))
    config.pluginmanager.register(report, "kernelgrade-sandbox-report")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: workers use the controller's run folder (its copies, its lock)."""
    node.workerinput["kernelgrade_run"] = str(node.config.stash[RUN_SPACE_KEY].root)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: a worker that died while timing a case leaves its timer; the children it froze thaw now."""
    if error is not None:
        fairness.settle(node.config.stash[RUN_SPACE_KEY].root)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The fail-fast probes of every selected (model, challenge): its first two selected correctness cases in
    case-table order (every process that runs cases collects the whole selection, xdist workers too)."""
    selected: dict[tuple[str, str], list[int]] = {}
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        submission, case = params.get("submission"), params.get("case")
        if isinstance(submission, Submission) and isinstance(case, Case) and not case.is_speed:
            index = reference_module(submission.challenge).CASES.index(case)
            selected.setdefault((submission.model, submission.challenge), []).append(index)
    session.config.stash[PROBES_KEY] = {unit: failfast.probes(indices) for unit, indices in selected.items()}


def pytest_unconfigure(config: pytest.Config) -> None:
    space = config.stash.get(RUN_SPACE_KEY, None)
    if space is not None and space.owner:
        for problem in save_compile_caches(space):  # --compile-cache: kept for the next run (none without it)
            sys.stderr.write(f"kernelgrade: a compile cache was not kept: {problem}\n")
    if space is not None:
        space.remove()  # only in the process that made it


@pytest.fixture(scope="session")
def sandbox_pool(pytestconfig: pytest.Config) -> Iterator[SandboxPool]:
    cfg = grader_config(pytestconfig)
    limits = Limits(
        call_timeout_s=cfg.call_timeout_s,
        memory_bytes=cfg.memory_limit_mb * 2**20,
        device=cfg.device,
        gpu=cfg.gpu,
        gpu_memory_fraction=cfg.gpu_memory_fraction,
        compile_cache=cfg.compile_cache,
    )
    pool = SandboxPool(limits, cfg.repo, pytestconfig.stash[RUN_SPACE_KEY])
    yield pool
    pool.close()


class CaseRunner:
    """Inputs and truths cached per case; one instance per pytest process."""

    def __init__(
        self, cfg: GraderConfig, pool: SandboxPool, probes: dict[tuple[str, str], tuple[int, ...]] | None = None
    ):
        self.cfg, self.pool = cfg, pool
        self._truths: dict[tuple[str, str, int], tuple[dict[str, np.ndarray], Expected]] = {}
        self.shared_truths = TruthStore(pool.space.root / "truths")  # computed once per run, whichever worker is first
        self.truth_seconds = 0.0  # this process's own reference work (drawing inputs, float64 truths), for the records
        self.wait_seconds = 0.0  # waits for a speed slot, the speed phase or another worker's truth, for the records
        # What the current case's time went to beyond the totals above (warm-up, trials, a build), for its record.
        self.parts: dict[str, Any] = {}
        self.timeouts = failfast.ProbeOutcomes(pool.space.root / "timeouts")  # fail fast, shared by the run's workers
        self.probes = probes or {}  # (model, challenge) -> its fail-fast probes (case indices), from the selection
        # Waits for the speed phase (``schedule.wait_for_speed_phase``; True: the GPU's barrier): "" or a note when
        # the wait was cut short, kept in ``late`` for the case's record.
        self.phase_wait: Callable[[bool], str] = lambda on_device: ""
        self.late = ""

    def truth(
        self, reference: ModuleType, case: Case, trial: int = 0, settings: str = ""
    ) -> tuple[dict[str, np.ndarray], Expected]:
        """Inputs and truth of a case; ``trial`` > 0 draws the fresh inputs of a speed case's later timed trials.
        ``settings`` tells apart the truths of one case under task profiles that set the module's SETTINGS
        differently (``ChallengeTask.settings_tag``; the inputs are the same)."""
        key = _truth_key(reference, case, trial, settings)
        found = self._truths.pop(key, None)
        if found is None:
            with self._reference_work():
                inputs = self.draw(reference, case, trial)
                found = (inputs, self.shared_truths.get(key, lambda: reference.expected(case, inputs)))
        self._truths[key] = found  # most recently used last; the oldest go (the shared store still has them)
        while len(self._truths) > KEEP_TRUTHS:
            self._truths.pop(next(iter(self._truths)))
        return found

    def truth_ahead(self, reference: ModuleType, case: Case, trial: int, settings: str = "") -> bool:
        """Compute a later trial's truth into the run's shared store now, for a worker that waits anyway; not into
        this process's memory (twenty trials of the flash-attention backward speed case hold over a gigabyte). False
        when there is nothing to gain: no store, or a truth too large or not plain data to share."""
        key = _truth_key(reference, case, trial, settings)
        if key in self._truths:
            return True
        with self._reference_work():
            return self.shared_truths.prepare(key, lambda: reference.expected(case, self.draw(reference, case, trial)))

    @contextlib.contextmanager
    def _reference_work(self) -> Iterator[None]:
        """Count the block's time as this process's reference work, less its waits for another worker computing the
        same truth (those are waits)."""
        start, waited_before = time.perf_counter(), self.shared_truths.waited
        try:
            yield
        finally:
            waited = self.shared_truths.waited - waited_before
            self.truth_seconds += time.perf_counter() - start - waited
            self.wait_seconds += waited

    def warm_up_inputs(self, reference: ModuleType, case: Case) -> dict[str, np.ndarray]:
        """Inputs of a speed case's untimed warm-up call: a stream of their own, never a timed trial's."""
        return self.draw(reference, case, WARMUP_TRIAL)

    def draw(self, reference: ModuleType, case: Case, trial: int = 0) -> dict[str, np.ndarray]:
        # The seed mixes the run's seed with the case: fresh inputs per run, identical for every model in it.
        stream = [self.cfg.seed, zlib.crc32(f"{reference.CHALLENGE.id}/{case.id}".encode())]
        return reference.make_inputs(case, np.random.default_rng(stream + ([trial] if trial else [])))

    @contextlib.contextmanager
    def speed_lock(self, gpu: bool = True) -> Iterator[set[int] | None]:
        """A speed slot of the run, across xdist workers (a lock no submission can reach): on GPU runs a timed pair
        that uses the GPU (``gpu``) holds its GPU's one slot; every other pair holds one of the CPU slots
        (``schedule.cpu_speed_slots``: one per pair of cores left beside the GPUs), so NumPy cases are timed beside a
        GPU case and beside each other. The wait for it is the grader's time, kept apart in the record. While it is
        held every other child of the run that is not answering a request is frozen (``fairness.py``); yields the
        cores the pair is pinned to (a CPU slot's own pair; a GPU slot the cores no CPU slot has), or None where the
        host has too few cores to give each slot its own. This worker's own thread is pinned there too while it holds
        the slot: the thread that samples a child's memory during each call is started from it, and so shares the
        timed pair's cores (slowing both sides of the pair alike) in every run, instead of landing on another pair's
        cores in a busy run and on an idle one in a run of one worker."""
        start = time.perf_counter()
        device = (self.cfg.gpu or "") if gpu and self.cfg.on_gpu else ""
        slots = self.cpu_slots
        with self.pool.space.speed_lock(device, slots) as slot:
            self.wait_seconds += time.perf_counter() - start
            cores = fairness.slot_cores(slot, slots) if slot is not None else fairness.spare_cores(slots)
            with fairness.timing(self.pool.space.root), fairness.this_thread_on(cores):
                yield cores

    @contextlib.contextmanager
    def warm_up_lock(self) -> Iterator[set[int] | None]:
        """The GPU's slot held shared, beside other warm-ups and never beside a timed case (``gpu_cases.warm_up``);
        yields the cores that no CPU slot has (None: none are spare), where the warming child's own CPU work (a
        Triton compile takes seconds) cannot slow a timed CPU pair."""
        start = time.perf_counter()
        with self.pool.space.speed_lock(self.cfg.gpu or "", self.cpu_slots, shared=True):
            self.wait_seconds += time.perf_counter() - start
            yield fairness.spare_cores(self.cpu_slots)

    @functools.cached_property
    def gpus(self) -> int:
        """The GPUs this run's children may use (0 on a CPU run): each has a speed slot and keeps a core."""
        return len(visible_gpus()) if self.cfg.on_gpu else 0

    @functools.cached_property
    def cpu_slots(self) -> int:
        """The run's CPU speed slots (``schedule.cpu_speed_slots``), a core kept per GPU."""
        return schedule.cpu_speed_slots(self.gpus)

    @functools.cached_property
    def pipe_bytes(self) -> int:
        """The capacity of a timed pair's pipes in this run (``sandbox.timed_pipe_bytes``), for as many pairs as it may
        time at once: one per CPU speed slot and one per GPU."""
        return timed_pipe_bytes(self.cpu_slots + self.gpus)

    def not_timed(self, submission: Submission, case: Case, index: int, ended: bool = False) -> r.CaseRecord | None:
        """The record of a speed case not timed because its submission failed a correctness case of this run
        (``verdicts.py``); None when it is to be timed (none failed, or ``--time-failed``: the failed cases are then
        named in the record's details). ``ended``: before the speed phase, while cases may still run, only cases that
        ended failed count (after it, a case that never ended counts too: its worker died)."""
        root = self.pool.space.root
        wrong = verdicts.wrong_in(root, submission.model, submission.challenge, running_fails=not ended)
        if not wrong:
            return None
        if self.cfg.time_failed:
            self.parts["timed_although_wrong_in"] = ", ".join(wrong)
            return None
        return unrunnable(submission, case, index, verdicts.not_timed_message(wrong), r.NOT_TIMED)

    def speed_phase(
        self,
        submission: Submission,
        case: Case,
        index: int,
        sandboxes: list[Sandbox],
        on_device: bool,
        meanwhile: Callable[[], bool] | None = None,
    ) -> r.CaseRecord | None:
        """Before a speed case takes its slot: its children started (the worker waits anyway, and a start in the slot
        held it for 4 to 6 s per GPU case), then the wait for the speed phase (``on_device``: a case timed on the GPU
        waits only for the correctness cases on the GPU), doing ``meanwhile``'s steps while it lasts (each returns
        False once there is no more), then the verdicts of the submission's correctness cases, all in by then.
        Returns the "not timed" record of a submission found wrong, else None."""
        for sandbox in sandboxes:
            sandbox.start_ahead()
        began, truth_before, wait_before = time.perf_counter(), self.truth_seconds, self.wait_seconds
        self.late = self.phase_wait(on_device, meanwhile)
        # The wait is what the steps did not take (their own truth work, and their waits, are counted by truth_ahead).
        self.wait_seconds = wait_before + time.perf_counter() - began - (self.truth_seconds - truth_before)
        return self.not_timed(submission, case, index)

    def run(self, submission: Submission, case: Case) -> r.CaseRecord:
        """One case's record; once the submission timed out on both probes of this challenge (its first two selected
        cases), a timeout without starting the child (:mod:`plugins.isolate.failfast`) unless ``--no-fail-fast``."""
        model, challenge = submission.model, submission.challenge
        index = reference_module(challenge).CASES.index(case)
        unit_probes = self.probes.get((model, challenge), ())
        if self.cfg.fail_fast and self.timeouts.gave_up(model, challenge, unit_probes, index):
            return unrunnable(submission, case, index, failfast.MESSAGE, r.TIMEOUT)
        record = self._run(submission, case)
        self.timeouts.note(model, challenge, unit_probes, index, record.outcome)
        return record

    def _run(self, submission: Submission, case: Case) -> r.CaseRecord:
        reference = reference_module(submission.challenge)
        index = reference.CASES.index(case)
        task = submission.challenge_task
        if submission.no_code:  # nothing to build or run: no sandbox is started
            return unrunnable(submission, case, index, submission.no_code, r.NO_CODE)
        # A case runs when the entry points it calls exist: a missing one fails only the cases that call it.
        if absent := not_provided(submission, case):
            return unrunnable(submission, case, index, absent)
        case = task.apply(case)  # the profile's settings, if the module has any, in the case's params
        if gpu_cases.device_timed(submission):  # run on the GPU, speed timed in the child by CUDA events
            return gpu_cases.run_gpu_case(self, reference, submission, case, index, self.speed_lock)
        if case.is_speed and (refused := self.not_timed(submission, case, index, ended=True)):
            return refused  # before any truth is computed or child started for it
        inputs, expected = self.truth(reference, case, settings=task.settings_tag)
        own = cache_owner(submission.model, submission.challenge)  # never the baseline's (compile_cache.py)
        program = Program(reference.__name__, submission.entries, submission.folder, submission.runtime, own)
        sandbox = self.pool.get(program)
        if not case.is_speed:
            caps = wire.case_caps(inputs, tuple(expected.values.values()))  # what an answer may hold, by the truth
            return judge(submission, case, index, expected, send(sandbox, reference, case, inputs, caps))
        reference_cache = cache_owner(None, submission.challenge)
        baseline = self.pool.get(Program(reference.__name__, _own_entries(reference), None, cache=reference_cache))
        truth, settings = self._truth_of(submission), task.settings_tag
        for trial in range(self.cfg.speed_repeats):  # the trials' truths before the phase, not in it
            truth(reference, case, trial)
        later = iter(range(self.cfg.speed_repeats, self.cfg.speed_max_trials))  # and those of later trials meanwhile

        def ahead() -> bool:
            trial = next(later, None)
            return trial is not None and self.truth_ahead(reference, case, trial, settings)

        if refused := self.speed_phase(submission, case, index, [sandbox, baseline], on_device=False, meanwhile=ahead):
            return refused
        return self._race(submission, case, index, reference, sandbox, baseline)

    def _truth_of(self, submission: Submission) -> Callable[..., tuple[dict[str, np.ndarray], Expected]]:
        """``truth`` under the submission's task settings (speed trials draw through it too)."""
        return functools.partial(self.truth, settings=submission.challenge_task.settings_tag)

    def _race(
        self, submission: Submission, case: Case, index: int, reference: ModuleType, sandbox: Sandbox, baseline: Sandbox
    ) -> r.CaseRecord:
        """Time the submission and the reference baseline in paired trials: each trial draws fresh inputs (memoised
        answers gain nothing), sends them to both, one right after the other (which one first alternates), and judges
        the submission's answer; a median under what the case's arithmetic allows (``measure.time_floor``) is wrong.
        Trials go on past ``--speed-repeats`` until the per-trial ratios' interval is narrow (``paired.TrialPlan``)."""
        mine: list[Outcome] = []
        theirs: list[Outcome] = []
        truth = self._truth_of(submission)  # the first --speed-repeats trials' are in already (_run)
        plan = paired.TrialPlan(self.cfg.speed_repeats, self.cfg.speed_max_trials)
        stopped: str | None = None
        with self.speed_lock(sandbox.gpu or baseline.gpu) as cores, _timed([sandbox, baseline], cores, self.pipe_bytes):
            began = time.perf_counter()
            for _ in range(self.cfg.speed_warmup):  # untimed: imports, caches, compiles and first-call costs of both
                warm = self.warm_up_inputs(reference, case)
                send(sandbox, reference, case, warm)
                send(baseline, reference, case, warm)
            self.parts["warmup_s"] = time.perf_counter() - began
            began = time.perf_counter()
            while stopped is None:
                inputs, expected = truth(reference, case, len(mine))
                caps = wire.case_caps(inputs, tuple(expected.values.values()))
                pair = _paired_trial(sandbox, baseline, reference, case, inputs, caps, first_mine=len(mine) % 2 == 0)
                graded = judge(submission, case, index, expected, pair[0])
                if not graded.passed:
                    if mine:
                        graded.message = f"timed trial {len(mine) + 1} (fresh inputs): {graded.message}"
                    return graded
                mine.append(pair[0])
                theirs.append(pair[1])
                stopped = plan.stop(_times(mine), _times(theirs))
            self.parts["trials_s"] = time.perf_counter() - began
        self.parts["timed_s"] = sum(_times(mine) + _times(theirs))
        for outcomes in (mine, theirs):
            if outcomes[0].calls:
                outcomes[0].calls[0].update(times=_times(outcomes), seconds=statistics.median(_times(outcomes)))
        timed_baseline = theirs[0] if all(o.status == "ok" for o in theirs) else None
        record = judge(submission, case, index, truth(reference, case)[1], mine[0], timed_baseline)
        if record.speed:
            record.speed["stopped"] = stopped
            record.message = speed_words(record.speed)
        return _below_floor(record, time_floor(reference, case, self.cfg.device))


def _truth_key(reference: ModuleType, case: Case, trial: int, settings: str) -> tuple[str, str, int]:
    """A truth's key in the caches: challenge, case (with its task settings' tag, if any), trial."""
    return (reference.CHALLENGE.id, case.id + (f"[{settings}]" if settings else ""), trial)


def _paired_trial(
    sandbox: Sandbox,
    baseline: Sandbox,
    reference: ModuleType,
    case: Case,
    inputs: dict[str, np.ndarray],
    caps: wire.Caps,
    first_mine: bool,
) -> tuple[Outcome, Outcome]:
    """One paired trial on the same inputs: (the submission's outcome, the reference's), sent in the order asked."""
    if first_mine:
        mine = send(sandbox, reference, case, inputs, caps)
        return mine, send(baseline, reference, case, inputs, caps)
    theirs = send(baseline, reference, case, inputs, caps)
    return send(sandbox, reference, case, inputs, caps), theirs


def _times(outcomes: list[Outcome]) -> list[float]:
    """Each outcome's measured call time (NaN for one without a call: a failed baseline request)."""
    return [float(o.calls[0]["seconds"]) if o.calls else float("nan") for o in outcomes]


def send(
    sandbox: Sandbox, reference: ModuleType, case: Case, inputs: dict[str, np.ndarray], caps: wire.Caps | None = None
) -> Outcome:
    """One request of a case: the inputs that cross to the child (``reference.child_inputs``, default all of them) and
    the grader's services the driver may call (``reference.services``, default none), both from the case's full
    inputs; arrays that serve the grader only (a model the grader runs and counts) never reach the child. The child's
    messages are read under ``caps`` (``wire.case_caps``)."""
    crossing = getattr(reference, "child_inputs", None)
    served = getattr(reference, "services", None)
    child = crossing(case, inputs) if crossing else inputs
    return sandbox.run(child, dict(case.params), {}, caps, services=served(case, inputs) if served else None)


@contextlib.contextmanager
def _timed(sandboxes: list[Sandbox], cores: set[int] | None, pipe_bytes: int) -> Iterator[None]:
    """While the pair is timed: its children on their slot's own cores (where it has them), and their pipes widened to
    ``pipe_bytes`` (``sandbox.timed_pipe_bytes``); both given back after."""
    try:
        for sandbox in sandboxes:
            sandbox.set_pipes(pipe_bytes)
            if cores is not None:
                sandbox.pin(cores)
        yield
    finally:
        for sandbox in sandboxes:
            sandbox.set_pipes(DEFAULT_PIPE_BYTES)
            if cores is not None:
                sandbox.pin(None)


def _below_floor(record: r.CaseRecord, floor: tuple[float, str] | None) -> r.CaseRecord:
    """A passed speed case whose median is under the floor of its arithmetic is wrong: the time cannot be real."""
    if floor is None or not record.passed or not record.speed or record.speed["median_s"] >= floor[0]:
        return record
    median, (least, how) = record.speed["median_s"], floor
    message = (
        f"time floor: median {median * 1e3:.3f} ms is under the least this arithmetic can take, "
        f"{least * 1e3:.3f} ms ({how})"
    )
    record.outcome, record.message = r.WRONG, message
    floor_check = Comparison("time floor", False, message, bound_ratio=least / median, total=1, mismatches=1)
    record.checks.append(floor_check.to_dict())
    return record


def _own_entries(reference: ModuleType) -> tuple[tuple[str, str], ...]:
    """What speed cases are timed against: ``(entry point, the reference module's function)`` pairs, as the module's
    ``SPEED_BASELINE`` names them (the child looks each function up in the module)."""
    return tuple(reference.SPEED_BASELINE.items())


def not_provided(submission: Submission, case: Case) -> str:
    """``not provided: verify_and_accept`` when an entry point the case calls (``Case.calls``, else every entry point
    of the submission's contract variant) was found in no file; "" when the case can run. The files that could not be
    read (a syntax error) are said once per challenge in the report, not in every case's message."""
    challenge = reference_module(submission.challenge).CHALLENGE
    calls = case.calls or challenge.entry_points_of(submission.challenge_task.contract)
    absent = [name for name in calls if name in submission.missing]
    if not absent:
        return ""
    why = f" ({words})" if (words := gpu_cases.missing_message(submission)) else ""
    return f"not provided: {', '.join(absent)}{why}"


@pytest.fixture(scope="session")
def case_runner(pytestconfig: pytest.Config, sandbox_pool: SandboxPool) -> CaseRunner:
    runner = CaseRunner(grader_config(pytestconfig), sandbox_pool, pytestconfig.stash.get(PROBES_KEY, {}))
    runner.phase_wait = functools.partial(schedule.wait_for_speed_phase, pytestconfig)
    return runner


def _run_noted(runner: CaseRunner, submission: Submission, case: Case) -> r.CaseRecord:
    """Run a case; a correctness case's verdict is noted for the speed phase (``verdicts.py``), as running first, so
    that a worker that dies during it leaves a failure behind."""
    if case.is_speed:
        return runner.run(submission, case)
    root, index = runner.pool.space.root, reference_module(submission.challenge).CASES.index(case)
    verdicts.started(root, submission.model, submission.challenge, index, case.id)
    record = runner.run(submission, case)
    verdicts.ended(root, record)
    return record


@pytest.fixture
def run_case(request: pytest.FixtureRequest, case_runner: CaseRunner) -> Callable[[Submission, Case], r.CaseRecord]:
    """Run one case of one submission; the record travels on the report. Speed cases skip under ``--no-speed``."""

    def run(submission: Submission, case: Case) -> r.CaseRecord:
        if case.is_speed and not case_runner.cfg.measure_speed:
            pytest.skip("speed not measured (--no-speed)")
        # A folder without code is "no code" on every machine: no nvcc or no GPU changes nothing about that.
        reason = None if submission.no_code else gpu_cases.skip_reason(submission, case, case_runner.cfg)
        if reason:  # the machine's reason, not the user's choice: recorded, so the reports can say why nothing ran
            index = reference_module(submission.challenge).CASES.index(case)
            skipped = unrunnable(submission, case, index, reason, r.SKIPPED)
            skipped.nodeid = request.node.nodeid
            request.node.user_properties.append((r.RECORD_PROPERTY, skipped.to_dict()))
            pytest.skip(reason)
        began_at = time.time()  # wall clock, for the run's timeline (start-up, idle workers, the tail)
        start, truth_before, wait_before = time.perf_counter(), case_runner.truth_seconds, case_runner.wait_seconds
        starts_before = case_runner.pool.start_seconds
        case_runner.parts, case_runner.late = {}, ""
        record = _run_noted(case_runner, submission, case)
        record.nodeid = request.node.nodeid
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        record.ran_on = {"host": socket.gethostname(), "worker": worker, "gpu": case_runner.cfg.gpu}
        record.timing = {  # case_s is the whole case in its worker; truth_s, wait_s and start_s are parts of it
            "case_s": round(time.perf_counter() - start, 6),
            "truth_s": round(case_runner.truth_seconds - truth_before, 6),
            "wait_s": round(case_runner.wait_seconds - wait_before, 6),
            "start_s": round(case_runner.pool.start_seconds - starts_before, 6),  # starting sandbox children
            "began_at": round(began_at, 3),
        } | {k: round(v, 6) if isinstance(v, float) else v for k, v in case_runner.parts.items()}
        if case_runner.late:
            record.ran_on["speed_phase"] = case_runner.late
        # What the submission printed shows beside the test in pytest's output and in report.html (escaped there).
        for stream in ("stdout", "stderr"):
            if getattr(record, stream):
                request.node.add_report_section("call", f"submission {stream}", getattr(record, stream))
        request.node.user_properties.append((r.RECORD_PROPERTY, record.to_dict()))
        return record

    return run
