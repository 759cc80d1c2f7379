"""Fair timing: while a case is timed, no other child of the run runs, and nothing a submission left behind runs.

Every sandbox child of a run, whichever xdist worker owns it, is listed in the run's private folder (``children/``:
one file per sandbox, written by its owner when the child starts, removed when it is killed). A worker that times a
case holds a *timer* (``timers/``, see :func:`timing`). While any timer is held, every child of the run that is not
answering a request (``busy/``, see :func:`busy`) is frozen: its cgroup through ``cgroup.freeze`` where the run's
cgroups are writable, else every process of its tree gets SIGSTOP (and SIGCONT to thaw). So during a timed pair the
other children of the run are frozen, and inside the pair each side is frozen while the other is timed: threads and
processes that a submission left running after its answer stop with it.

What is frozen is kept in ``freeze.json``, changed only under ``freeze.lock``. A child is thawed before any request is
sent to it, and a timer whose worker is gone is dropped at the next change by any worker (and when xdist reports the
worker down): a stale freeze never reaches a request and never outlives the next timer's end.

Also here, used by ``sandbox.py`` after every answer: :func:`leftovers`, the threads and processes of a child's tree
still running after it answered (the child's own main thread waits for the next request), and :func:`pin`.

``KERNELGRADE_FREEZE=off`` turns freezing off (for the benchmark that measures what it costs; never in a graded run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from plugins.isolate.containment import Cgroup
from plugins.isolate.measure import descendants
from plugins.isolate.runspace import owner_alive, process_start

_SWITCH = "KERNELGRADE_FREEZE"
TIMER_PREFIX = "timer-"
STOP_WAIT_S = 0.2  # the longest a freeze waits for its processes to stop (one inside a system call stops on leaving it)
# After an answer, the tree's threads and processes are looked at again after each glance until one is seen runnable
# (a thread that waits for the GIL sleeps until the child's main thread blocks on its next read, which under load can
# take longer than the first glance); any seen runnable is watched for a window, and it still runs if it used a share
# of the window on a CPU. The child's own threads sleep once it has
# answered (BLAS and OpenMP pools have one thread). The share is low because a hog on a loaded machine gets little of a
# CPU: on the 2-core machine with a load of 22, about a tenth of a core.
LEFTOVER_GLANCES_S = (0.003, 0.03)
LEFTOVER_WINDOW_S = 0.1
LEFTOVER_CPU_SHARE = 0.02


def enabled() -> bool:
    return os.environ.get(_SWITCH, "on") != "off"


# --- the registry ---


def register(root: Path, key: str, pid: int, cgroup: Path | None) -> None:
    """List a started child: its tree's root process (with its start time, so a reused pid is never signalled) and its
    cgroup; the owner is this process."""
    entry = {"pid": pid, "start": process_start(pid), "cgroup": str(cgroup) if cgroup else None}
    entry["owner"] = [os.getpid(), process_start(os.getpid())]
    _write(_folder(root, "children") / f"{key}.json", entry)


def unregister(root: Path, key: str) -> None:
    with contextlib.suppress(OSError):
        (root / "children" / f"{key}.json").unlink()


@contextlib.contextmanager
def busy(root: Path, key: str) -> Iterator[None]:
    """Around one request to a child: thawed (if a timer froze it) before anything is sent; frozen again after the
    answer while a timer is held."""
    if not enabled():
        yield
        return
    mark = _folder(root, "busy") / key
    mark.touch()
    try:
        with _locked(root):
            frozen = _load(root)
            if key in frozen:
                _thaw(frozen.pop(key))
                _save(root, frozen)
        yield
    finally:
        with contextlib.suppress(OSError):
            mark.unlink()
        with _locked(root):
            if _live_timers(root):
                _apply(root, only={key})


@contextlib.contextmanager
def timing(root: Path) -> Iterator[None]:
    """While a case is timed in this process: every child of the run not answering a request stays frozen."""
    if not enabled():
        yield
        return
    timer = _folder(root, "timers") / f"{TIMER_PREFIX}{os.getpid()}-{process_start(os.getpid())}-{secrets.token_hex(4)}"
    try:
        with _locked(root):
            timer.touch()
            _apply(root)
        yield
    finally:
        with _locked(root):
            with contextlib.suppress(OSError):
                timer.unlink()
            _apply(root)


def settle(root: Path) -> None:
    """Drop timers whose worker is gone and thaw what only they froze (the controller calls it for a dead worker)."""
    with contextlib.suppress(OSError), _locked(root):
        _apply(root)


def _apply(root: Path, only: set[str] | None = None) -> None:
    """Under the lock: with a live timer, every listed child not busy is frozen; without one, every child is thawed.
    ``only`` limits the change to those children (a request's end needs no look at the others)."""
    frozen = _load(root)
    timed = bool(_live_timers(root))
    children = _children(root, only)
    busy_now = set(_names(root / "busy"))
    want = {k for k in children if timed and k not in busy_now}
    for key in [k for k in frozen if (only is None or k in only) and k not in want]:
        _thaw(frozen.pop(key))
    for key in want - set(frozen):
        if only is None or key in only:
            frozen[key] = _freeze(children[key])
    _save(root, frozen)


def _live_timers(root: Path) -> list[str]:
    live = []
    for name in _names(root / "timers"):
        if owner_alive(name, TIMER_PREFIX):
            live.append(name)
        else:  # its worker died while timing: the freeze it asked for ends now
            with contextlib.suppress(OSError):
                (root / "timers" / name).unlink()
    return live


def _children(root: Path, only: set[str] | None = None) -> dict[str, dict[str, Any]]:
    found = {}
    names = [f"{k}.json" for k in only] if only is not None else _names(root / "children")
    for name in names:
        try:
            entry = json.loads((root / "children" / name).read_text())
        except (OSError, ValueError):
            continue
        if process_start(int(entry["pid"])) == entry["start"]:
            found[name.removesuffix(".json")] = entry
    return found


# --- freezing one child ---


def _freeze(entry: dict[str, Any]) -> dict[str, Any]:
    """Freeze a child's tree; returns what :func:`_thaw` needs to undo it."""
    if entry.get("cgroup") and Cgroup(Path(entry["cgroup"])).freeze(True):
        return {"cgroup": entry["cgroup"]}
    stopped: dict[int, str] = {}
    for _ in range(5):  # a process may fork between the listing and its stop: list again until none is new
        new = [p for p in descendants(int(entry["pid"])) if p not in stopped]
        if not new:
            break
        for pid in new:
            stopped[pid] = process_start(pid)
            _signal(pid, stopped[pid], signal.SIGSTOP)
    deadline = time.monotonic() + STOP_WAIT_S  # SIGSTOP is delivered asynchronously: wait until each has stopped
    while time.monotonic() < deadline and any(_state(p, str(p)) not in ("T", "t", "Z", "") for p in stopped):
        time.sleep(0.001)
    return {"pids": [[pid, start] for pid, start in stopped.items()]}


def _thaw(record: dict[str, Any]) -> None:
    if record.get("cgroup"):
        Cgroup(Path(record["cgroup"])).freeze(False)
    for pid, start in record.get("pids", []):
        _signal(pid, start, signal.SIGCONT)


def _signal(pid: int, start: str, sig: int) -> None:
    if process_start(pid) == start:  # the same process, not a reused pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# --- what runs after an answer ---


def roles(tree: Iterable[int], root: int, bwrap: bool) -> tuple[int | None, set[int]]:
    """The child's own interpreter in its tree and the sandbox's wrapper processes, from the kernel's view alone:
    without bwrap the root process is the interpreter; under bwrap the root is bwrap, the namespace's first process is
    bwrap's init and its second the interpreter."""
    if not bwrap:
        return root, set()
    depth = len(_nspids(os.getpid()))
    main, wrappers = None, {root}
    for pid in tree:
        ids = _nspids(pid)
        if len(ids) == depth + 1 and ids[-1] in ("1", "2"):
            if ids[-1] == "1":
                wrappers.add(pid)
            else:
                main = pid
    return main, wrappers


def leftovers(tree: Callable[[], Iterable[int]], main: int | None, wrappers: set[int]) -> list[str]:
    """Threads and processes of a child's tree (``tree()``: its processes now) that still run after its answer, named
    ``comm[pid/tid]``; the child's main thread and the sandbox's own wrapper processes (bwrap, its init) are not looked
    at. Looks :data:`LEFTOVER_GLANCES_S` apart find the tasks that are runnable or used a CPU (a thread that waited
    for the GIL while the main thread sent the answer runs a moment later); those are watched for
    :data:`LEFTOVER_WINDOW_S`, and count when they used :data:`LEFTOVER_CPU_SHARE` of it, so that a task that was only
    finishing is not counted. Each look reads the tree again: a process forked just before the answer may still be on
    its way to a new session (fork, setsid, fork, exit), and the grandchild that spins exists only at a later look."""

    def look() -> dict[tuple[int, str], tuple[str, int]]:
        tasks = [(pid, tid) for pid in tree() if pid not in wrappers for tid in _names(Path(f"/proc/{pid}/task"))]
        return {task: (_state(*task), _cpu_ns(*task)) for task in tasks if task != (main, str(main))}

    first = look()
    if not first:  # the interpreter alone, with one thread (a NumPy child): nothing else can run
        return []
    for glance in LEFTOVER_GLANCES_S:
        time.sleep(glance)
        second = look()
        # Runnable at either look, or used CPU between them (a task new at the second look used CPU to get there).
        runnable = {
            task
            for task, (state, ns) in second.items()
            if state in ("R", "D") or first.get(task, ("", 0))[0] in ("R", "D") or ns > first.get(task, ("", 0))[1]
        }
        if runnable or not second.keys() <= first.keys():
            break
        first = second
    else:
        return []
    time.sleep(LEFTOVER_WINDOW_S)
    third = look()
    # CPU used in the window by the tasks found runnable, and by every task that appeared since the second look.
    used = {
        task: ns - second[task][1] if task in second else ns
        for task, (_, ns) in third.items()
        if task in runnable or task not in second
    }
    if sum(used.values()) < LEFTOVER_CPU_SHARE * LEFTOVER_WINDOW_S * 1e9:
        return []
    return [f"{_comm(pid, tid)}[{pid}/{tid}]" for (pid, tid), ns in used.items() if ns > 0]


def pin(tree: Iterable[int], cores: set[int] | None) -> None:
    """Every thread of the tree on ``cores`` (None: every core this process may use). Threads and processes started
    later inherit it."""
    target = cores or os.sched_getaffinity(0)
    for pid in tree:
        for tid in _names(Path(f"/proc/{pid}/task")):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), target)


def slot_cores(slot: int | None, slots: int) -> set[int] | None:
    """The cores of CPU speed slot ``slot`` of ``slots``: an equal share of the cores this process may use, or None
    (no pinning) for a GPU slot or when one slot has every core anyway."""
    cpus = sorted(os.sched_getaffinity(0))
    share = len(cpus) // max(slots, 1)
    if slot is None or slots < 2 or share < 1:
        return None
    return set(cpus[slot * share : (slot + 1) * share])


def spare_cores(slots: int) -> set[int] | None:
    """The cores that no CPU slot of ``slots`` has (:func:`slot_cores`), for a GPU slot's timed pair; None when the
    CPU slots are not pinned or leave no core over."""
    cpus = sorted(os.sched_getaffinity(0))
    share = len(cpus) // max(slots, 1)
    if slots < 2 or share < 1 or slots * share >= len(cpus):
        return None
    return set(cpus[slots * share :])


@contextlib.contextmanager
def this_thread_on(cores: set[int] | None) -> Iterator[None]:
    """The calling thread (and the threads it starts meanwhile) on ``cores`` until the block ends; nothing for None."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cores)
    except OSError:  # a core the process may not use (its affinity changed meanwhile): left where it is
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)


# --- small helpers ---


def _nspids(pid: int) -> list[str]:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


def _state(pid: int, tid: str) -> str:
    stat = _read(f"/proc/{pid}/task/{tid}/stat")
    return stat.rsplit(")", 1)[1].split()[0] if ")" in stat else ""


def _cpu_ns(pid: int, tid: str) -> int:
    fields = _read(f"/proc/{pid}/task/{tid}/schedstat").split()
    return int(fields[0]) if fields else 0


def _comm(pid: int, tid: str) -> str:
    name = _read(f"/proc/{pid}/task/{tid}/comm").strip()
    return "".join(c if c.isprintable() and c not in "<>&" else "?" for c in name)[:16] or "?"


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return ""


def _names(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _folder(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / "freeze.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # released when the file closes (and by the kernel if this process dies)


def _load(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "freeze.json").read_text())
    except (OSError, ValueError):
        return {}


def _save(root: Path, frozen: dict[str, Any]) -> None:
    _write(root / "freeze.json", frozen)


def _write(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)
