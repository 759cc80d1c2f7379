"""A grading run's private space: the submissions' copies, the sandboxes' scratch folders and the run's locks.

One folder per run, ``$TMPDIR/kernelgrade-run-<pid>-<start time>-<random>``, made by the run's first process (the
xdist controller, or the only process) before any submission code runs. Every selected submission folder is copied
into it at once (:func:`copy_folder`: regular files, folders and links that stay inside the folder; FIFOs, devices,
sockets, links that leave the folder and files over the size caps are left out with a note), so no submission can
change another's source, or its own, before it is graded. The folder is mode 0711: a child that runs as another user
can reach its own scratch folder by name but list nothing. The speed lock lives here, so neither a submission nor
another run on the machine can hold it, and so does the registry of the run's live children that every worker freezes
while it times a case (``fairness.py``). The run's first process removes the folder at the end; a run killed before
that leaves it behind, and the next run's start removes every folder whose owner process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugins.base.records import safe_text
from plugins.isolate import containment

RUN_PREFIX = "kernelgrade-run-"
SKIP_NAMES = {".git", "__pycache__", ".venv", "venv", "node_modules"}
SKIP_SUFFIXES = (".pyc",)
MAX_FILE_BYTES = 64 * 2**20  # apparent size; larger data files stay behind: a submission's code does not need them
MAX_TOTAL_BYTES = 256 * 2**20  # allocated bytes per submission folder (sparse holes are free)
MAX_ENTRIES = 20_000
MAX_DEPTH = 32
# Notes of what a copy left out: each cut to NOTE_CHARS and made valid UTF-8 (a file name may hold any byte), at most
# MAX_NOTES of them and one line counting the rest: 20,000 FIFOs in a folder make one short list, not megabytes of
# results.json and of every import failure's message.
MAX_NOTES = 20
NOTE_CHARS = 300
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass
class _Budget:
    entries: int = 0
    allocated: int = 0


def unit_key(model: str, challenge: str) -> str:
    """A file or folder name for one (model, challenge) in the run's private space: a digest, since a model's folder
    name is the submitter's text (markup, slashes, 255 bytes) and must not pick the file's place."""
    return hashlib.sha256(f"{model}\0{challenge}".encode()).hexdigest()[:32]


def copy_folder(source: Path, target: Path) -> list[str]:
    """Copy ``source`` to ``target`` (which must not exist) without following any link out of it; the notes say what
    was left out and why. Files are opened without following links and without blocking, and checked again after
    opening, so a FIFO or a link swapped in after the listing is still refused; sparse files keep their holes."""
    notes = _Notes()
    root_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        target.mkdir(parents=True)
        _copy_dir(root_fd, target, Path(), notes, _Budget(), 0)
    finally:
        os.close(root_fd)
    return notes.lines()


class _Notes(list):
    """A list of notes that keeps the first :data:`MAX_NOTES`, each made safe, and counts the rest."""

    dropped = 0

    def append(self, note: str) -> None:
        if len(self) < MAX_NOTES:
            super().append(safe_text(note, NOTE_CHARS))
        else:
            self.dropped += 1

    def lines(self) -> list[str]:
        return [*self, *([f"and {self.dropped} more notes like these"] if self.dropped else [])]


def _copy_dir(dir_fd: int, target: Path, rel: Path, notes: list[str], budget: _Budget, depth: int) -> None:
    with os.scandir(dir_fd) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        path = rel / entry.name
        if entry.name in SKIP_NAMES or entry.name.endswith(SKIP_SUFFIXES):
            continue
        budget.entries += 1
        if budget.entries > MAX_ENTRIES:
            notes.append(f"left out: everything after {MAX_ENTRIES} entries (from {path})")
            return
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            _copy_link(dir_fd, entry.name, target, path, notes)
        elif stat.S_ISDIR(mode):
            if depth + 1 > MAX_DEPTH:
                notes.append(f"left out: {path}/ (folders nested deeper than {MAX_DEPTH})")
                continue
            fd = _open(entry.name, dir_fd, os.O_DIRECTORY, path, notes)
            if fd is not None:
                try:
                    (target / entry.name).mkdir()
                    _copy_dir(fd, target / entry.name, path, notes, budget, depth + 1)
                finally:
                    os.close(fd)
        elif stat.S_ISREG(mode):
            _copy_file(dir_fd, entry.name, target / entry.name, path, notes, budget)
        else:
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            notes.append(
                f"left out: {path} is {kind}; only regular files, folders and links inside the folder are copied"
            )


def _open(name: str, dir_fd: int, flags: int, path: Path, notes: list[str]) -> int | None:
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | flags, dir_fd=dir_fd)
    except OSError as exc:
        notes.append(f"left out: {path} could not be opened ({exc.strerror})")
        return None


def _copy_file(dir_fd: int, name: str, target: Path, path: Path, notes: list[str], budget: _Budget) -> None:
    fd = _open(name, dir_fd, 0, path, notes)
    if fd is None:
        return
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped after the listing
            notes.append(f"left out: {path} is {_KINDS.get(stat.S_IFMT(info.st_mode), 'not a regular file')}")
            return
        allocated = min(info.st_size, info.st_blocks * 512)
        if info.st_size > MAX_FILE_BYTES:
            size = f"{info.st_size / 2**20:.0f} MiB"
            notes.append(f"left out: {path} ({size}) is over the {MAX_FILE_BYTES >> 20} MiB cap per file")
            return
        if budget.allocated + allocated > MAX_TOTAL_BYTES:
            notes.append(f"left out: {path}: the folder's copy would exceed {MAX_TOTAL_BYTES >> 20} MiB")
            return
        budget.allocated += allocated
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644 | (info.st_mode & 0o111))
        try:
            _copy_data(fd, out, info.st_size)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _copy_data(src: int, dst: int, size: int) -> None:
    """Copy the data extents only (SEEK_DATA/SEEK_HOLE), so a sparse file stays sparse; then set the length."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
            end = os.lseek(src, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset: the rest is a hole
                break
            start, end = offset, size  # no hole support here: copy the rest as it is
        os.lseek(src, start, os.SEEK_SET)
        os.lseek(dst, start, os.SEEK_SET)
        left = min(end, size) - start
        while left > 0:
            chunk = os.read(src, min(left, 1 << 20))
            if not chunk:
                break
            os.write(dst, chunk)
            left -= len(chunk)
        offset = end
    os.ftruncate(dst, size)


def _copy_link(dir_fd: int, name: str, target: Path, path: Path, notes: list[str]) -> None:
    """Keep a link whose target, read as a path, stays inside the folder (as a relative link); refuse any other."""
    link = os.readlink(name, dir_fd=dir_fd)
    inside = os.path.normpath(os.path.join(str(path.parent), link))
    if os.path.isabs(link) or inside == ".." or inside.startswith("../"):
        notes.append(f"left out: {path} is a link to {link}, outside the submission's folder")
        return
    os.symlink(os.path.relpath(inside, str(path.parent)), target / name)


# --- the run's folder ---


@dataclass(frozen=True)
class RunSpace:
    """The run's private folder (see the module docstring); ``owner`` is true in the process that removes it."""

    root: Path
    owner: bool

    @classmethod
    def create(cls, base: Path | None = None) -> RunSpace:
        base = Path(base or tempfile.gettempdir())
        remove_stale(base)
        pid = os.getpid()
        root = base / f"{RUN_PREFIX}{pid}-{process_start(pid)}-{secrets.token_hex(4)}"
        root.mkdir(mode=0o700)
        root.chmod(0o711)
        # The copies and the manifest are the grader's alone: a child that runs as nobody without bwrap (the GPU
        # rung on a host where CUDA does not start in bwrap) could otherwise read every other model's copy, and run
        # a rival's code as its own. A child gets its own copy from the grader (sandbox.py), never from here.
        (root / "copies").mkdir(mode=0o700)
        (root / "sandboxes").mkdir(mode=0o711)  # a child reaches its own scratch folder by name, lists nothing
        (root / "speed.lock").touch(mode=0o600)
        # Compile caches, one per owner under a name only the grader can compute (its key is 0600): compile_cache.py.
        (root / "compile").mkdir(mode=0o711)
        write_private(root / "compile.key", secrets.token_hex(32))
        write_private(root / "manifest.json", "{}")
        space = cls(root, owner=True)
        level = containment.probe()
        if level.cgroup_base is not None:
            containment.remove_stale_cgroups(level.cgroup_base, RUN_PREFIX, owner_alive)
            space.cgroup_parent(level)
        return space

    @classmethod
    def attach(cls, root: str | Path) -> RunSpace:
        """The run's folder in an xdist worker, made by the controller."""
        return cls(Path(root), owner=False)

    def copy_submissions(self, folders: list[Path]) -> None:
        """Copy every folder once, before any submission code runs; the manifest maps original -> copy and notes."""
        manifest = {}
        for folder in sorted(set(folders)):
            # The path's own bytes: a folder name need not be valid UTF-8 (str holds such bytes as lone surrogates).
            copy = self.root / "copies" / hashlib.sha256(os.fsencode(folder)).hexdigest()[:20]
            try:
                notes = copy_folder(folder, copy)
            except OSError as exc:
                shutil.rmtree(copy, ignore_errors=True)
                notes = [safe_text(f"the folder could not be copied: {exc}", NOTE_CHARS)]
                copy = None
            manifest[str(folder)] = {"copy": str(copy) if copy else None, "notes": notes}
        write_private(self.root / "manifest.json", json.dumps(manifest, indent=1))

    def manifest(self) -> dict[str, dict]:
        try:
            return json.loads((self.root / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}

    def scratch(self) -> Path:
        """A fresh scratch folder for one sandbox start, under an unguessable name."""
        path = self.root / "sandboxes" / secrets.token_hex(8)
        path.mkdir(mode=0o700)
        return path

    @contextlib.contextmanager
    def speed_lock(self, device: str = "", slots: int = 1, shared: bool = False) -> Iterator[int | None]:
        """A speed slot of this run, shared by its xdist workers; no sandbox child can see the files. A GPU (``device``
        its id) has one slot: one timed case per GPU at a time. The CPUs have ``slots``, taken in the speed phase, when
        no correctness work runs beside them (see ``schedule.py``), each timed case a single-threaded pair of
        processes: a host with many cores times several cases at once without one slowing another. Yields the index
        of the CPU slot held (None for a GPU's), whose cores the timed pair is pinned to (``fairness.slot_cores``).
        ``shared``: a GPU's slot held beside other shared holders, never beside a timed case (the untimed warm-up
        calls of speed cases on the device, ``gpu_cases.warm_up``)."""
        names = [f"speed-gpu{device}.lock"] if device else [f"speed-cpu{i}.lock" for i in range(max(1, slots))]
        handles = [open(self.root / name, "a") for name in names]  # noqa: SIM115 (closed in the finally below)
        held = None
        try:
            if len(handles) == 1:
                fcntl.flock(handles[0], fcntl.LOCK_SH if shared and device else fcntl.LOCK_EX)
                held = handles[0]
            while held is None:
                for handle in handles:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    held = handle
                    break
                else:
                    time.sleep(0.02)
            yield None if device else handles.index(held)
        finally:
            if held is not None:
                fcntl.flock(held, fcntl.LOCK_UN)
            for handle in handles:
                handle.close()

    def cgroup_parent(self, level: containment.Containment) -> Path | None:
        """The run's cgroup, under which each sandbox makes its own (None where cgroups are not writable)."""
        if level.cgroup_base is None:
            return None
        group = containment.Cgroup.make(level.cgroup_base, self.root.name, memory=level.memory_peak)
        return group.path if group else None

    def remove(self) -> None:
        if self.owner:
            shutil.rmtree(self.root, ignore_errors=True)
            level = containment.probe()
            if level.cgroup_base is not None:
                containment.Cgroup(level.cgroup_base / self.root.name).remove()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the grader's user alone (mode 0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # a file that existed keeps its mode through O_CREAT: set it


def child_source(space: RunSpace, folder: Path | None, scratch: Path) -> tuple[Path | None, list[str]]:
    """The folder a sandbox child's copy is made from, and the notes of its vetting: the run's vetted copy of the
    submission's folder, else one made now in ``scratch`` (a sandbox outside a grading run); None for the reference's
    own entry points (no folder) or a folder that cannot be read."""
    if folder is None:
        return None, []
    entry = space.manifest().get(str(folder)) or {}
    if entry.get("copy"):
        return Path(entry["copy"]), entry["notes"]
    try:
        notes = copy_folder(folder, scratch / "src")
    except OSError as exc:  # the folder vanished or cannot be read: the import then fails, with this reason
        return None, entry.get("notes") or [f"could not be made: {exc}"]
    return scratch / "src", entry.get("notes") or notes


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (with the pid, it names one process, never a reused pid)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def owner_alive(name: str, prefix: str = RUN_PREFIX) -> bool:
    """Whether the process named in ``<prefix><pid>-<start>-...`` still runs (the same process, not a reused pid)."""
    try:
        pid, start = name[len(prefix) :].split("-")[:2]
        return process_start(int(pid)) == start and start != "0"
    except ValueError:
        return True  # not a name of ours: leave it alone


def remove_stale(base: Path) -> list[Path]:
    """Remove the folders of runs whose process is gone (killed before it could clean up)."""
    removed = []
    with contextlib.suppress(OSError):
        for path in base.iterdir():
            if path.name.startswith(RUN_PREFIX) and not owner_alive(path.name):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


_DEFAULT: list[RunSpace] = []


def default() -> RunSpace:
    """A run folder for this process, for sandboxes made outside a grading run (the grader's own tests, benchmarks);
    removed when the process exits normally, else by the next run's start."""
    if not _DEFAULT:
        import atexit

        _DEFAULT.append(RunSpace.create())
        atexit.register(_DEFAULT[0].remove)
    return _DEFAULT[0]


# The run's space in ``config.stash``: set by the isolate plugin, read by the schedule (its speed-phase barrier).
RUN_SPACE_KEY = pytest.StashKey[RunSpace]()
