"""The grader's watch over one started sandbox child: listed in the run's registry (``fairness.py``), its writable
space guarded (``diskcap.py``), pinned to a timed slot's cores, and looked at after every answer.

After an answer the child's interpreter waits for the next request. Any other thread or process of its tree that still
runs then (a thread, a forked or ``setsid`` process the submission left behind; under bwrap orphans stay in the PID
namespace, in a cgroup they stay in it) is the outcome ``left_running``: it costs the case that left it, and the
child's whole tree is killed, so nothing of it runs while another case, or the reference it is timed against, runs.
Everything here reads the kernel's view of the tree; nothing the child says is used.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.isolate import diskcap, fairness
from plugins.isolate.containment import Cgroup
from plugins.isolate.measure import descendants

LEFT_RUNNING = "left_running"  # Outcome.status of a case after which the submission left something running


def fairly(run: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates ``Sandbox.run``: one request under the run's rules for the machine. The child is thawed if a timed case
    froze it, and pinned, before anything is sent (``fairness.py``); after the answer, a child over its disk caps
    (``diskcap.py``) or with threads or processes still running fails the case and is killed with all its processes."""

    @functools.wraps(run)
    def wrapped(sandbox: Any, *args: Any, **kwargs: Any) -> Any:
        if sandbox.import_failure is not None:
            return run(sandbox, *args, **kwargs)
        sandbox._ended = None
        with fairness.busy(sandbox.space.root, sandbox.key):
            if sandbox._tenant is not None:
                sandbox._tenant.pin(sandbox.cores)
            outcome = run(sandbox, *args, **kwargs)
            tenant = sandbox._tenant or sandbox._ended
            verdict = tenant.verdict(outcome.status, outcome.message) if tenant is not None else None
            if verdict is not None:
                sandbox._kill()
                outcome.status, outcome.message = verdict
            return outcome

    return wrapped


class Tenant:
    """One started child: ``pid`` is its tree's root (bwrap, or the interpreter itself without bwrap)."""

    def __init__(
        self,
        root: Path,
        key: str,
        pid: int,
        cgroup: Cgroup | None,
        bwrap: bool,
        workdir: Path,
        scratch: Path,
        trusted: bool = False,
        cache: Path | None = None,
    ) -> None:
        self.root, self.key, self.pid, self.cgroup, self.bwrap = root, key, pid, cgroup, bwrap
        self.workdir = workdir
        fairness.register(root, key, pid, cgroup.path if cgroup else None)
        mounts = self._mounts if bwrap else None
        self.guard = diskcap.DiskGuard(mounts, None if bwrap else scratch, self.kill_now, cache)
        self._main: int | None = None
        self._sized: list[str] = []
        self._pinned = False
        self.trusted = trusted  # the reference's own child: timed like any other, never judged

    def tree(self) -> list[int]:
        """Every process of the child's tree: its cgroup's, else the root's descendants (bwrap's init adopts orphans
        in its namespace)."""
        return self.cgroup.procs() if self.cgroup is not None else descendants(self.pid)

    def pin(self, cores: set[int] | None) -> None:
        """The tree on ``cores`` (again before each request while pinned: a thread may have moved itself); None undoes
        a pinning, and costs nothing for a child never pinned."""
        if cores is not None or self._pinned:
            fairness.pin(self.tree(), cores)
            self._pinned = cores is not None

    def verdict(self, status: str, message: str) -> tuple[str, str] | None:
        """After a request ended with ``status`` and ``message``: the (status, message) that replaces it when the child
        broke a rule of the machine (its disk caps, something left running), else None. The caller then kills it."""
        if self.guard.exceeded:
            return "error", self.guard.exceeded
        if status != "ok" and diskcap.NO_SPACE in message:
            return status, f"{message} ({diskcap.space_note(self.bwrap)}; the child is restarted with its space empty)"
        if status in ("ok", "error") and not self.trusted:  # the child lives: it answered
            tree = self.tree()
            main, wrappers = fairness.roles(tree, self.pid, self.bwrap)
            running = fairness.leftovers(self.tree, main, wrappers)
            if running:
                names = ", ".join(running[:5]) + (f" and {len(running) - 5} more" if len(running) > 5 else "")
                return LEFT_RUNNING, f"left processes running after its answer: {names}; all its processes killed"
        return None

    def view(self, path: Path) -> Path:
        """``path`` of the child's file system as the grader sees it while the child lives: through its mount namespace
        under bwrap (its work folder is a tmpfs there), else ``path`` itself."""
        if not self.bwrap:
            return path
        self._mounts()  # finds the interpreter
        return Path(f"/proc/{self._main}/root{path}") if self._main is not None else path

    def kill_now(self) -> None:
        """SIGKILL to the whole tree, from any thread (nothing is waited for here)."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                (self.cgroup.path / "cgroup.kill").write_text("1")
        for pid in [self.pid, *descendants(self.pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self.guard.stop()
        fairness.unregister(self.root, self.key)

    def _mounts(self) -> list[str]:
        """The child's writable tmpfs mounts, seen through its mount namespace (none until its interpreter runs)."""
        if self._main is None or not os.path.exists(f"/proc/{self._main}"):
            self._main = fairness.roles(self.tree(), self.pid, self.bwrap)[0]
            self._sized = (
                [] if self._main is None else _tmpfs_mounts(self._main, [str(self.workdir), "/tmp", "/dev/shm"])
            )
        return [f"/proc/{self._main}/root{path}" for path in self._sized]


def _tmpfs_mounts(pid: int, paths: list[str]) -> list[str]:
    """Those of ``paths`` that are (topmost) tmpfs mount points in the process's mount namespace."""
    top: dict[str, str] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/mountinfo") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and right:
                top[fields[4]] = right.split()[0]  # later lines are mounted over earlier ones
    return [path for path in paths if top.get(path) == "tmpfs"]
