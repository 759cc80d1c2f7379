"""The float64 truths of a run's cases, computed once per run and shared by its xdist workers.

Every model is graded on the same inputs, so a case's truth is the same for all of them; with submissions spread over
many workers, each worker would otherwise compute the truth of nearly every case again (measured on the 2-core
machine: 48 s of reference work per run; sixteen workers would repeat most of it). The first worker that needs a truth
computes it under a per-case file lock and writes it into the run's private folder; the others wait for it and read it.

Only the truth is shared, not the inputs: inputs are redrawn from the run's seed in each process, which is cheap and
keeps the files small. A truth too large to be worth writing (softmax + top-k keeps float64 probabilities of up to
150 M entries) or one that is not plain data (an ``Expected`` whose ``derive`` closure computes figures) is computed
in each process as before.

The files hold data only, never code: one ``.npz`` per truth, read with ``allow_pickle=False``, whose arrays are the
truth's arrays and whose ``meta`` member is JSON for the rest (numbers, strings, lists, dicts, and the contract's
records ``Expected``, ``Bound``, ``Exact``, ``TopK``, ``AtMost``, rebuilt by name from that list). A file that is not
exactly that (a planted pickle, a link, a file of another owner or writable by others, a member over the size cap) is
never loaded: the truth is computed here, as if no file were there, and the file replaced. No child can write the
folder anyway (hidden under bwrap; mode 0700, owned by the grader, where children run as another user), so a file
there is the grader's own; the format keeps a mistake in that from becoming code run in the grader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import stat
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reference import contract

MAX_SHARED_BYTES = 128 * 2**20  # larger truths are recomputed per process: writing and reading them costs as much
# The contract's records a truth may hold, rebuilt by name; any other object keeps its truth local.
RECORDS = {
    cls.__name__: cls for cls in (contract.Expected, contract.Bound, contract.Exact, contract.TopK, contract.AtMost)
}
_ARRAY_KINDS = "biufc"  # numbers and booleans: what np.load reads without pickle


class NotData(ValueError):
    """A value the store does not write (it is computed in each process instead), or a file it does not read."""


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
        path, local = self._paths(key)
        if local.exists():  # too large or not plain data: every process computes it, side by side (no lock)
            return compute()
        with open(path.with_suffix(".lock"), "a") as lock:
            start = time.perf_counter()
            fcntl.flock(lock, fcntl.LOCK_EX)  # whoever holds it is computing this truth: wait, then read it
            self.waited += time.perf_counter() - start
            try:
                found = read(path)
                if found is not None:
                    return found[0]
                if not local.exists():  # the first to need it computes it under the lock and shares it if it can
                    value = compute()
                    _write(path, value, local)
                    return value
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return compute()  # marked local while this process waited

    def prepare(self, key: tuple[str, str, int], compute: Callable[[], Any]) -> bool:
        """Have ``key``'s truth in the store (computed now unless there), for a later ``get``; False where it cannot be
        shared (no store, or a truth that every process computes itself), and then nothing is computed."""
        if self.folder is None:
            return False
        path, local = self._paths(key)
        if not path.exists() and not local.exists():  # (one that is there is not read back: get will)
            self.get(key, compute)
        return not local.exists()

    def _paths(self, key: tuple[str, str, int]) -> tuple[Path, Path]:
        """The truth's file and the mark of one that is not shared."""
        assert self.folder is not None
        name = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        return self.folder / f"{name}.npz", self.folder / f"{name}.local"


def read(path: Path) -> tuple[Any] | None:
    """``(truth,)`` from a file this store wrote, or None when there is none or it is not one (module docstring)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # absent, or a link
        return None
    with open(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        mine = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022
        if not mine or info.st_size > 2 * MAX_SHARED_BYTES:
            return None
        try:
            return (_load(handle.read()),)
        except (NotData, ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile):
            return None


def _load(data: bytes) -> Any:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # the members' sizes, before any is inflated
        if sum(member.file_size for member in archive.infolist()) > 2 * MAX_SHARED_BYTES:
            raise NotData("members over the size cap")
    with np.load(io.BytesIO(data), allow_pickle=False) as members:
        arrays = {name: members[name] for name in members.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    return decode(meta, arrays)


def _write(path: Path, value: Any, local_mark: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    try:
        meta = encode(value, arrays)
    except NotData:
        local_mark.touch()
        return
    if sum(a.nbytes for a in arrays.values()) > MAX_SHARED_BYTES:
        local_mark.touch()
        return
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    partial = path.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}")
    try:
        with open(partial, "wb") as handle:
            np.savez(handle, **arrays)
        partial.rename(path)  # readers never see half a file
    except OSError:  # a full disk costs the sharing, not the case
        with contextlib.suppress(OSError):
            partial.unlink()


def encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON values, its arrays moved into ``arrays`` (named ``a0``, ``a1``...); raises :class:`NotData`
    for anything else (a closure, an object array, an unknown class)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in _ARRAY_KINDS:
            raise NotData(f"an array of dtype {array.dtype}")
        arrays[f"a{len(arrays)}"] = array
        return {"array" if isinstance(value, np.ndarray) else "scalar": f"a{len(arrays) - 1}"}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [encode(v, arrays) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": [[k, encode(v, arrays)] for k, v in value.items()]}
    if type(value).__name__ in RECORDS and type(value) is RECORDS[type(value).__name__]:
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if callable(fields.get("derive")):
            raise NotData("a truth with a derive closure")
        return {"record": type(value).__name__, "fields": encode(fields, arrays)}
    raise NotData(f"a {type(value).__name__}")


def decode(meta: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`encode`; raises :class:`NotData` (or KeyError) on anything it would not have written."""
    if meta is None or isinstance(meta, (bool, int, float, str)):
        return meta
    if not isinstance(meta, dict) or len(meta) not in (1, 2):
        raise NotData("not a value this store writes")
    if "array" in meta:
        return arrays[meta["array"]]
    if "scalar" in meta:
        return arrays[meta["scalar"]][()]
    if "list" in meta or "tuple" in meta:
        items = [decode(v, arrays) for v in meta.get("list", meta.get("tuple"))]
        return items if "list" in meta else tuple(items)
    if "dict" in meta:
        return {str(k): decode(v, arrays) for k, v in meta["dict"]}
    if meta.get("record") in RECORDS:
        return RECORDS[meta["record"]](**decode(meta["fields"], arrays))
    raise NotData("not a value this store writes")
