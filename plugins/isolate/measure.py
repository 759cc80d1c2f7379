"""Measurements taken from outside the sandbox: memory of the child's whole process tree, its output, OOM evidence.

Nothing here runs in the child or trusts what it says. The grader samples the memory of every process in the tree on
every request the same way, so a measured call looks like any other to the submission:

- the tree: the sandbox's cgroup (``cgroup.procs``: forked and ``setsid`` processes included), else the processes
  descended from the sandbox's root process (a ``/proc`` scan, repeated every :data:`RESCAN_S`);
- a sample: the resident memory of each process that existed when the request began, plus the private memory
  (``smaps_rollup``) of each process started since (a fork shares its parent's pages until it writes them);
- the peak growth: the largest sample minus the first, and, where the child cannot write ``/proc``, each original
  process's kernel-kept peak (``VmHWM``, reset by the grader when the request begins) minus its size then, so a
  spike between two samples still counts; and the cgroup's ``memory.peak`` where the memory controller is enabled.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from pathlib import Path
from typing import Any

from plugins.config.gpus import GPU_DEVICE
from plugins.isolate.containment import Cgroup

INTERVAL_S = 0.001
RESCAN_S = 0.02
PAGE = os.sysconf("SC_PAGE_SIZE")
FOLDER_ENTRIES = 20_000  # files and folders walked per reading of a child's writable folders; past it, no reading


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _rss(pid: int) -> int:
    fields = _read(f"/proc/{pid}/statm").split()
    return int(fields[1]) * PAGE if len(fields) > 1 else 0


def _private(pid: int) -> int:
    total = 0
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def _status_bytes(pid: int, field: str) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def private_tmpfs_bytes(pids: list[int], folders: list[Path] = ()) -> int:
    """Bytes used on each file system the processes see at ``/tmp``, ``/dev/shm``, one of ``folders`` or a folder
    directly inside one, where their view is not the grader's (through ``/proc/<pid>/root``: a sandbox's private
    tmpfs mounts, its work folder's included), each file system counted once."""
    places = ["/tmp", "/dev/shm", *map(str, folders)]
    for folder in folders:
        with contextlib.suppress(OSError):
            places += [entry.path for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
    own = {os.stat(path).st_dev for path in ("/", *places) if os.path.exists(path)}
    used: dict[int, int] = {}
    for pid in pids:
        for place in places:
            inside = f"/proc/{pid}/root{place}"
            try:
                device = os.stat(inside).st_dev
                if device not in own and device not in used:
                    info = os.statvfs(inside)
                    used[device] = (info.f_blocks - info.f_bfree) * info.f_frsize
            except OSError:
                continue
    return sum(used.values())


def folder_bytes(folders: list[Path], limit: int = FOLDER_ENTRIES) -> int | None:
    """Disk blocks held by the files under ``folders`` (links not followed); None past ``limit`` entries, rather than
    a reading that misses what was not walked."""
    total, seen = 0, 0
    todo = [str(f) for f in folders]
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > limit:
                return None
            try:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def descendants(root: int) -> list[int]:
    """``root`` and every process descended from it (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _read(f"/proc/{name}/stat")
            if stat:
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class TreeMemory:
    """Peak memory growth of a process tree during one request (see the module docstring)."""

    def __init__(self, root: int, cgroup: Cgroup | None, hwm_trusted: bool):
        self.root, self.cgroup, self.hwm_trusted = root, cgroup, hwm_trusted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: dict[int, int] = {}
        self._members: list[int] = []
        self._scanned = 0.0
        self._peak = self._first = 0
        self._peak_fd: int | None = None
        self._current0 = 0

    def members(self) -> list[int]:
        if self.cgroup is not None:
            return self.cgroup.procs()
        now = time.monotonic()
        if now - self._scanned > RESCAN_S:
            self._members, self._scanned = descendants(self.root), now
        return self._members

    def start(self) -> None:
        """Reset the kernel's peak marks, take the first sample and sample on a thread until :meth:`stop`."""
        self._scanned = 0.0
        pids = self.members()
        if self.hwm_trusted:
            for pid in pids:
                with contextlib.suppress(OSError):
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
        self._base = {pid: _rss(pid) for pid in pids}
        self._first = self._peak = sum(self._base.values())
        self._start_memory_peak()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """The peak growth in bytes since :meth:`start` (never negative)."""
        if self._thread is None:
            return 0
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()
        growth = self._peak - self._first
        if self.hwm_trusted:
            alive = [pid for pid in self._base if _rss(pid)]
            growth = max(growth, sum(_status_bytes(pid, "VmHWM") - self._base[pid] for pid in alive))
        return max(growth, self._memory_peak_growth(), 0)

    def current(self, folders: list[Path] = ()) -> int:
        """The tree's memory now, in bytes: the cgroup's charge (``memory.current``, plus ``memory.swap.current``) where
        the memory controller is on, else each process's resident and swapped memory (``/proc``; private memory only
        for processes started since the request began, as the samples count them) plus what its private tmpfs mounts
        hold (``/tmp``, ``/dev/shm`` and the work folder under bwrap, which the cgroup would have charged). Files
        under ``folders`` (the child's writable copy) count too: memory kept in files is memory kept. Only differences
        between two readings in one request mean anything. -1 when the folders hold too many entries to walk (a figure
        from it fails)."""
        files = folder_bytes(folders)
        if files is None:
            return -1
        if self.cgroup is not None and (self.cgroup.path / "memory.current").exists():
            charged = ("memory.current", "memory.swap.current")
            return sum(int(_read(str(self.cgroup.path / name)) or 0) for name in charged) + files
        pids = self.members()
        total = sum((_rss(p) if p in self._base else _private(p)) + _status_bytes(p, "VmSwap") for p in pids)
        return total + private_tmpfs_bytes(pids, folders) + files

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._sample()

    def _sample(self) -> None:
        total = sum(_rss(pid) if pid in self._base else _private(pid) for pid in self.members())
        self._peak = max(self._peak, total)

    def _start_memory_peak(self) -> None:
        """Where the cgroup has the memory controller: reset ``memory.peak`` for our own file descriptor."""
        self._close_peak()
        if self.cgroup is None or not (self.cgroup.path / "memory.peak").exists():
            return
        try:
            fd = os.open(self.cgroup.path / "memory.peak", os.O_RDWR)
            os.write(fd, b"reset\n")  # Linux 6.12+: the peak restarts for reads through this descriptor
        except OSError:
            with contextlib.suppress(UnboundLocalError, OSError):
                os.close(fd)
            return
        self._peak_fd = fd
        self._current0 = int(_read(str(self.cgroup.path / "memory.current")) or 0)

    def _memory_peak_growth(self) -> int:
        if self._peak_fd is None:
            return 0
        try:
            peak = int(os.pread(self._peak_fd, 64, 0).split()[0])
        except (OSError, ValueError, IndexError):
            peak = 0
        self._close_peak()
        return peak - self._current0

    def _close_peak(self) -> None:
        if self._peak_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._peak_fd)
            self._peak_fd = None


class OutputTail:
    """Drains a child's stdout and stderr pipes on a thread, keeping only the last bytes of each and a count of the
    rest: a flood of output costs the grader neither memory nor disk, and only slows the flooding child down."""

    def __init__(self, fds: dict[str, int], keep_chars: int):
        self.keep = 4 * keep_chars  # bytes: enough for ``keep_chars`` characters of UTF-8
        self.keep_chars = keep_chars
        self._fds = dict(fds)
        self._tails = {name: bytearray() for name in fds}
        self._counts = dict.fromkeys(fds, 0)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ended: set[str] = set()
        for fd in fds.values():
            os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._drain_until_done, daemon=True)
        self._thread.start()

    def take(self, name: str) -> str:
        """What the child wrote to ``name`` since the last take, cut to its tail (as the reports show it)."""
        with self._lock:
            self._drain_available()
            data, count = bytes(self._tails[name]), self._counts[name]
            self._tails[name].clear()
            self._counts[name] = 0
        # Undecodable bytes (a lone surrogate's encoding among them) become U+FFFD: the text is always valid UTF-8.
        text = data.decode("utf-8", errors="replace")
        if count <= len(data) and len(text) <= self.keep_chars:
            return text
        kept = text[-self.keep_chars :]
        return f"[... {max(count - len(kept.encode()), 0)} bytes cut ...]\n{kept}"

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=2)
        with self._lock:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()

    def _drain_until_done(self) -> None:
        while not self._done.is_set():
            with self._lock:
                live = [fd for name, fd in self._fds.items() if name not in self._ended]
            if not live:
                return  # every writer is gone
            poller = select.poll()
            for fd in live:
                poller.register(fd, select.POLLIN)
            if poller.poll(200):
                with self._lock:
                    self._drain_available()

    def _drain_available(self) -> None:
        """Read what is there without blocking; a pipe that reached its end is marked so."""
        for name, fd in list(self._fds.items()):
            while name not in self._ended:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    self._ended.add(name)
                    break
                tail = self._tails[name]
                tail += chunk
                self._counts[name] += len(chunk)
                if len(tail) > self.keep:
                    del tail[: len(tail) - self.keep]


def oom_kills() -> int:
    """The kernel's count of out-of-memory kills on this machine (``/proc/vmstat``), -1 where it is not kept."""
    for line in _read("/proc/vmstat").splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return -1


# --- the time floor ---

# Generous ceilings of what hardware can do, so that a time under the floor is impossible, not merely fast: a CPU
# core at 5 GHz with two 512-bit FMA units (64 float32 FLOP per cycle; half for float64), and a GPU above any 2026
# part's dense low-precision tensor peak.
CPU_FLOPS_PER_CORE = 5e9 * 64
GPU_FLOPS = 4e15


def time_floor(reference: Any, case: Any, device: str) -> tuple[float, str] | None:
    """The least time the case's arithmetic could take here, with how it was reckoned; None when the reference module
    does not count its FLOPs (``min_flops(case)``)."""
    counter = getattr(reference, "min_flops", None)
    if counter is None:
        return None
    flops = float(counter(case))
    peak = GPU_FLOPS if device == GPU_DEVICE else CPU_FLOPS_PER_CORE * (os.cpu_count() or 1)
    return flops / peak, f"{flops / 1e6:.0f} MFLOP at most {peak / 1e9:.0f} GFLOP/s"
