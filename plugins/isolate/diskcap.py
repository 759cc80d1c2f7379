"""Each child's writable space is capped, so that no submission can fill the disk the grader and its rivals need.

Under bwrap (containment level ``namespaces``) a child can write only to three tmpfs mounts of its own, each with a
size: its work folder (``containment.WORK_BYTES``; the vetted copy of its folder is copied in before the child starts),
``/tmp`` and ``/dev/shm`` (``containment.PRIVATE_TMP_BYTES`` each). Everything else is read-only, the host's disk
included. A write past a mount's size fails with ENOSPC inside the submission, whose case fails with that error; no
other child's space, nor the grader's, is touched. A tmpfs size counts bytes only: empty files cost the kernel memory
without filling it, so :class:`DiskGuard` counts the files of those mounts from outside (``statvfs`` through the child's
``/proc/<pid>/root``) for as long as the child lives, and kills its tree past :data:`MAX_FILES`.

Without bwrap (the ``uid`` and ``process-group`` rungs) the work folder and the private temp folder are on the host's
disk in the run's folder: the guard walks them every :data:`WALK_S` and kills the tree past ``WORK_BYTES +
PRIVATE_TMP_BYTES`` or :data:`MAX_FILES`; RLIMIT_FSIZE caps each file. A child there can still write wherever its
user may (the host's ``/tmp``), which those rungs do not contain; their warnings say so.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from plugins.isolate.containment import PRIVATE_TMP_BYTES, WORK_BYTES
from plugins.isolate.runspace import MAX_ENTRIES, MAX_TOTAL_BYTES

# Files and folders in a child's writable mounts together: room for the largest folder copy (runspace.MAX_ENTRIES)
# and for compiler caches; about 1 KiB of kernel memory each on a tmpfs, so at most ~50 MiB.
MAX_FILES = MAX_ENTRIES + 30_000
POLL_S = 0.02  # statvfs of three mounts: cheap, so often (files made between two polls are the overshoot)
WALK_S = 0.25  # a walk of the folders on the host's disk
# A child's compile cache (compile_cache.py): a folder on the host's disk that its owner's children share.
CACHE_BYTES = MAX_TOTAL_BYTES
CACHE_FILES = 20_000
NO_SPACE = "No space left on device"


def space_note(bwrap: bool) -> str:
    """What a submission that ran out of its writable space is told (beside its own ENOSPC error)."""
    if bwrap:
        return (
            f"its writable space is capped: the work folder at {WORK_BYTES >> 20} MiB, /tmp and /dev/shm at "
            f"{PRIVATE_TMP_BYTES >> 20} MiB each, {MAX_FILES} files in all"
        )
    return f"its folders are capped at {(WORK_BYTES + PRIVATE_TMP_BYTES) >> 20} MiB and {MAX_FILES} files together"


def describe(bwrap: bool) -> str:
    """The sandbox fact of the reports: what caps a child's writable space at this rung."""
    if bwrap:
        return (
            f"three tmpfs mounts of its own, the rest read-only: its work folder ({WORK_BYTES >> 20} MiB), /tmp and "
            f"/dev/shm ({PRIVATE_TMP_BYTES >> 20} MiB each); at most {MAX_FILES} files, counted by the grader"
        )
    return (
        f"its folders in the run's folder on the host's disk, measured by the grader every {WALK_S:g} s (at most "
        f"{(WORK_BYTES + PRIVATE_TMP_BYTES) >> 20} MiB and {MAX_FILES} files) and each file capped by RLIMIT_FSIZE; "
        "it may also write wherever its user can (the host's /tmp), uncapped"
    )


class DiskGuard:
    """Watches one child's writable space from the parent on a thread; past a cap it calls ``kill`` once and says why
    in :attr:`exceeded`. ``mounts()`` gives the child's tmpfs mounts as seen from here (bwrap), else ``folder`` (its
    scratch folder on the host's disk) is walked."""

    def __init__(
        self,
        mounts: Callable[[], list[str]] | None,
        folder: Path | None,
        kill: Callable[[], None],
        cache: Path | None = None,
    ):
        self.mounts, self.folder, self.kill, self.cache = mounts, folder, kill, cache
        self._cache_walked = 0.0
        self.exceeded = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kernelgrade-disk", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def check(self) -> str:
        """Why the child is over its caps now ("" when it is not)."""
        if self.cache is not None and time.monotonic() - self._cache_walked >= WALK_S:  # a walk: not at every poll
            self._cache_walked = time.monotonic()
            if reason := _over_cache(self.cache):
                return reason
        if self.mounts is not None:
            return _over(*_mounted_usage(self.mounts()), files_only=True)
        if self.folder is not None:
            return _over(*walked_usage(self.folder, WORK_BYTES + PRIVATE_TMP_BYTES, MAX_FILES), files_only=False)
        return ""

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S if self.mounts is not None else WALK_S):
            reason = self.check()
            if reason:
                self.exceeded = f"{reason}; all its processes killed ({space_note(self.mounts is not None)})"
                self.kill()
                return


def _over(files: int, allocated: int, files_only: bool) -> str:
    if files > MAX_FILES:
        return f"made more than {MAX_FILES} files and folders in its writable space"
    if not files_only and allocated > WORK_BYTES + PRIVATE_TMP_BYTES:
        return f"wrote more than {(WORK_BYTES + PRIVATE_TMP_BYTES) >> 20} MiB to its folders"
    return ""


def _over_cache(cache: Path) -> str:
    """Why the owner's compile cache (on the host's disk, shared by the owner's children) is over its caps, or ""."""
    files, allocated = walked_usage(cache, CACHE_BYTES, CACHE_FILES)
    if files > CACHE_FILES or allocated > CACHE_BYTES:
        return f"filled its compile cache past {CACHE_BYTES >> 20} MiB or {CACHE_FILES} files"
    return ""


def _mounted_usage(paths: list[str]) -> tuple[int, int]:
    files = allocated = 0
    for path in paths:
        with contextlib.suppress(OSError):
            info = os.statvfs(path)
            files += info.f_files - info.f_ffree
            allocated += (info.f_blocks - info.f_bfree) * info.f_frsize
    return files, allocated


def walked_usage(folder: Path, max_bytes: int, max_files: int) -> tuple[int, int]:
    """Entries and allocated bytes under ``folder`` (links not followed), the walk cut short past either cap."""
    files = allocated = 0
    todo = [str(folder)]
    while todo and files <= max_files and allocated <= max_bytes:
        with contextlib.suppress(OSError), os.scandir(todo.pop()) as listing:
            for entry in listing:
                files += 1
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    allocated += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
    return files, allocated
