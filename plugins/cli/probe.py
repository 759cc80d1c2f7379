"""Import a submission's files in the grader's sandbox and report what the import did.

The child is the grading run's own (``plugins/isolate/sandbox.py``: the same containment, limits, environment and
copied working folder); it starts, imports the chosen files through the challenge's runtime loader and answers
"ready", exactly as before a graded case, and is then killed without being sent a case. What is reported:
how long the import took (and how long a child that imports nothing takes on this machine, for scale), what it
printed, whether it raised, exited, crashed or hung, and which files in its working folder it created, changed or
removed (the working folder is compared with a copy made by the same copying rules before the child started).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from plugins.cli import REPO
from plugins.config import DEFAULT_CALL_TIMEOUT_S, DEFAULT_MEMORY_LIMIT_MB
from plugins.isolate import runspace
from plugins.isolate.sandbox import Limits, Outcome, Program, Sandbox

# An import is held to the grading run's default limits: its --call-timeout bounds an import there too.
DEFAULT_MEMORY_BYTES = DEFAULT_MEMORY_LIMIT_MB * 2**20


@dataclass
class ImportReport:
    """What importing the submission did; ``status`` is ok, error (raised or exited), crash, timeout or oom."""

    files: list[str]
    status: str
    seconds: float
    start_seconds: float  # a child that imports nothing, for scale
    message: str = ""
    stdout: str = ""
    stderr: str = ""
    written: list[str] = field(default_factory=list)  # "impl.py (changed)", "out.txt (new, 12 bytes)", "x (removed)"
    isolation: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)  # the tiny calls after the import (tinycall.TinyCall)

    @property
    def hung_or_failed(self) -> list[dict[str, Any]]:
        """Tiny calls that hung (timeout), crashed or ran out of memory: the folder is not ready. A call that raised or
        whose answer was refused is only shown: the grading run fails that case, and the rest still run."""
        return [c for c in self.calls if c["status"] in ("timeout", "crash", "oom")]  # tinycall.STOPPED

    @property
    def clean(self) -> bool:
        return self.status == "ok" and not (self.stdout or self.stderr or self.written)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"clean": self.clean}


class _ImportOnly(Sandbox):
    """A grader sandbox that starts its child (which imports the submission) and stops there. It uses the sandbox's
    own start-up path unchanged, so the import runs exactly as before a graded case."""

    def import_only(self, deadline: float) -> tuple[Outcome | None, str, str, Path | None]:
        failure = self._start(deadline)
        if failure is not None:  # the child is gone, and its work folder with it
            return failure, failure.stdout, failure.stderr, None
        workdir = self._tenant.view(self._scratch / "work")  # under bwrap a tmpfs, seen through the child's namespace
        stdout, stderr = self._output.take("stdout"), self._output.take("stderr")
        return None, stdout, stderr, workdir


def probe_import(
    driver: str,
    entries: dict[str, str],
    folder: Path,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    then: Callable[[Sandbox], list[Any]] | None = None,
    call_limit_s: float | None = None,
) -> ImportReport:
    """Import ``entries`` (name -> file of ``folder``; the name must be defined at the file's top level) in a sandbox
    child loading ``driver``, the challenge's reference module; ``timeout_s`` bounds the import. When it went through,
    ``then(sandbox)`` runs on the same child (the tiny calls of :mod:`plugins.cli.tinycall`, each held to
    ``call_limit_s``) and its list lands in the report's ``calls``."""
    limits = Limits(call_timeout_s=timeout_s, memory_bytes=DEFAULT_MEMORY_BYTES, device="cpu")
    call_limits = replace(limits, call_timeout_s=call_limit_s or timeout_s)
    files = sorted(set(entries.values()))
    with tempfile.TemporaryDirectory(prefix="kernelgrade-check-") as tmp:
        before = Path(tmp) / "before"
        try:
            runspace.copy_folder(folder, before)
        except OSError as exc:  # as in a grading run, where the copy failing fails the import
            return ImportReport(files, "error", 0.0, 0.0, f"the folder could not be copied: {exc}")
        start_seconds = _time_start(driver, limits)
        sandbox = _ImportOnly(Program(driver, tuple(sorted(entries.items())), folder), call_limits, REPO)
        try:
            started = time.perf_counter()
            failure, stdout, stderr, workdir = sandbox.import_only(time.monotonic() + timeout_s)
            seconds = time.perf_counter() - started
            written = _changes(before, workdir) if workdir is not None and workdir.is_dir() else []
            isolation = sandbox.containment.level
            calls = [c.to_json() for c in then(sandbox)] if then is not None and failure is None else []
        finally:
            sandbox.close()
    status = "ok" if failure is None else failure.status
    message = failure.message if failure is not None else ""
    return ImportReport(files, status, seconds, start_seconds, message, stdout, stderr, written, isolation, calls)


_START_TIMES: dict[str, float] = {}


def _time_start(driver: str, limits: Limits) -> float:
    """Seconds to start a sandbox child that loads the driver and imports nothing (once per driver)."""
    if driver not in _START_TIMES:
        sandbox = Sandbox(Program(driver, (), None), limits, REPO)
        try:
            started = time.perf_counter()
            sandbox._start(time.monotonic() + limits.call_timeout_s)
            _START_TIMES[driver] = time.perf_counter() - started
        finally:
            sandbox.close()
    return _START_TIMES[driver]


def _listing(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``root``, links not followed: relative path -> (size, content hash) for a regular file, (-1,
    its kind) for anything else (a link, a FIFO the submission made)."""
    found: dict[str, tuple[int, str]] = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = Path(top) / name
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if not stat.S_ISREG(info.st_mode):
                found[rel] = (-1, "link" if stat.S_ISLNK(info.st_mode) else "special file")
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            found[rel] = (info.st_size, digest.hexdigest())
    return found


def _changes(before: Path, after: Path) -> list[str]:
    old, new = _listing(before), _listing(after)
    changes = [f"{name} (new, {_size(new[name])})" for name in new if name not in old]
    changes += [f"{name} (changed)" for name in new if name in old and new[name] != old[name]]
    changes += [f"{name} (removed)" for name in old if name not in new]
    return sorted(changes)


def _size(entry: tuple[int, str]) -> str:
    return entry[1] if entry[0] < 0 else f"{entry[0]} bytes"
