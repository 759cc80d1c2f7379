"""The xdist scheduler of grading runs (plugins/isolate/schedule.py), driven with stand-in workers: submissions stay
together, speed cases wait for every correctness case, and no worker is ever left with a queue it cannot run."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from plugins.base.records import NOT_TIMED, CaseRecord
from plugins.isolate.schedule import (
    CHILD_START_S,
    GPU_CHILD_START_S,
    Classified,
    SubmissionScheduling,
    WrongUnits,
    case_costs,
    earlier_cases,
    start_costs,
)


class FakeNode:
    """A worker as the scheduler sees it: what it was sent, and whether it was told to shut down."""

    def __init__(self, name: str):
        self.name, self.sent, self.shutting_down = name, [], False
        self.asked: list[list[int]] = []  # steal requests not answered yet

    def send_steal(self, indices: list[int]) -> None:
        self.asked.append(list(indices))

    def send_runtest_some(self, indices: list[int]) -> None:
        assert not self.shutting_down, "work sent after shutdown"
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def nodeids(submissions: dict[str, int], speed: int = 1) -> list[str]:
    """``n`` correctness cases and ``speed`` speed cases per submission, as node ids ``model/challenge::case``."""
    return [
        f"{s}::{kind}{i}" for s, n in submissions.items() for kind, k in (("c", n), ("speed", speed)) for i in range(k)
    ]


def classify(nodeid: str) -> Classified:
    group, case = nodeid.split("::")
    return Classified(group, group.split("/")[1], case.startswith("speed"), None)


def start_scheduler(
    collection: list[str],
    workers: int,
    barrier: Path,
    seconds: Callable[[str], float] | None = None,
    starts: dict[str, float] | None = None,
    wrong: Callable[[str], bool] | None = None,
) -> tuple[SubmissionScheduling, list[FakeNode]]:
    """A scheduler over ``collection`` with ``workers`` stand-in workers, scheduled; ``seconds`` gives each case's time
    in an earlier run (None: no earlier run), ``starts`` its children's start times (:func:`start_costs`), ``wrong``
    the units found wrong in this run."""

    def classified(nodeid: str) -> Classified:
        return classify(nodeid)._replace(cost=seconds(nodeid) if seconds else None)

    sched = SubmissionScheduling(workers, classified, barrier, start_costs=starts, wrong=wrong)
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    return sched, nodes


@pytest.fixture
def run(tmp_path: Path):
    """Start a scheduler over ``collection`` with ``workers`` stand-in workers; returns it and the workers."""
    return lambda collection, workers: start_scheduler(collection, workers, tmp_path / "correctness.done")


def finish(sched: SubmissionScheduling, node: FakeNode, collection: list[str]) -> str:
    """The worker runs the head of its queue (it may: it holds a next item, was told to stop, or waits for the answer
    to a steal that will send it more); returns its id."""
    pending = sched.node2pending[node]
    assert len(pending) >= 2 or node.shutting_down or sched.stealing, f"{node.name} holds a queue it cannot run"
    index = pending[0]
    sched.mark_test_complete(node, index)
    return collection[index]


def answer_steals(sched: SubmissionScheduling, nodes: list[FakeNode]) -> None:
    """Each worker answers a steal as xdist's worker does: all the asked items if every one is still queued behind its
    running and next item, else none."""
    for node in nodes:
        while node.asked:
            asked, queued = node.asked.pop(0), sched.node2pending[node][2:]
            sched.remove_pending_tests_from_node(node, asked if set(asked) <= set(queued) else [])


def drain(sched: SubmissionScheduling, nodes: list[FakeNode], collection: list[str], barrier: Path) -> list[str]:
    """Run everything, round-robin over workers, answering steals as they come; a speed case may only start once the
    barrier file exists."""
    order = []
    while sched.has_pending:
        for node in nodes:
            if sched.node2pending.get(node):
                head = collection[sched.node2pending[node][0]]
                if "::speed" in head and not barrier.exists():
                    continue  # the worker waits at the barrier
                order.append(finish(sched, node, collection))
                answer_steals(sched, nodes)
    return order


def timed_scheduler(
    collection: list[str],
    seconds: dict[str, float],
    workers: int,
    barrier: Path,
    starts: dict[str, float] | None = None,
):
    """A scheduler that knows each case's seconds from an earlier run, per challenge (and its children's starts)."""
    return start_scheduler(collection, workers, barrier, lambda nodeid: seconds[classify(nodeid).family], starts)


def run_dry(sched: SubmissionScheduling, worker: FakeNode, others: list[FakeNode], collection: list[str]) -> list[str]:
    """The worker runs its queue until it has asked for a steal or been told to stop; returns the cases it ran."""
    done = []
    while not any(o.asked for o in others) and not worker.shutting_down:
        done.append(finish(sched, worker, collection))
    return done


def test_a_submission_stays_on_one_worker_and_speed_comes_last(run, tmp_path: Path) -> None:
    """Each submission's correctness cases go to one worker; every speed case runs after every correctness case."""
    collection = nodeids({f"m{i}/flash": 6 for i in range(8)})
    sched, nodes = run(collection, 3)
    order = drain(sched, nodes, collection, tmp_path / "correctness.done")
    assert sorted(order) == sorted(collection)
    first_speed = min(i for i, n in enumerate(order) if "::speed" in n)
    assert all("::speed" in n for n in order[first_speed:])
    for group in {n.split("::")[0] for n in collection}:
        holders = {node.name for node in nodes for i in node.sent if collection[i].startswith(group + "::c")}
        assert len(holders) == 1, f"{group} spread over {holders}"  # cases take no time here: nothing to steal
    assert all(node.shutting_down for node in nodes)


def test_units_are_whole(run) -> None:
    """Units handed out are whole submissions."""
    collection = nodeids({f"m{i}/kv": 8 for i in range(10)}, speed=0)
    sched, nodes = run(collection, 2)
    for node in nodes:
        groups = {collection[i].split("::")[0] for i in node.sent}
        assert len(groups) == 1 and len(node.sent) == 8


def test_barrier_opens_only_when_correctness_is_done(run, tmp_path: Path) -> None:
    """The correctness-done file appears after the last correctness case finishes, not before."""
    collection = nodeids({"a/x": 3, "b/x": 3})
    barrier = tmp_path / "correctness.done"
    sched, nodes = run(collection, 2)
    left = {i for i, n in enumerate(collection) if "::c" in n}
    while left:
        assert not barrier.exists()
        node = next(n for n in nodes if sched.node2pending[n] and sched.node2pending[n][0] in left)
        left.discard(sched.node2pending[node][0])
        finish(sched, node, collection)
    assert barrier.exists()


def test_no_worker_is_left_with_one_item_and_no_shutdown(run) -> None:
    """A single tiny submission on four workers: every worker has two items queued or has been told to stop."""
    collection = nodeids({"only/x": 1})
    sched, nodes = run(collection, 4)
    for node in nodes:
        assert len(sched.node2pending[node]) >= 2 or node.shutting_down


def test_a_crashed_workers_queue_goes_to_the_others(run, tmp_path: Path) -> None:
    """A worker that dies: its running case is reported by xdist, the rest of its queue runs elsewhere."""
    collection = nodeids({f"m{i}/x": 4 for i in range(4)})
    sched, nodes = run(collection, 2)
    dead = nodes[0]
    queued = list(sched.node2pending[dead])
    crashed = sched.remove_node(dead)
    assert crashed == collection[queued[0]]
    order = drain(sched, nodes[1:], collection, tmp_path / "correctness.done")
    done_before = [collection[i] for i in dead.sent if i not in queued]
    assert sorted(order + done_before + [crashed]) == sorted(collection)


def test_units_alternate_between_challenges_and_start_apart(run) -> None:
    """Submissions of one challenge are spread over the order and begin at different cases (no queue for one truth)."""
    collection = nodeids({f"m{i}/{ch}": 6 for ch in ("kv", "flash") for i in range(3)}, speed=0)
    sched, nodes = run(collection, 6)
    firsts = [collection[node.sent[0]] for node in nodes]
    assert [f.split("::")[0].split("/")[1] for f in firsts[:2]] in (["kv", "flash"], ["flash", "kv"])
    for challenge in ("kv", "flash"):
        starts = [f.split("::")[1] for f in firsts if f"/{challenge}::" in f]
        assert len(set(starts)) == len(starts) == 3, starts


def test_with_last_runs_times_the_longest_unit_goes_first(tmp_path: Path) -> None:
    """Timed by an earlier run, a few-case but slow submission is sent before many-case quick ones."""
    collection = nodeids({"quick/kv": 8, "slow/ternary": 3, "mid/flash": 5}, speed=0)
    _, nodes = timed_scheduler(collection, {"kv": 0.1, "ternary": 20.0, "flash": 1.0}, 2, tmp_path / "done")
    assert collection[nodes[0].sent[0]].startswith("slow/ternary::")
    assert collection[nodes[1].sent[0]].startswith("mid/flash::")


def test_case_costs_read_an_earlier_runs_records(tmp_path: Path) -> None:
    """Per model and case, and the median over models for a model not graded then; waits and child starts are not
    the case's cost."""
    results = tmp_path / "results.json"
    cases = [
        {
            "model": m,
            "challenge": "kv",
            "case": "c0",
            "timing": {"case_s": s, "truth_s": 0.1, "wait_s": w, "start_s": t},
        }
        for m, s, w, t in (("a", 1.0, 0.0, 0.0), ("b", 4.0, 0.0, 1.0), ("c", 9.0, 4.0, 0.0))
    ]
    results.write_text(json.dumps({"cases": [*cases, {"model": "d", "challenge": "kv", "case": "c1"}]}))
    costs = case_costs(earlier_cases(results))
    assert costs[("a", "kv", "c0")] == 1.0 and costs[("c", "kv", "c0")] == 5.0
    assert costs[("kv", "c0")] == 3.0 and ("kv", "c1") not in costs
    assert earlier_cases(tmp_path / "missing.json") == []


def test_a_worker_that_runs_dry_steals_the_back_of_the_longest_queue(tmp_path: Path) -> None:
    """One long submission (twelve 5 s cases) on one worker, quick ones on the other: once the quick ones are done, the
    idle worker takes about half of the long queue, from its back, and every case still runs exactly once."""
    collection = nodeids({"big/ternary": 12, **{f"m{i}/kv": 2 for i in range(3)}}, speed=0)
    barrier = tmp_path / "correctness.done"
    sched, (first, second) = timed_scheduler(collection, {"ternary": 5.0, "kv": 0.1}, 2, barrier)
    assert [collection[i].split("::")[0] for i in first.sent] == ["big/ternary"] * 12  # longest first, whole
    done = run_dry(sched, second, [first], collection)
    assert first.asked and not sched.tests_finished  # a steal is out: the run is not over
    answer_steals(sched, [first, second])
    stolen = [collection[i] for i in second.sent if collection[i].startswith("big/")]
    assert stolen == [f"big/ternary::c{i}" for i in range(7, 12)]  # half of the ten queued (50 s), from the back
    order = drain(sched, [first, second], collection, barrier)
    assert sorted(done + order) == sorted(collection)
    assert barrier.exists() and first.shutting_down and second.shutting_down


def test_a_steal_that_comes_too_late_is_not_asked_again_until_the_worker_moves_on(tmp_path: Path) -> None:
    """An answer with nothing taken (an asked case had started) is not asked again of that worker until it finishes a
    case; the asking worker, which holds its last item, goes on to the shutdown, and every case still runs once."""
    collection = nodeids({"big/ternary": 8, **{f"m{i}/kv": 2 for i in range(2)}}, speed=0)
    sched, (first, second) = timed_scheduler(collection, {"ternary": 5.0, "kv": 0.1}, 2, tmp_path / "done")
    done = run_dry(sched, second, [first], collection)
    assert sched.stealing is first and not sched.tests_finished and not second.shutting_down
    first.asked.clear()
    sched.remove_pending_tests_from_node(first, [])  # too late: nothing taken
    assert not first.asked and sched.stealing is None and second.shutting_down
    assert first in sched.refused
    order = drain(sched, [first, second], collection, tmp_path / "done")
    assert sorted(done + order) == sorted(collection) and first.shutting_down


def test_no_steal_for_less_than_a_childs_start(tmp_path: Path) -> None:
    """A queue of quick cases is not worth starting another child for: the idle worker stops instead."""
    collection = nodeids({"a/kv": 9, **{f"m{i}/kv": 2 for i in range(2)}}, speed=0)
    sched, (first, second) = timed_scheduler(collection, {"kv": 0.1}, 2, tmp_path / "done")
    run_dry(sched, second, [first], collection)
    assert not first.asked and second.shutting_down


def test_a_restart_is_the_cost_of_the_case_that_needed_it(tmp_path: Path) -> None:
    """A submission's first child start in a worker belongs to no case; a later one (the case before it crashed, as it
    will again) is part of the case that paid it: a submission that faults on every case weighs a start per case."""
    timing = (("c0", "gw0", 1.0, 4.0), ("c1", "gw0", 2.0, 4.0), ("c2", "gw0", 3.0, 0.0), ("c3", "gw1", 1.5, 4.0))
    cases = [
        {"model": "k32", "challenge": "topk", "case": c, "ran_on": {"worker": w},
         "timing": {"case_s": 4.5 if t else 0.5, "wait_s": 0.0, "start_s": t, "began_at": at}}
        for c, w, at, t in timing
    ]  # fmt: skip
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"cases": list(reversed(cases))}))  # records come in any order
    costs = case_costs(earlier_cases(results))
    assert [costs[("k32", "topk", c)] for c in ("c0", "c1", "c2", "c3")] == [0.5, 4.5, 0.5, 0.5]


def test_start_costs_read_an_earlier_runs_records(tmp_path: Path) -> None:
    """A unit's child start is its largest ``start_s`` (its first case's); a challenge's, the median over its units."""
    results = tmp_path / "results.json"
    timing = (("a", "c0", 4.0), ("a", "c1", 0.0), ("b", "c0", 6.0), ("c", "c0", 5.0), ("c", "c1", 0.5))
    cases = [
        {"model": m, "challenge": "ternary", "case": c, "timing": {"case_s": 9.0, "start_s": t}} for m, c, t in timing
    ]
    results.write_text(json.dumps({"cases": [*cases, {"model": "d", "challenge": "ternary", "case": "c0"}]}))
    assert start_costs(earlier_cases(results)) == {"a/ternary": 4.0, "b/ternary": 6.0, "c/ternary": 5.0, "ternary": 5.0}


def test_no_steal_for_less_than_two_starts_of_that_submissions_child(tmp_path: Path) -> None:
    """Eight 0.5 s cases are worth a steal when a child starts in a second, not when the last run measured 4 s for this
    challenge's child (torch and a CUDA context): then the owner runs them itself after its current case."""
    collection = nodeids({"big/ternary": 10, **{f"m{i}/kv": 2 for i in range(2)}}, speed=0)
    seconds = {"ternary": 0.5, "kv": 0.1}
    assert 8 * seconds["ternary"] > 2 * CHILD_START_S
    sched, (first, second) = timed_scheduler(collection, seconds, 2, tmp_path / "a")
    run_dry(sched, second, [first], collection)
    assert first.asked  # the default start: worth it
    sched, (first, second) = timed_scheduler(collection, seconds, 2, tmp_path / "b", starts={"ternary": 4.0})
    done = run_dry(sched, second, [first], collection)
    assert not first.asked and second.shutting_down
    order = drain(sched, [first, second], collection, tmp_path / "b")
    assert sorted(done + order) == sorted(collection)


def on_gpu_classify(gpu_families: set[str], seconds: dict[str, float] | None = None):
    """``classify`` whose submissions of ``gpu_families`` run on the GPU (``Classified.gpu``), with last run's
    ``seconds`` per challenge if given."""

    def classified(nodeid: str) -> Classified:
        item = classify(nodeid)
        return item._replace(cost=seconds[item.family] if seconds else None, gpu=item.family in gpu_families)

    return classified


def test_a_gpu_submission_is_not_split_for_less_than_two_gpu_child_starts(tmp_path: Path) -> None:
    """With no earlier run, a child handed the GPU is taken to start in GPU_CHILD_START_S, not CHILD_START_S: eight
    0.5 s cases of a GPU submission stay with their worker; the same cases of a NumPy one are worth a steal."""
    collection = nodeids({"big/paged": 10, **{f"m{i}/kv": 2 for i in range(2)}}, speed=0)
    seconds = {"paged": 0.5, "kv": 0.1}
    assert 2 * CHILD_START_S < 8 * seconds["paged"] < 2 * GPU_CHILD_START_S
    for gpu in (set(), {"paged"}):
        sched = SubmissionScheduling(2, on_gpu_classify(gpu, seconds), tmp_path / f"done{len(gpu)}")
        first, second = FakeNode("gw0"), FakeNode("gw1")
        for node in (first, second):
            sched.add_node(node)
            sched.add_node_collection(node, collection)
        sched.schedule()
        run_dry(sched, second, [first], collection)
        assert bool(first.asked) == (not gpu)


def test_speed_on_the_device_waits_only_for_the_correctness_cases_on_the_gpu(tmp_path: Path) -> None:
    """The GPU's barrier opens once every correctness case on the GPU has finished, while NumPy ones still run; the
    main barrier only after all of them. A run with nothing on the GPU opens the GPU's barrier at once."""
    collection = nodeids({"g/paged": 2, "n/kv": 4})
    barrier, gpu_barrier = tmp_path / "correctness.done", tmp_path / "gpu-correctness.done"
    sched = SubmissionScheduling(2, on_gpu_classify({"paged"}), barrier, gpu_barrier=gpu_barrier)
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    gpu_cases = {i for i, n in enumerate(collection) if n.startswith("g/") and "::c" in n}
    while gpu_cases:
        assert not gpu_barrier.exists()
        node = next(n for n in nodes if sched.node2pending[n] and sched.node2pending[n][0] in gpu_cases)
        gpu_cases.discard(sched.node2pending[node][0])
        finish(sched, node, collection)
    assert gpu_barrier.exists() and not barrier.exists()
    drain(sched, nodes, collection, barrier)
    assert barrier.exists()
    nothing_on_gpu = tmp_path / "none" / "gpu-correctness.done"
    nothing_on_gpu.parent.mkdir()
    sched = SubmissionScheduling(1, classify, tmp_path / "none" / "done", gpu_barrier=nothing_on_gpu)
    sched.add_node(FakeNode("gw0"))
    sched.add_node_collection(next(iter(sched.node2pending)), collection)
    sched.schedule()
    assert nothing_on_gpu.exists()


def test_a_stolen_part_goes_to_the_worker_whose_held_item_ends_first(tmp_path: Path) -> None:
    """Two workers have run dry when a steal's answer comes: one holds an 8 s case, the other a 0.1 s one. Each runs
    its held item before anything new, so the stolen part goes to the second."""
    collection = nodeids({"big/ternary": 12, "s/slow": 2, "k/kv": 2}, speed=0)
    barrier = tmp_path / "done"
    sched, (owner, slow, quick) = timed_scheduler(collection, {"ternary": 5.0, "slow": 8.0, "kv": 0.1}, 3, barrier)
    assert {collection[i].split("::")[0] for i in slow.sent} == {"s/slow"}
    done = run_dry(sched, quick, [owner], collection)  # quick runs dry first and asks
    done.append(finish(sched, slow, collection))  # slow runs dry too, holding its second 8 s case
    sched.remove_pending_tests_from_node(owner, owner.asked.pop(0))  # the answer: every asked case was still queued
    assert [collection[i] for i in quick.sent if collection[i].startswith("big/")] == [
        f"big/ternary::c{i}" for i in range(7, 12)
    ]
    assert not [i for i in slow.sent if collection[i].startswith("big/")]  # (it may ask a steal of its own later)
    answer_steals(sched, [owner])
    assert sorted(done + drain(sched, [owner, slow, quick], collection, barrier)) == sorted(collection)


def test_a_case_that_dominates_its_unit_runs_first_in_it(tmp_path: Path) -> None:
    """With the last run's times, a case that takes a third of its unit or more leads it (it cannot be split, so it
    must not start last); otherwise the unit keeps its order."""
    collection = [f"m/ternary::c{i}" for i in range(5)] + [f"m/kv::c{i}" for i in range(4)]
    seconds = {"m/ternary::c3": 9.0, "m/kv::c3": 0.35}  # 0.35 of 1.25 s: not a third
    _, nodes = start_scheduler(collection, 2, tmp_path / "done", lambda nodeid: seconds.get(nodeid, 0.3))
    assert [collection[i] for i in nodes[0].sent] == [f"m/ternary::c{i}" for i in (3, 0, 1, 2, 4)]
    assert [collection[i] for i in nodes[1].sent] == [f"m/kv::c{i}" for i in range(4)]


def speed_blocks_correctness(sched: SubmissionScheduling, nodes: list[FakeNode]) -> list[str]:
    """Workers with a correctness case queued behind a speed case: the speed case waits for every correctness case,
    that one included, so such a worker never moves again (the run hangs until it is killed)."""
    stuck = []
    for node in nodes:
        pending = sched.node2pending.get(node, [])
        speed_at = [n for n, i in enumerate(pending) if i in sched.is_speed]
        if speed_at and any(i not in sched.is_speed for i in pending[speed_at[0] :]):
            stuck.append(node.name)
    return stuck


def test_a_stolen_part_never_queues_behind_a_speed_case(tmp_path: Path) -> None:
    """Seen on the GPU host: a worker handed its speed case (no steal was worth asking then) held it alone when a later
    steal's answer came; its held item looked cheapest, so the stolen correctness cases went behind the speed case,
    which waited for them: the run stopped until it was killed. Stolen work goes to a worker without a speed case."""
    collection = nodeids({"big/ternary": 12, "q/kv": 2, "m/kv": 2}, speed=1)
    barrier = tmp_path / "done"
    sched, (owner, quick, other) = timed_scheduler(collection, {"ternary": 5.0, "kv": 0.1}, 3, barrier)
    done = run_dry(sched, quick, [owner], collection)  # quick runs dry and asks the owner
    owner.asked.clear()
    sched.remove_pending_tests_from_node(owner, [])  # refused: the owner had got further
    assert any(i in sched.is_speed for i in sched.node2pending[quick])  # no steal worth asking: quick gets speed
    done.append(finish(sched, owner, collection))  # the owner moves on: it may be asked again
    done += run_dry(sched, other, [owner], collection)  # other runs dry and asks the owner
    while sched.node2pending[quick][0] not in sched.is_speed:
        done.append(finish(sched, quick, collection))  # quick's last correctness case ends: it holds its speed case
    sched.remove_pending_tests_from_node(owner, owner.asked.pop(0))  # the answer: the back of the owner's queue
    assert speed_blocks_correctness(sched, [owner, quick, other]) == []
    assert sorted(done + drain(sched, [owner, quick, other], collection, barrier)) == sorted(collection)


def random_interleaving(seed: int, tmp_path: Path) -> None:
    """One run under a random order of events (which worker finishes its head next, when a steal is answered, whether
    the answer comes too late); fails when no event can happen while work is left (a hang) or a case runs twice."""
    rng = random.Random(seed)
    sizes = {f"m{i}/{rng.choice(['kv', 'ternary', 'flash'])}": rng.randint(1, 9) for i in range(rng.randint(2, 6))}
    collection = nodeids(sizes, speed=rng.randint(0, 2))
    seconds = {"kv": 0.1, "ternary": 5.0, "flash": 1.0}
    barrier = tmp_path / f"done-{seed}"
    sched, nodes = timed_scheduler(collection, seconds, rng.randint(2, 4), barrier)
    order: list[str] = []
    for _ in range(10 * len(collection) + 100):
        if not sched.has_pending and not any(n.asked for n in nodes):
            break
        events = [("answer", n) for n in nodes if n.asked]
        for node in nodes:
            pending = sched.node2pending.get(node, [])
            runnable = len(pending) >= 2 or node.shutting_down
            if pending and runnable and (pending[0] not in sched.is_speed or barrier.exists()):
                events.append(("finish", node))
        assert events, f"seed {seed}: no worker can move ({speed_blocks_correctness(sched, nodes)} hold speed first)"
        kind, node = rng.choice(events)
        if kind == "finish":
            order.append(finish(sched, node, collection))
        else:
            asked, queued = node.asked.pop(0), sched.node2pending[node][2:]
            late = rng.random() < 0.3 or not set(asked) <= set(queued)
            sched.remove_pending_tests_from_node(node, [] if late else asked)
    assert sorted(order) == sorted(collection), f"seed {seed}"


def test_no_order_of_events_hangs_the_run(tmp_path: Path) -> None:
    """400 seeded runs of small rosters (2 to 4 workers, up to 6 submissions, 0 to 2 speed cases each), events in random
    order: every case runs exactly once and no state leaves every worker unable to move."""
    for seed in range(400):
        random_interleaving(seed, tmp_path)


def simulate(
    sched: SubmissionScheduling, nodes: list[FakeNode], collection: list[str], seconds, barrier: Path
) -> float:
    """Run everything with each case taking ``seconds(nodeid)``, the workers in parallel as xdist runs them (a worker
    starts its head once it holds a next item or was told to stop; a speed case once the barrier exists); steals are
    answered at once. Returns when the last case ends."""
    now, ends = 0.0, {}  # node -> when its running head ends
    while sched.has_pending:
        for node in nodes:
            pending = sched.node2pending.get(node, [])
            runnable = pending and (len(pending) >= 2 or node.shutting_down)
            if node not in ends and runnable and (pending[0] not in sched.is_speed or barrier.exists()):
                ends[node] = now + seconds(collection[pending[0]])
        assert ends, "no worker can move"
        node = min(ends, key=ends.get)
        now = ends.pop(node)
        finish(sched, node, collection)
        answer_steals(sched, nodes)
    return now


def test_wrong_units_are_read_from_the_reported_records_once(tmp_path: Path) -> None:
    """``WrongUnits``: a unit is wrong once a scored correctness case of it failed; a failed speed case ("not timed"),
    a skipped case or a passed one does not make it so, and records already read are not read again."""
    records: dict[tuple, CaseRecord] = {}

    def add(model: str, case: str, category: str, outcome: str) -> None:
        index = len(records)
        records[model, "kv_cache", index] = CaseRecord(model, "kv_cache", case, index, category, "", outcome)

    wrong = WrongUnits(records)
    add("a", "c0", "core", "passed")
    add("b", "c0", "core", "skipped")
    add("c", "speed", "speed", NOT_TIMED)
    assert not any(map(wrong, ("a/kv_cache", "b/kv_cache", "c/kv_cache")))
    add("a", "c1", "edge", "wrong")
    assert wrong("a/kv_cache") and not wrong("b/kv_cache") and wrong.read == 4
    records.clear()  # what was read stays known
    assert wrong("a/kv_cache")


def test_long_speed_cases_start_first_and_never_queue_behind_each_other(tmp_path: Path) -> None:
    """The H100 run's tail: one worker ran demo-tiled's flash speed case (42 s) and then a top-k one, after the other
    workers had stopped. With the last run's times each free slot takes the longest speed case left and a worker's
    second slot the shortest: on 16 workers the phase ends with its longest case, 2 s of correctness plus 42 s."""
    spec = {"tiled/flash": [42.0], "tiled/topk": [20.0, 16.0], "tiled/kv": [19.0, 14.0], "slow/flash": [28.0]}
    spec |= {f"bad{i}/x": [0.1] for i in range(10)}  # the wrong submissions' speed cases: "not timed", at once
    collection = [
        f"{g}::{kind}" for g, times in spec.items() for kind in ("c0", "c1", *(f"speed{j}" for j in range(len(times))))
    ]
    cost = {f"{g}::speed{j}": t for g, times in spec.items() for j, t in enumerate(times)}

    def seconds(nodeid: str) -> float:
        return cost.get(nodeid, 1.0)

    def makespan(known: bool, wrong: Callable[[str], bool] | None = None) -> float:
        barrier = tmp_path / f"done-{known}-{wrong is None}"
        sched, nodes = start_scheduler(collection, 16, barrier, seconds if known else None, wrong=wrong)
        return simulate(sched, nodes, collection, seconds, barrier)

    assert makespan(True) <= 2.0 + 42.0 + 0.2
    assert makespan(False) >= 2.0 + 42.0 + 16.0  # without the last run's times: two long cases on one worker
    # A first run (no earlier times) that knows which submissions are wrong: their cases fill the second slots.
    assert makespan(False, wrong=lambda group: group.startswith("bad")) <= 2.0 + 42.0 + 0.2
