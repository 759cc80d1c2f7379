"""Compile caches: Triton's, torch inductor's and the CUDA driver's JIT caches, one folder per (run, owner).

An *owner* is a submission's (model, challenge), or the reference baseline of a challenge (:func:`owner`). Every child
of one owner gets the same folder as ``TRITON_CACHE_DIR``, ``TORCHINDUCTOR_CACHE_DIR`` and ``CUDA_CACHE_PATH``, so its
second and later children load the kernels the first compiled (a speed case's child no longer compiles the Triton
reference and the submission's own kernels again).

Why one folder per owner and never more widely: a child writes its cache itself, so whoever can write a cache decides
what every later reader of it runs. Shared by two submissions, one could plant the other's kernels; shared by a
submission and the reference's baseline children, it could plant the reference's kernels and so forge the reference
timings. The folder is ``<run>/compile/<name>``, ``name`` an HMAC of the owner under the run's secret key
(``<run>/compile.key``, 0600, the grader's): a child cannot compute another owner's name, and ``compile/`` (0711)
cannot be listed by a child that can reach the run folder at all. Under bwrap each child sees only its own owner's
folder (bound into its mount namespace; the run folder stays hidden). At the ``uid`` rung every child is the user
``nobody``: the folder is nobody's with mode 0700, which keeps out every other user, but not another nobody child that
learns the name (from ``/proc`` of a live child of that owner: its environment, its open files); that rung already
lets such a child write the other's scratch folder, and its warning says what it gives up.

Across runs (``--compile-cache=DIR``, off by default) the folder of a submission starts as a copy of
``DIR/<digest>`` and is copied back there when the run ends (:func:`save`). The digest is the build cache's
(``build_cache.build_key``) over every byte of the folder the child is made from (the run's vetted copy, or the built
library's folder) and the owner, so a submission changed by one byte, or another model's identical folder, gets a
folder of its own. Only children under bwrap take part: at the weaker rungs another submission's child may have
written the folder, and a planted kernel must not outlive the run. The reference baseline is never kept across runs.
The grader alone touches ``DIR`` (made 0700, never bound into a child): files are copied with ``runspace.copy_folder``
(no link leaves the folder; special files and files over the caps are left out).

A folder over :data:`MAX_BYTES` or :data:`MAX_FILES` is emptied before the owner's next child starts; while a child runs
the disk guard counts it with the child's own space (``diskcap.py``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import shutil
from pathlib import Path

from plugins.isolate import build_cache, diskcap, runspace

CACHE_VARS = ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "CUDA_CACHE_PATH")
MAX_BYTES, MAX_FILES = diskcap.CACHE_BYTES, diskcap.CACHE_FILES  # what one copy across runs holds, at most
KEY_VERSION = "compile-cache-1"
_PERSIST = ".persist"  # beside a folder kept across runs: the path it is copied back to (0600)


def owner(model: str | None, challenge: str) -> str:
    """The owner of a child's compile cache: a submission's (model, challenge), or (``model`` None) the reference
    baseline of ``challenge``. The two kinds never collide: a model name cannot hold the NUL that follows its tag."""
    return f"submission\0{model}\0{challenge}" if model is not None else f"baseline\0{challenge}"


def folder_name(space: runspace.RunSpace, who: str) -> str:
    """The owner's folder name in ``<run>/compile/``: an HMAC of the owner under the run's key (unguessable)."""
    key = (space.root / "compile.key").read_bytes()
    return hmac.new(key, who.encode(errors="surrogateescape"), hashlib.sha256).hexdigest()[:32]


def prepare(
    space: runspace.RunSpace, who: str, source: Path | None, uid: int | None, keep_in: Path | None = None
) -> Path:
    """The owner's folder for a child about to start, made on first use (whole or not at all: renamed into place),
    emptied when over the caps. ``uid``: the user the child runs as, when not the grader's (the folder is then its,
    mode 0700). ``keep_in``: ``--compile-cache`` for a child under bwrap; the folder then starts from the stored copy
    keyed by the content of ``source`` (the folder the child is made from) and is saved back at the run's end."""
    path = space.root / "compile" / folder_name(space, who)
    if not path.is_dir():
        _make(space, path, who, source, uid, keep_in)
    files, used = diskcap.walked_usage(path, MAX_BYTES, MAX_FILES)
    if files > MAX_FILES or used > MAX_BYTES:  # the owner's own children filled it: start afresh
        shutil.rmtree(path, ignore_errors=True)
        _make(space, path, who, source, uid, None)
    return path


def _make(space: runspace.RunSpace, path: Path, who: str, source: Path | None, uid: int | None, keep_in: Path | None):
    staging = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    stored = _stored(keep_in, source, who) if keep_in is not None and source is not None else None
    if stored is not None and stored.is_dir():
        runspace.copy_folder(stored, staging)
    else:
        staging.mkdir(mode=0o700)
    os.chmod(staging, 0o700)
    if uid is not None:
        for item in [staging, *staging.rglob("*")]:
            os.chown(item, uid, uid, follow_symlinks=False)
    if stored is not None:
        runspace.write_private(path.with_name(path.name + _PERSIST), str(stored))
    try:
        os.rename(staging, path)
    except OSError:  # another process of the run made it first: theirs is the folder
        shutil.rmtree(staging, ignore_errors=True)


def _stored(keep_in: Path, source: Path, who: str) -> Path | None:
    """Where the owner's folder is kept across runs, the store made 0700 if missing; None where it is not the
    grader's own folder (as the build cache refuses a shared folder it cannot trust)."""
    try:
        root = build_cache.own_folder(keep_in)
    except (OSError, ValueError):
        return None
    return root / content_key(source, who)


@functools.cache
def content_key(source: Path, who: str) -> str:
    """The digest naming an owner's stored folder: every byte of ``source``, and the owner (``build_key``)."""
    return build_cache.build_key(source, [KEY_VERSION, who])


def save(space: runspace.RunSpace) -> list[str]:
    """At the run's end (its first process): copy every folder kept across runs back to its store, each replaced
    whole; returns what could not be saved."""
    problems = []
    for marker in sorted((space.root / "compile").glob("*" + _PERSIST)):
        folder = marker.with_name(marker.name.removesuffix(_PERSIST))
        target = Path(marker.read_text())
        staging = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            runspace.copy_folder(folder, staging)
            os.chmod(staging, 0o700)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            problems.append(f"{target}: {exc}")
    return problems
