"""The run's registry of sandbox children (``plugins/isolate/fairness.py``): a timer held by any process of the run
freezes every child that is not answering a request, a request thaws its own child first, and a timer whose process
died frees what it froze. Each rule is checked with the cgroup freezer (where this machine's cgroups are writable) and
with SIGSTOP, the fallback; children are sleeping processes, and "frozen" is the kernel's word for it, not a timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from plugins.isolate import containment, fairness, runspace
from plugins.isolate.containment import Cgroup

pytestmark = pytest.mark.exclusive  # freezing and timing: the machine must be otherwise idle

MODES = ["sigstop", pytest.param("cgroup", marks=pytest.mark.skipif(
    containment.probe().cgroup_base is None, reason="no writable cgroup v2 hierarchy here (SIGSTOP is used instead)"
))]  # fmt: skip
# Another worker of the run: holds a timer until its stdin closes (or it is killed).
HOLD_TIMER = (
    "import sys; from pathlib import Path; from plugins.isolate import fairness\n"
    "with fairness.timing(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()\n"
)


class Child:
    """A registered child of the run: a sleeping process, in a cgroup of its own or not."""

    def __init__(self, space: runspace.RunSpace, key: str, mode: str):
        self.key, self.group = key, None
        argv = ["sleep", "120"]
        if mode == "cgroup":
            self.group = Cgroup.make(space.cgroup_parent(containment.probe()), f"fairness-{key}")
            argv = self.group.wrap(argv)
        self.process = subprocess.Popen(argv, start_new_session=True)
        if self.group is not None:
            while not self.group.procs():  # the wrapping shell joins the group, then execs sleep
                time.sleep(0.001)
        fairness.register(space.root, key, self.process.pid, self.group.path if self.group else None)

    def frozen(self) -> bool:
        if self.group is not None:
            return "frozen 1" in (self.group.path / "cgroup.events").read_text()
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def end(self) -> None:
        if self.group is not None:
            self.group.remove()
        self.process.kill()
        self.process.wait()


@pytest.fixture
def space(tmp_path: Path) -> Iterator[runspace.RunSpace]:
    made = runspace.RunSpace.create(tmp_path)
    yield made
    made.remove()


def hold_timer(space: runspace.RunSpace) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-c", HOLD_TIMER, str(space.root)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert worker.stdout.readline().strip() == "held"
    return worker


@pytest.mark.parametrize("mode", MODES)
def test_a_timer_in_another_worker_freezes_the_idle_children(space, mode):
    """While another process of the run holds a timer every registered child is frozen; at its end all are thawed."""
    children = [Child(space, f"child{i}", mode) for i in range(2)]
    worker = None
    try:
        assert not any(c.frozen() for c in children)
        worker = hold_timer(space)
        assert all(c.frozen() for c in children)
        worker.communicate("")  # the timer ends
        assert not any(c.frozen() for c in children)
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        for child in children:
            child.end()


@pytest.mark.parametrize("mode", MODES)
def test_a_request_thaws_its_child_and_refreezes_it_after(space, mode):
    """A child asked a request while a timer is held runs for the request only (the timed pair's two sides)."""
    child, other = Child(space, "timed", mode), Child(space, "idle", mode)
    try:
        with fairness.timing(space.root):
            assert child.frozen() and other.frozen()
            with fairness.busy(space.root, "timed"):
                assert not child.frozen() and other.frozen()
            assert child.frozen()
        assert not child.frozen() and not other.frozen()
    finally:
        child.end()
        other.end()


@pytest.mark.parametrize("mode", MODES)
def test_a_dead_timer_never_keeps_a_child_frozen(space, mode):
    """A worker killed while timing leaves its children frozen only until the next request (which thaws its own child
    first, and freezes nothing after it) or the controller's settling of the dead worker."""
    asked, idle = Child(space, "asked", mode), Child(space, "idle", mode)
    try:
        worker = hold_timer(space)
        assert asked.frozen() and idle.frozen()
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        with fairness.busy(space.root, "asked"):
            assert not asked.frozen()
        assert not asked.frozen()
        fairness.settle(space.root)
        assert not idle.frozen()
    finally:
        asked.end()
        idle.end()


def test_each_cpu_slot_has_cores_of_its_own(monkeypatch):
    """With four slots on 16 cores slot 1 is cores 4-7; a GPU slot, or one slot holding every core, pins nothing."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert fairness.slot_cores(1, 4) == {4, 5, 6, 7}
    assert fairness.slot_cores(None, 4) is None and fairness.slot_cores(0, 1) is None


def test_pinning_moves_every_thread_of_the_tree():
    """Every thread of every process given is moved onto the cores, and back onto all of them."""
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        while len(os.listdir(f"/proc/{process.pid}/task")) < 2:
            time.sleep(0.01)
        first = min(os.sched_getaffinity(0))
        fairness.pin([process.pid], {first})
        tasks = [int(t) for t in os.listdir(f"/proc/{process.pid}/task")]
        assert all(os.sched_getaffinity(t) == {first} for t in tasks)
        fairness.pin([process.pid], None)
        assert all(os.sched_getaffinity(t) == os.sched_getaffinity(0) for t in tasks)
    finally:
        process.kill()
        process.wait()


def test_a_spinner_born_after_the_first_look_is_still_found():
    """The setsid escape (fork, setsid, fork, exit) may not have forked its spinner yet when the grader first looks:
    the tree then holds a process that sleeps. Each look reads the tree again, so the spinner that appears by the
    second look is counted (the first version looked at the first tree's tasks only and found nothing)."""
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nprint(flush=True)\ntime.sleep(30)"], stdout=subprocess.PIPE
    )
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 30: pass"]
    )
    try:
        sleeper.stdout.readline()  # its interpreter started (under load that takes a while) ...
        deadline = time.monotonic() + 10
        while fairness._state(sleeper.pid, str(sleeper.pid)) != "S" and time.monotonic() < deadline:
            time.sleep(0.01)  # ... and is asleep
        trees = iter([[sleeper.pid]])  # the first look sees the sleeper only; every later look the spinner too

        def tree() -> list[int]:
            return next(trees, [sleeper.pid, spinner.pid])

        found = fairness.leftovers(tree, None, set())
        assert any(f"[{spinner.pid}/" in name for name in found), found
        assert fairness.leftovers(lambda: [sleeper.pid], None, set()) == []  # a sleeper alone is nothing left running
    finally:
        for process in (sleeper, spinner):
            process.kill()
            process.wait()


def test_a_thread_that_waits_out_the_first_glance_is_still_found(monkeypatch):
    """A spinning thread that waits for the GIL sleeps while the child's main thread finishes its answer; under load
    that outlasts the first glance (3 ms). The looks go on after a longer glance before the tree counts as idle (the
    first version gave up after one glance: hog-thread passed one case in a loaded self-test run)."""
    looks = iter([("S", 0), ("S", 0), ("R", 1_000_000)])  # asleep at the first two looks, running at the third
    monkeypatch.setattr(fairness, "_names", lambda path: ["11"])
    monkeypatch.setattr(fairness, "_state", lambda pid, tid: next(looks, ("R", 0))[0] if tid == "11" else "S")
    spent = iter([0, 0, 1_000_000, 60_000_000])  # CPU time at each look, then after the window

    def cpu(pid: int, tid: str) -> int:
        return next(spent, 60_000_000)

    monkeypatch.setattr(fairness, "_cpu_ns", cpu)
    monkeypatch.setattr(fairness, "_comm", lambda pid, tid: "python")
    assert fairness.leftovers(lambda: [10], None, set()) == ["python[10/11]"]


def test_the_worker_thread_joins_the_timed_pairs_core_and_goes_back():
    """While a slot is held the worker's thread (and a memory sampler it starts meanwhile) runs on the slot's core; the
    old affinity comes back after, also when the block raises."""
    before = os.sched_getaffinity(0)
    core = min(before)
    seen: list[set[int]] = []
    with fairness.this_thread_on({core}):
        sampler = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        sampler.start()
        sampler.join()
        assert os.sched_getaffinity(0) == {core}
    assert seen == [{core}] and os.sched_getaffinity(0) == before
    with pytest.raises(RuntimeError), fairness.this_thread_on({core}):
        raise RuntimeError("a case's code failed")
    assert os.sched_getaffinity(0) == before
    with fairness.this_thread_on(None):
        assert os.sched_getaffinity(0) == before
