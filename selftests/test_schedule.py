"""The xdist scheduler of grading runs (plugins/isolate/schedule.py), driven with stand-in workers: submissions stay
together, speed cases wait for every correctness case, and no worker is ever left with a queue it cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins.isolate.schedule import SubmissionScheduling, case_costs


class FakeNode:
    """A worker as the scheduler sees it: what it was sent, and whether it was told to shut down."""

    def __init__(self, name: str):
        self.name, self.sent, self.shutting_down = name, [], False

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


def classify(nodeid: str) -> tuple[str, str, bool, float | None]:
    group, case = nodeid.split("::")
    return group, group.split("/")[1], case.startswith("speed"), None


@pytest.fixture
def run(tmp_path: Path):
    """Start a scheduler over ``collection`` with ``workers`` stand-in workers; returns it and the workers."""

    def start(collection: list[str], workers: int) -> tuple[SubmissionScheduling, list[FakeNode]]:
        sched = SubmissionScheduling(workers, classify, tmp_path / "correctness.done")
        nodes = [FakeNode(f"gw{i}") for i in range(workers)]
        for node in nodes:
            sched.add_node(node)
            sched.add_node_collection(node, collection)
        sched.schedule()
        return sched, nodes

    return start


def finish(sched: SubmissionScheduling, node: FakeNode, collection: list[str]) -> str:
    """The worker runs the head of its queue (it may: it holds a next item or was told to stop); returns its id."""
    pending = sched.node2pending[node]
    assert len(pending) >= 2 or node.shutting_down, f"{node.name} holds a queue it cannot run"
    index = pending[0]
    sched.mark_test_complete(node, index)
    return collection[index]


def drain(sched: SubmissionScheduling, nodes: list[FakeNode], collection: list[str], barrier: Path) -> list[str]:
    """Run everything, round-robin over workers; a speed case may only start once the barrier file exists."""
    order = []
    while sched.has_pending:
        for node in nodes:
            if sched.node2pending.get(node):
                head = collection[sched.node2pending[node][0]]
                if "::speed" in head and not barrier.exists():
                    continue  # the worker waits at the barrier
                order.append(finish(sched, node, collection))
    return order


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
        assert len(holders) <= 2, f"{group} spread over {holders}"  # halved at most once, at the tail
    assert all(node.shutting_down for node in nodes)


def test_units_are_whole_until_the_tail(run) -> None:
    """With more submissions than workers, the first units handed out are whole submissions."""
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
    seconds = {"kv": 0.1, "ternary": 20.0, "flash": 1.0}

    def timed(nodeid: str) -> tuple[str, str, bool, float | None]:
        group, family, speed, _ = classify(nodeid)
        return group, family, speed, seconds[family]

    sched = SubmissionScheduling(2, timed, tmp_path / "done")
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    assert collection[nodes[0].sent[0]].startswith("slow/ternary::")
    assert collection[nodes[1].sent[0]].startswith("mid/flash::")


def test_case_costs_read_an_earlier_runs_records(tmp_path: Path) -> None:
    """Per model and case, and the median over models for a model not graded then; waits are not cost."""
    results = tmp_path / "results.json"
    cases = [
        {"model": m, "challenge": "kv", "case": "c0", "timing": {"case_s": s, "truth_s": 0.1, "wait_s": w}}
        for m, s, w in (("a", 1.0, 0.0), ("b", 3.0, 0.0), ("c", 9.0, 4.0))
    ]
    results.write_text(json.dumps({"cases": [*cases, {"model": "d", "challenge": "kv", "case": "c1"}]}))
    costs = case_costs(results)
    assert costs[("a", "kv", "c0")] == 1.0 and costs[("c", "kv", "c0")] == 5.0
    assert costs[("kv", "c0")] == 3.0 and ("kv", "c1") not in costs
    assert case_costs(tmp_path / "missing.json") == {}
