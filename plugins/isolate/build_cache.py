"""The build cache: one folder per build key, shared by a run's processes and, where children cannot write it, by runs.

- **Key** (:func:`build_key`): a hash of every file of the submission's private copy (names, link targets and bytes,
  read in chunks: the copy already left out files over the per-file cap), plus everything else that decides the
  artefact (the source's name, flags, architecture, nvcc's and the host compiler's versions). The build reads only that
  copy, so any two folders that differ in a byte the build could read have different keys: one model's artefact can
  never be served to another's sources.
- **Where** (:func:`open_cache`): ``$XDG_CACHE_HOME/kernelgrade/cuda``, mode 0700 and owned by the grader; a sandbox
  child never sees it (home hidden under bubblewrap; another user cannot enter it). Where children run as the grader's
  own user (``process-group``), or the folder belongs to someone else, the cache is the run's own folder instead.
- **Entries**: ``library.so`` (when it built), ``build.log`` and ``record.json``: the key, the outcome, the library's
  exported symbols, the SHA-256 of each file and an HMAC of all that under a secret kept in the cache folder (0600).
  A lookup re-verifies all of it (owner, modes, no extra files, digests, HMAC); an entry that does not match is
  removed and built again, and the result says so. Entries are written to a temporary folder and renamed into place
  under a per-key lock, so xdist workers and reruns build each key once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from plugins.isolate import runspace

LIBRARY, LOG, RECORD, SECRET = "library.so", "build.log", "record.json", "secret.key"
MAX_RECORD_BYTES = 1 << 20
MAX_LIBRARY_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Entry:
    """A verified build: ``library`` when it built, the cut log, the library's exported symbols (None: unknown)."""

    folder: Path
    ok: bool
    log: str
    symbols: tuple[str, ...] | None

    @property
    def library(self) -> Path | None:
        return self.folder / LIBRARY if self.ok else None


def build_key(folder: Path, parts: list[str]) -> str:
    """SHA-256 of ``parts`` and every entry of ``folder`` (a private copy: regular files, folders, inner links)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix().encode(errors="surrogateescape")
        if path.is_symlink():
            digest.update(b"L" + rel + b"\0" + os.readlink(path).encode(errors="surrogateescape") + b"\0")
        elif path.is_dir():
            digest.update(b"D" + rel + b"\0")
        elif path.is_file():
            digest.update(b"F" + rel + b"\0")
            _hash_file(path, digest)
    return digest.hexdigest()[:32]


def _hash_file(path: Path, digest: hashlib._Hash) -> None:
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    digest.update(b"\0" + str(size).encode() + b"\0")


class Cache:
    """One cache folder (see the module docstring); ``note`` says why a shared cache was not used."""

    def __init__(self, root: Path, note: str = ""):
        self.root, self.note = root, note
        self._secret = _secret(root)

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def lookup(self, key: str) -> tuple[Entry | None, str]:
        """The verified entry for ``key``, or None; the text says why an entry that was there was thrown away."""
        folder = self.root / key
        if not os.path.lexists(folder):
            return None, ""
        try:
            return self._verified(folder, key), ""
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _remove(folder)
            return None, f"the cached build did not verify ({exc}) and was built again"

    def store(self, key: str, out: Path | None, log: str, exit_code: int | None, symbols: list[str] | None) -> Entry:
        """Write an entry from a finished step: ``out`` holds its library when it built (copied without following
        links, within the size cap), else None; the entry appears whole or not at all."""
        staging = self.root / f"{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        staging.mkdir(mode=0o700)
        try:
            files = {LOG: log.encode(errors="surrogateescape")}
            if out is not None:
                files[LIBRARY] = _read_regular(out / LIBRARY, MAX_LIBRARY_BYTES)
            for name, data in files.items():
                _write(staging / name, data, 0o700 if name == LIBRARY else 0o600)
            record = {
                "key": key,
                "ok": out is not None,
                "exit": exit_code,
                "symbols": None if symbols is None else sorted(symbols),
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            }
            record["mac"] = self._mac(record)
            _write(staging / RECORD, json.dumps(record).encode(), 0o600)
            _remove(self.root / key)
            os.replace(staging, self.root / key)
        except BaseException:
            _remove(staging)
            raise
        return self._verified(self.root / key, key)

    def _verified(self, folder: Path, key: str) -> Entry:
        _owned(folder, directory=True)
        record = json.loads(_read_regular(folder / RECORD, MAX_RECORD_BYTES))
        mac = record.pop("mac", "")
        if not hmac.compare_digest(str(mac), self._mac(record)):
            raise ValueError("its record is not signed by this grader")
        if record["key"] != key:
            raise ValueError("its record names another key")
        if sorted(os.listdir(folder)) != sorted([*record["files"], RECORD]):
            raise ValueError("it holds files it did not record")
        for name, want in record["files"].items():
            _owned(folder / name)
            data = _read_regular(folder / name, MAX_LIBRARY_BYTES)
            if hashlib.sha256(data).hexdigest() != want:
                raise ValueError(f"{name} changed since it was built")
        log = _read_regular(folder / LOG, MAX_RECORD_BYTES * 8).decode(errors="replace")
        symbols = None if record["symbols"] is None else tuple(record["symbols"])
        return Entry(folder, bool(record["ok"]), log, symbols)

    def _mac(self, record: dict) -> str:
        return hmac.new(self._secret, json.dumps(record, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def open_cache(explicit: Path | None, space: runspace.RunSpace, shared_ok: bool, default: Path) -> Cache:
    """``explicit`` (the grader's own tests), else ``default`` where children cannot write it (``shared_ok``) and it
    is the grader's, else a cache in the run's own folder."""
    if explicit is not None:
        return Cache(own_folder(explicit))
    if shared_ok:
        try:
            return Cache(own_folder(default))
        except (OSError, ValueError) as exc:
            note = f"the shared build cache {default} cannot be trusted ({exc}): builds are cached for this run only"
            return Cache(own_folder(space.root / "build-cache"), note)
    return Cache(own_folder(space.root / "build-cache"), "children run as the grader's user: builds cached per run")


def own_folder(path: Path) -> Path:
    """``path`` made if missing, mode 0700; it must be a folder of the grader's, not a link."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ValueError("not a folder owned by the grader")
    os.chmod(path, 0o700)
    return path


def _secret(root: Path) -> bytes:
    """The cache's signing key, made once: written aside, then linked into place (never seen half-written)."""
    path = root / SECRET
    if not os.path.lexists(path):
        aside = root / f"{SECRET}.{os.getpid()}.{secrets.token_hex(4)}"
        _write(aside, secrets.token_bytes(32), 0o600, exclusive=True)
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the key
            os.link(aside, path)
        aside.unlink()
    _owned(path)
    data = _read_regular(path, 64)
    if len(data) != 32:
        raise ValueError(f"{path} is not a 32-byte key")
    return data


def _owned(path: Path, directory: bool = False) -> os.stat_result:
    info = os.lstat(path)
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not kind or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ValueError(f"{path.name} is not the grader's private {'folder' if directory else 'file'}")
    return info


def _read_regular(path: Path, cap: int) -> bytes:
    """A regular file's bytes, opened without following links or blocking, refused over ``cap``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        # One link only: a step that could run code must not hand the grader another file through a hard link.
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > cap:
            raise ValueError(f"{path.name} is not a regular file of one link within {cap >> 20} MiB")
        chunks, left = [], info.st_size
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, mode: int, exclusive: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
