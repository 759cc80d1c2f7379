"""How a grading run spreads over xdist workers: each submission's cases together, then speed cases in a phase of their
own, with the workers' own threads capped.

Measured on the 16-core H200 host before this module (issue 9): ``-n 16`` was slower than ``-n 1``. xdist's default
``load`` scheduling deals consecutive chunks of the test list to every worker, so each worker met nearly every
submission and started a child for each (a Python interpreter importing NumPy and often torch, per worker and
submission), computed the float64 truth of nearly every case again, and ran its NumPy reference work with as many BLAS
threads as the host has cores, sixteen times over. Timed cases ran while other workers did correctness work beside them.

What this module does instead, for ``-n N`` (xdist's ``--dist load``, the default; other ``--dist`` modes are left to
xdist):

- **Submissions as units.** The cases of one (model, challenge) go to one worker as one unit, so its child starts once.
  Units go out longest first by the last run's case times (the newest finished run's, found through
  ``pytest_grader_last_results``), else alternating between challenges; submissions of one challenge start at
  different cases, so workers do not queue for the same shared truth (:func:`interleave`).
- **Stealing at the tail.** Once every unit has gone out, a worker that runs dry takes the back part of the longest
  queue left on another worker (xdist's ``steal`` command, which removes queued items only if none has started), so the
  run ends when the last case ends, not when the slowest queue does. Queues are weighed in seconds: the last run's case
  times where known, else this run's mean time per case of that submission; a steal must be worth two starts of the
  submission's sandbox child, as the last run measured them (a child that imports torch and creates a CUDA context
  took 4 to 6 s on the H200 host under load; one that imports NumPy alone, half a second), else as a child of its
  kind takes (:data:`GPU_CHILD_START_S`, :data:`CHILD_START_S`). A case's cost includes the restart of a child that the
  case before it crashed: a submission that faults on every case pays a start per case. The part taken goes to the idle
  worker whose held last item is expected to end first.
- **A speed phase.** Speed cases are held back until every correctness unit has been handed out. A worker starts a speed
  case only once every correctness case of the run has finished, except a case timed on the device (CUDA events), which
  waits only for every correctness case on the GPU (two files the controller writes into the run's private folder): it
  needs the GPU to itself, not the CPUs (the GPU units, being the longest, go out first when an earlier run timed them).
  Speed cases then hold a speed slot by what they time: a case whose child runs on the GPU holds its GPU's one slot; a
  NumPy pair holds one of the CPU slots, one per pair of cores (:func:`cpu_speed_slots`), pinned to them: CPU and GPU
  cases are timed at the same time, and a timed pair never shares its cores with another. A submission that failed a
  correctness case of the run is not timed at all (``verdicts.py``), and its speed case does not wait for the phase;
  the scheduler counts it as taking no time (:class:`WrongUnits`), so in a first run, with no earlier times, such
  cases fill the slot behind a held speed case instead of a case that will be timed. A worker that waits for the
  phase computes the truths of its case's later trials meanwhile (``CaseRunner.truth_ahead``).
- **Threads.** Each worker's own BLAS and OpenMP pools get ``cores // workers`` threads (children are single-threaded
  already, see ``sandbox.THREAD_VARS``).

Without xdist, the same order holds: speed cases are collected last.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from plugins.base.host import host_cores
from plugins.config import grader_config
from plugins.isolate import gpu_rung, verdicts
from plugins.isolate.runspace import RUN_SPACE_KEY

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
BARRIER_NAME = "correctness.done"  # every correctness case of the run has finished: CPU speed cases may start
GPU_BARRIER_NAME = "gpu-correctness.done"  # every one on the GPU has: speed cases timed on the device may start
BARRIER_KEY = "kernelgrade_speed_barrier"
GPU_BARRIER_KEY = "kernelgrade_gpu_speed_barrier"
# A speed case of a submission whose child this worker has warm is taken before the longest one left when it is at
# least this share of it: a child's start (0.5 to 5 s) is worth less than the tail a much longer case would make.
WARM = 0.8
BARRIER_TIMEOUT_S = 1800.0  # past this a speed case runs anyway, and says it ran before correctness had finished
# What a worker pays to take over part of another's submission: starting its own sandbox child. The last run's records
# say what that took per submission (``start_s``, see start_costs); without them, a second (a Python interpreter
# importing NumPy and torch on the CI machine). A steal moves work only when the queue left is worth two such starts.
CHILD_START_S = 1.0
# The same for a child handed the GPU (torch imported, a CUDA context made): a challenge's median start took 3.8 to
# 5.2 s on the H100 host with 16 workers (2026-12-07). Counted as a second, a first run there (no earlier records)
# split GPU submissions between workers as if moving them were cheap: 49 GPU children started for 21 submissions.
GPU_CHILD_START_S = 4.0


class Classified(NamedTuple):
    """What the scheduler needs of one collected test: its unit (``model/challenge``; a test that grades nothing is a
    unit of its own), its challenge, whether it is a speed case, the seconds it took in the last run (None: unknown),
    and whether its child runs on the GPU in this run."""

    group: str
    family: str
    speed: bool
    cost: float | None
    gpu: bool = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Speed cases last (stable otherwise): timed runs then follow correctness work instead of sharing the machine."""
    items.sort(key=lambda item: item.get_closest_marker("speed") is not None)


def _ours(config: pytest.Config) -> bool:
    return config.getvalue("dist") == "load" and config.pluginmanager.hasplugin("dsession")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Controller of an xdist run: cap the BLAS/OpenMP threads its workers will inherit (set before they start)."""
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not isinstance(workers, int) or workers < 1:
        return
    per_worker = str(max(1, host_cores() // workers))
    for name in THREAD_VARS:
        os.environ.setdefault(name, per_worker)  # a user's own setting wins


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each worker where the end of the correctness phase will be announced (only under our scheduler)."""
    if _ours(node.config):
        root = node.config.stash[RUN_SPACE_KEY].root
        node.workerinput[BARRIER_KEY] = str(root / BARRIER_NAME)
        node.workerinput[GPU_BARRIER_KEY] = str(root / GPU_BARRIER_NAME)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if not _ours(config):
        return None
    collector = config.pluginmanager.get_plugin("kernelgrade-records")
    # The last finished run's case times say which units are long (made before this run moves that run to history/).
    last = config.hook.pytest_grader_last_results(config=config)
    previous = earlier_cases(last) if last else []
    known = case_costs(previous)
    on_gpu = grader_config(config).on_gpu

    def classify(nodeid: str) -> Classified:
        graded = collector.nodes.lookup(nodeid) if collector is not None else None
        if graded is None:
            return Classified(nodeid, nodeid, False, None)
        sub, case = graded.submission, graded.case.id
        cost = known.get((sub.model, sub.challenge, case), known.get((sub.challenge, case)))
        gpu = on_gpu and gpu_rung.needs_gpu(sub)  # its children get the GPU: its cases hold back device-timed speed
        return Classified(f"{sub.model}/{sub.challenge}", sub.challenge, graded.case.is_speed, cost, gpu)

    from xdist.workermanage import parse_tx_spec_config

    workers = len(parse_tx_spec_config(config))
    barrier = config.stash[RUN_SPACE_KEY].root / BARRIER_NAME
    gpu_barrier = barrier.with_name(GPU_BARRIER_NAME)
    wrong = WrongUnits(collector.records if collector is not None else {})
    return SubmissionScheduling(workers, classify, barrier, config, start_costs(previous), gpu_barrier, wrong)


class WrongUnits:
    """Whether a unit (``model/challenge``) has a failed correctness case among the cases reported so far
    (``verdicts.failed``, from the controller's records; those already read are not read again): its speed case will
    not be timed, so it takes no time."""

    def __init__(self, records: dict[Any, Any]):
        self.records, self.read, self.units = records, 0, set()

    def __call__(self, group: str) -> bool:
        if len(self.records) > self.read:
            for record in itertools.islice(self.records.values(), self.read, None):
                if verdicts.failed(record):
                    self.units.add(f"{record.model}/{record.challenge}")
            self.read = len(self.records)
        return group in self.units


def earlier_cases(results: Path) -> list[Any]:
    """The case records of an earlier run's ``results.json`` (read once, for :func:`case_costs` and
    :func:`start_costs`); empty when the file is missing or unreadable."""
    try:
        cases = json.loads(results.read_text()).get("cases") or []
    except (OSError, ValueError, AttributeError):
        return []
    return cases if isinstance(cases, list) else []


def start_costs(cases: list[Any]) -> dict[str, float]:
    """Seconds to start a submission's sandbox child, from an earlier run's case records: keyed ``model/challenge``
    (the scheduler's unit name; the largest ``start_s`` among its cases: its unit's first) and ``challenge`` (the
    median over its submissions, for a model the earlier run did not grade)."""
    per_unit: dict[tuple[str, str], float] = {}
    for case in cases:
        try:
            seconds = float(case["timing"].get("start_s") or 0.0)
            key = (str(case["model"]), str(case["challenge"]))
        except (TypeError, KeyError, ValueError, AttributeError):
            continue
        if seconds > 0:
            per_unit[key] = max(per_unit.get(key, 0.0), seconds)
    costs = {f"{model}/{challenge}": seconds for (model, challenge), seconds in per_unit.items()}
    per_challenge: dict[str, list[float]] = {}
    for (_, challenge), seconds in per_unit.items():
        per_challenge.setdefault(challenge, []).append(seconds)
    return costs | {challenge: statistics.median(values) for challenge, values in per_challenge.items()}


def case_costs(cases: list[Any]) -> dict[tuple, float]:
    """Seconds per case from an earlier run's case records: keyed (model, challenge, case) for that model, and
    (challenge, case) with the median over models for a model the earlier run did not grade. Waits are left out, and so
    is the first start of a submission's child in each worker (it belongs to whichever case came first there); a later
    start in the same worker is the case's: the child was restarted after the case before it crashed or broke a rule,
    which it will do again. Records older than ``timing`` give nothing."""
    costs: dict[tuple, float] = {}
    per_case: dict[tuple[str, str], list[float]] = {}
    first_start: set[tuple[str, str, str]] = set()  # (model, challenge, worker) whose first start was met
    timed = [c for c in cases if isinstance(c, dict) and isinstance(c.get("timing"), dict)]
    for case in sorted(timed, key=lambda c: _number(c["timing"].get("began_at"))):
        timing = case["timing"]
        try:
            seconds = float(timing["case_s"]) - float(timing.get("wait_s") or 0.0)
            start = float(timing.get("start_s") or 0.0)
            key = (str(case["model"]), str(case["challenge"]), str(case["case"]))
        except (TypeError, KeyError, ValueError):
            continue
        worker = (*key[:2], str((case.get("ran_on") or {}).get("worker")))
        if start > 0 and worker not in first_start:
            first_start.add(worker)
            seconds -= start
        costs[key] = max(seconds, 0.0)
        per_case.setdefault(key[1:], []).append(costs[key])
    costs.update({key: statistics.median(values) for key, values in per_case.items()})
    return costs


def _number(value: Any) -> float:
    """A record's number, 0 where it is missing or not one (records of older runs)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def cpu_speed_slots(reserved: int = 0) -> int:
    """Timed CPU cases that may run at once in the speed phase: one per pair of cores left after ``reserved`` (a core
    per GPU slot, whose timed child waits on its device), at least one. A timed pair (the submission's child and the
    reference, single-threaded, one answering while the other is frozen) is pinned to its slot's two cores: one for
    the pair, one for its worker (its judging between calls, the thread that samples the child's memory during each).
    One core per slot was tried (issue 19, second round; H100 host, 15 slots beside the GPU): the walls did not move,
    since the GPU's slot was the tail, and two runs' credited ratios then differed by 7.4% in the median case and 21.8%
    at most, against 1.8% and 9.4% with pairs of cores."""
    return max(1, (host_cores() - reserved) // 2)


def wait_for_speed_phase(config: pytest.Config, gpu: bool = False, meanwhile: Callable[[], bool] | None = None) -> str:
    """In a worker, before a speed case: wait until every correctness case of the run has finished, or for a case timed
    on the GPU with CUDA events (``gpu``: both sides in the submission's child, ``Runtime.timing`` "device") every
    correctness case on the GPU: it needs the GPU to itself, not the CPUs. A pair the grader times (a child on the GPU
    against the reference's NumPy child) waits for every one. Returns "" or a note for the record when the wait was cut
    short. While it waits, ``meanwhile`` is called for a step of the case's own preparation (the truths of its later
    trials) until it returns False: a worker that holds a speed case has no other work, so its core is free."""
    path = getattr(config, "workerinput", {}).get(GPU_BARRIER_KEY if gpu else BARRIER_KEY)
    if not path:
        return ""
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return f"timed while correctness cases still ran (waited {BARRIER_TIMEOUT_S:.0f} s for them)"
        if meanwhile is None or not meanwhile():
            meanwhile = None
            time.sleep(0.05)
    return ""


def interleave(groups: dict[tuple[str, str], list[int]], costs: dict[int, float] | None = None) -> list[list[int]]:
    """Units (one per submission, keyed by (challenge, submission)) in the order they go out.

    Submissions of one challenge share their cases' truths, computed once per run by whichever worker needs one first
    while the others wait for it (``truths.py``). So the k-th submission of a challenge starts its case list k/n of the
    way in: workers on the same challenge compute different truths side by side instead of queueing for the same one.

    With ``costs`` (seconds per item, from the last run) the units go out longest first, so that the run does not end
    with one worker alone on a long unit, and a case that takes a third of its unit or more runs first in it: a case
    cannot be split, so the longest ones must start early (the rest of a unit can still be stolen at the tail).
    Without costs, units alternate between challenges, largest challenge first."""
    families: dict[str, list[list[int]]] = {}
    for (family, _), indices in groups.items():
        families.setdefault(family, []).append(indices)
    queues = []
    for units in sorted(families.values(), key=lambda us: -sum(map(len, us))):
        units.sort(key=len, reverse=True)
        rotated = [u[(k * len(u)) // len(units) :] + u[: (k * len(u)) // len(units)] for k, u in enumerate(units)]
        queues.append(rotated)
    if costs is not None:
        units = []
        for unit in (u for queue in queues for u in queue):
            longest = max(unit, key=lambda i: costs[i])
            if costs[longest] * 3 >= sum(costs[i] for i in unit):
                unit = [longest] + [i for i in unit if i != longest]
            units.append(unit)
        return sorted(units, key=lambda u: -sum(costs[i] for i in u))
    order: list[list[int]] = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


def known_costs(costs: dict[int, float | None], items: set[int]) -> dict[int, float] | None:
    """The items' costs when the last run timed at least half of them (the rest get the median: a case skipped then,
    say a CUDA case on a machine without a GPU, or a model added since); else None, and units are ordered by their case
    counts."""
    timed = [costs[i] for i in items if costs.get(i) is not None]
    if not items or 2 * len(timed) < len(items):
        return None
    fill = statistics.median(timed)
    return {i: costs[i] if costs.get(i) is not None else fill for i in items}  # type: ignore[misc]


class SubmissionScheduling:
    """xdist scheduler (its ``Scheduling`` protocol): correctness units per submission, then the speed cases.

    xdist runs a worker's last queued item only once it has a next item or is told to shut down (the next item decides
    the teardown), so every worker always gets either more work or the shutdown: never a held-back queue. The one
    wait is for the answer to a steal, a message round trip."""

    def __init__(
        self,
        numnodes: int,
        classify: Callable[[str], Classified],
        barrier: Path,
        config: pytest.Config | None = None,
        start_costs: dict[str, float] | None = None,
        gpu_barrier: Path | None = None,
        wrong: Callable[[str], bool] | None = None,
    ):
        self.numnodes = numnodes
        self.wrong = wrong or (lambda group: False)  # a unit already wrong in this run: its speed case is not timed
        self.gpu_barrier = gpu_barrier  # written once no correctness case on the GPU is left (None: not written)
        self.start_costs = start_costs or {}  # seconds to start a child, by "model/challenge" and by challenge
        self.config = config
        self.classify = classify
        self.barrier = barrier
        self.node2collection: dict[Any, list[str]] = {}
        self.node2pending: dict[Any, list[int]] = {}
        self.node2groups: dict[Any, set[str]] = {}
        self.collection: list[str] | None = None
        self.units: list[list[int]] = []  # correctness units not yet sent, largest first
        self.speed: list[int] = []  # speed items not yet sent
        self.correctness_left: set[int] = set()  # correctness items not yet finished
        self.group_of: dict[int, str] = {}
        self.family_of: dict[int, str] = {}
        self.is_speed: set[int] = set()
        self.on_gpu: set[int] = set()  # items whose child runs on the GPU
        self.costs: dict[int, float] = {}  # seconds per item from the last run, where it timed them
        self.speed_costs: dict[int, float] = {}  # the same for the speed items (longest first, _next_speed)
        self.seen: dict[str, list[float]] = {}  # this run's case durations per submission
        self.stealing: Any = None  # the worker a steal was asked of, until it answers
        self.opened = False  # the speed phase's barrier is written (correctness finished, or opened early)
        self.refused: set[Any] = set()  # workers whose last steal took nothing (an item had started): not again until
        # they report a finished case, else the same request would go back and forth

    # -- the protocol's state --------------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Any]:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.units or self.speed or self.stealing is not None:
            return False
        return all(len(pending) < 2 for pending in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.units or self.speed or any(self.node2pending.values()))

    def add_node(self, node: Any) -> None:
        self.node2pending[node] = []
        self.node2groups[node] = set()

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        if self.collection is not None and list(collection) != self.collection:
            return  # a replacement worker that collected something else gets no work (xdist's load does the same)
        self.node2collection[node] = list(collection)

    # -- progress --------------------------------------------------------------------------------------------------
    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)
        if item_index not in self.is_speed:
            self.seen.setdefault(self.group_of[item_index], []).append(duration)
        self.refused.discard(node)  # it has moved on: it may be asked again
        self._finished(item_index)
        self.check_schedule(node)

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        self._put_back([self.collection.index(item)])
        for node in self.nodes:
            self.check_schedule(node)

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        """The answer to a steal: the items it took out of ``node``'s queue (none when one had started meanwhile) go
        out again as a unit, to the worker that will start them first. Every worker that has run dry holds one last
        item, which it runs before anything sent now, so that is the one whose held item is expected to take least."""
        self.stealing = None
        taken = set(indices)
        if node in self.node2pending:
            self.node2pending[node] = [i for i in self.node2pending[node] if i not in taken]
        if indices:
            self.units.insert(0, list(indices))
        else:
            self.refused.add(node)
        for other in sorted(self.nodes, key=self._held_cost):
            self.check_schedule(other)

    def remove_node(self, node: Any) -> str | None:
        """A worker finished or crashed: a crash's running item is reported by xdist, the rest of its queue goes
        back."""
        pending = self.node2pending.pop(node)
        self.node2groups.pop(node, None)
        if self.stealing is node:  # it will not answer
            self.stealing = None
        if not pending:
            return None
        assert self.collection is not None
        crashed = pending.pop(0)
        self._finished(crashed)
        self._put_back(pending)
        for other in self.nodes:
            self.check_schedule(other)
        return self.collection[crashed]

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self.check_schedule(node)
            return
        collections = list(self.node2collection.values())
        if any(c != collections[0] for c in collections[1:]):
            self._collections_differ()  # nothing is sent; the run ends with every selected case not run
            return
        self.collection = collections[0]
        groups: dict[tuple[str, str], list[int]] = {}
        costs: dict[int, float | None] = {}
        for index, nodeid in enumerate(self.collection):
            group, family, speed, costs[index], gpu = self.classify(nodeid)
            self.group_of[index], self.family_of[index] = group, family
            if gpu:
                self.on_gpu.add(index)
            if speed:
                self.is_speed.add(index)
                self.speed.append(index)
            else:
                groups.setdefault((family, group), []).append(index)
                self.correctness_left.add(index)
        self.costs = known_costs(costs, self.correctness_left) or {}
        self.speed_costs = known_costs(costs, set(self.speed)) or {}
        self.units = interleave(groups, self.costs or None)
        self._announce_if_done()
        for node in self.nodes:
            self.check_schedule(node)

    def check_schedule(self, node: Any, duration: float = 0) -> None:
        if node.shutting_down or self.collection is None:
            return
        pending = self.node2pending[node]
        if self.units and not self._may_take_units(node) and not any(map(self._may_take_units, self._live())):
            self._announce()  # every worker holds a speed case: the phase opens, else none of them would move again
        takes_units = self._may_take_units(node)  # else the correctness work left is for a worker without speed cases
        while len(pending) < 2 and self.units and takes_units:
            self._send(node, self.units.pop(0))
        if takes_units and len(pending) < 2 and (self.stealing is not None or self._steal()):
            return  # the answer to the steal sends this worker work, or lets it go on to speed cases or the shutdown
        while len(pending) < 2 and self.speed:
            self._send(node, [self._next_speed(node)])
        if len(pending) < 2:
            node.shutdown()  # nothing left to send: a last queued item runs only once the worker is told to stop

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _may_take_units(self, node: Any) -> bool:
        """Whether correctness cases may be queued on ``node``: not behind a speed case of its queue, which waits at
        the barrier for every correctness case (those behind it too) until the phase has opened. A steal's answer can
        bring correctness work back after speed cases went out (issue 19: a run on the GPU host hung so)."""
        return self.opened or not any(i in self.is_speed for i in self.node2pending.get(node, ()))

    def _live(self) -> list[Any]:
        return [n for n in self.nodes if not n.shutting_down]

    def _collections_differ(self) -> None:
        """Workers that collected different tests (a test module that differs per process): said as xdist's load
        scheduling says it, as a collection error naming the difference."""
        from xdist.report import report_collection_diff

        (first, collection), *others = self.node2collection.items()
        for node, theirs in others:
            message = report_collection_diff(collection, theirs, first.gateway.id, node.gateway.id)
            if message and self.config is not None:
                report = pytest.CollectReport(nodeid=node.gateway.id, outcome="failed", longrepr=message, result=[])
                self.config.hook.pytest_collectreport(report=report)

    def _steal(self) -> bool:
        """Ask the worker with the most correctness work still queued (not running, not held as its next item) for the
        back part of it, when that is worth two starts of its submission's child; True when a steal was asked. A worker
        that refused the last steal is not asked until it finishes a case: a refusal means it had got further than the
        controller knew, so little is left behind it, and the asking worker goes on (it holds its last item, which
        runs only once more work or the shutdown arrives)."""
        best, best_left, best_items = None, 0.0, []
        for node, pending in self.node2pending.items():
            queued = [i for i in pending[2:] if i not in self.is_speed]
            left = sum(self._cost(i) for i in queued)
            can_steal = hasattr(node, "send_steal")  # xdist 3.2 and later (the pinned version has it)
            if queued and can_steal and not node.shutting_down and node not in self.refused and left > best_left:
                best, best_left, best_items = node, left, queued
        if best is None:
            return False
        start = self._start_cost(best_items[-1])  # the part taken is from the back: its child starts anew
        if best_left < 2 * start:
            return False
        taken, share = [], 0.0  # from the back until the thief's part (with its start) about equals what stays
        for index in reversed(best_items):
            if taken and share + start >= best_left - share:
                break
            taken.insert(0, index)
            share += self._cost(index)
        self.stealing = best
        best.send_steal(taken)
        return True

    def _cost(self, index: int) -> float:
        """Expected seconds of an item: the last run's time, else this run's mean for its submission, else this run's
        mean over all, else (no case has finished yet) one child start: a worker with nothing to do at the very start
        then takes part of a queue of more than two untimed cases, the least worth moving."""
        if index in self.costs:
            return self.costs[index]
        mine = self.seen.get(self.group_of[index])
        if mine:
            return statistics.fmean(mine)
        everything = [d for durations in self.seen.values() for d in durations]
        return statistics.fmean(everything) if everything else CHILD_START_S

    def _held_cost(self, node: Any) -> float:
        """Expected seconds until a worker that has run dry could start new work: its held last item's cost (none
        held: 0); a worker with a full queue sorts last."""
        pending = self.node2pending.get(node) or []
        return float("inf") if len(pending) > 1 else sum(self._cost(i) for i in pending)

    def _start_cost(self, index: int) -> float:
        """Seconds a worker pays to start the sandbox child of an item's submission: as the last run measured it for
        that submission, else for its challenge, else as a child of its kind takes (:data:`GPU_CHILD_START_S` for one
        handed the GPU, :data:`CHILD_START_S`)."""
        group = self.group_of[index]
        default = GPU_CHILD_START_S if index in self.on_gpu else CHILD_START_S
        return self.start_costs.get(group, self.start_costs.get(self.family_of[index], default))

    def _next_speed(self, node: Any) -> int:
        """The speed case to queue on ``node``. Into an empty slot, the longest case left (the phase's tail is its last
        long case), one of a submission this worker already ran when it is about as long (its child is warm); behind
        a speed case the worker already holds, the shortest case left (it runs after that one, and a short case does
        not keep a long one from a worker that runs dry). How long: none for a submission already wrong in this run
        (it is not timed), else the last run's time, else alike for every case (the first left, or a warm one)."""
        mine = self.node2groups[node]
        costs = [self._speed_cost(i) for i in self.speed]
        warm = [self.group_of[i] in mine for i in self.speed]
        if any(i in self.is_speed for i in self.node2pending[node]):
            return self.speed.pop(min(range(len(costs)), key=lambda p: (costs[p], not warm[p])))
        longest = max(costs)
        close = [p for p in range(len(costs)) if warm[p] and costs[p] >= WARM * longest and costs[p] > 0]
        return self.speed.pop(close[0] if close else costs.index(longest))

    def _speed_cost(self, index: int) -> float:
        if self.wrong(self.group_of[index]):
            return 0.0
        return self.speed_costs.get(index, 1.0)

    def _send(self, node: Any, indices: list[int]) -> None:
        self.node2pending[node].extend(indices)
        self.node2groups[node].update(self.group_of[i] for i in indices)
        node.send_runtest_some(indices)

    def _put_back(self, indices: list[int]) -> None:
        correctness = [i for i in indices if i not in self.is_speed]
        self.speed[:0] = [i for i in indices if i in self.is_speed]
        if correctness:
            self.units.insert(0, correctness)
            if any(i in self.is_speed for pending in self.node2pending.values() for i in pending):
                # Speed cases already wait in some queue: holding them for these would deadlock that worker, so the
                # phase opens now (those speed cases may then share the machine with the rescheduled cases).
                self._announce()

    def _finished(self, index: int) -> None:
        self.correctness_left.discard(index)
        self._announce_if_done()

    def _announce_if_done(self) -> None:
        if self.on_gpu.isdisjoint(self.correctness_left):  # no correctness case on the GPU is left
            self._announce_gpu()
        if not self.correctness_left and not self.units:
            self._announce()

    def _announce(self) -> None:
        self.opened = True
        if not self.barrier.exists():
            self.barrier.write_text("correctness finished\n")
        self._announce_gpu()

    def _announce_gpu(self) -> None:
        if self.gpu_barrier is not None and not self.gpu_barrier.exists():
            self.gpu_barrier.write_text("correctness on the GPU finished\n")
