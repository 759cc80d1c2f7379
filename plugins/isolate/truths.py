"""The float64 truths of a run's cases, computed once per run and shared by its xdist workers.

Every model is graded on the same inputs, so a case's truth is the same for all of them; with submissions spread over
many workers, each worker would otherwise compute the truth of nearly every case again (measured on the 2-core
machine: 48 s of reference work per run; sixteen workers would repeat most of it). The first worker that needs a truth
computes it under a per-case file lock and writes it into the run's private folder; the others wait for it and read it.

Only the truth is shared, not the inputs: inputs are redrawn from the run's seed in each process, which is cheap and
keeps the files small. A truth too large to be worth writing (softmax + top-k keeps float64 probabilities of up to
150 M entries) or one that cannot be pickled (a truth with a closure that derives figures) is computed in each process
as before.

The files hold pickles, read back only by the grader. No child can write them: the run folder is hidden from children
under bwrap and mode 0711, owned by the grader, when children run as another user; at the weakest containment level (a
process group only, the same user) a child could already change the grader's own files, so the cache opens no new
door there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_SHARED_BYTES = 128 * 2**20  # larger truths are recomputed per process: writing and reading them costs as much


class TruthStore:
    """Truths keyed by (challenge, case id, trial) in ``folder`` (None: no sharing, every call computes)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.waited = 0.0  # seconds spent waiting for another worker's truth (not this process's own work)
        if folder is not None:
            folder.mkdir(mode=0o700, exist_ok=True)

    def get(self, key: tuple[str, str, int], compute: Callable[[], Any]) -> Any:
        if self.folder is None:
            return compute()
        name = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        path, local = self.folder / f"{name}.pkl", self.folder / f"{name}.local"
        if local.exists():  # too large or unpicklable: every process computes it, side by side (no lock)
            return compute()
        with open(self.folder / f"{name}.lock", "a") as lock:
            start = time.perf_counter()
            fcntl.flock(lock, fcntl.LOCK_EX)  # whoever holds it is computing this truth: wait, then read it
            self.waited += time.perf_counter() - start
            try:
                found = _read(path)
                if found is not None:
                    return found
                if not local.exists():  # the first to need it computes it under the lock and shares it if it can
                    value = compute()
                    _write(path, value, local)
                    return value
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return compute()  # marked local while this process waited


def _read(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        return None


def _write(path: Path, value: Any, local_mark: Path) -> None:
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        local_mark.touch()
        return
    if len(data) > MAX_SHARED_BYTES:
        local_mark.touch()
        return
    partial = path.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}")
    try:
        partial.write_bytes(data)
        partial.rename(path)  # readers never see half a file
    except OSError:  # a full disk costs the sharing, not the case
        with contextlib.suppress(OSError):
            partial.unlink()
