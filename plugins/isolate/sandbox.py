"""The grader's side of a sandbox: one spawned child per submission, reused across its cases.

A child is started lazily with ``subprocess`` (a fresh interpreter, never a fork of a process that may hold CUDA), in a
new session so that a timeout kills its whole process group, with capped BLAS threads, its stdout and stderr in files,
and a temporary copy of the submission's folder as its working directory. After a timeout, crash or kill the child is
discarded and the next case starts a new one; nothing of one submission's child is shared with another's.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plugins.isolate import wire

CHILD = Path(__file__).resolve().parent / "child.py"
# Single-threaded BLAS: many children share few cores, and one thread makes timings comparable.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
)
SKIP_COPY = shutil.ignore_patterns(".git", "__pycache__", ".venv", "venv", "node_modules", "*.pyc")
MAX_COPIED_FILE = 64 * 2**20  # data files beyond this stay behind: a submission's code does not need them to run


@dataclass(frozen=True)
class Limits:
    """Resource limits for every child (from the command line, see plugins/config.py)."""

    call_timeout_s: float
    memory_bytes: int
    device: str  # "cpu" or "cuda"
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for the child on GPU runs
    gpu_memory_fraction: float = 0.5  # of the GPU's memory, per child, on GPU runs (through torch)
    file_size_bytes: int = 256 * 2**20
    output_tail_chars: int = 2000


@dataclass
class Outcome:
    """What one request produced: ``status`` is ok, error, timeout, crash or oom."""

    status: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    kind: str = ""  # for errors: exception, oom, contract
    message: str = ""
    traceback: str = ""
    stdout: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class Program:
    """What a child loads: the driver module, the entry points (name -> file in ``folder``), and the folder."""

    driver: str
    entries: tuple[tuple[str, str], ...]  # (entry point, file relative to folder), hashable so programs key pools
    folder: Path | None  # None: entries come from the driver module itself (the trusted baseline)


class Sandbox:
    """One child process for one program; ``run`` sends a request and returns its :class:`Outcome`."""

    def __init__(self, program: Program, limits: Limits, repo: Path):
        self.program, self.limits, self.repo = program, limits, repo
        self.process: subprocess.Popen[bytes] | None = None
        self.import_failure: Outcome | None = None
        self._scratch: Path | None = None
        self._offsets = {"stdout": 0, "stderr": 0}

    def run(self, inputs: dict[str, np.ndarray], params: dict[str, Any], measure: dict[str, Any]) -> Outcome:
        """Run one case; the timeout covers the whole request, scaled by the number of timed repeats."""
        timeout = self.limits.call_timeout_s * (1 + measure.get("warmup", 0) + measure.get("repeats", 0))
        if self.import_failure is not None:
            return self.import_failure
        if self.process is None and self._start(time.monotonic() + self.limits.call_timeout_s) is not None:
            return self.import_failure
        deadline = time.monotonic() + timeout
        try:
            wire.send(self._request, {"params": params, "measure": measure}, inputs, deadline)
            header, arrays = wire.recv(self._response, deadline)
        except wire.Deadline:
            return self._finish(Outcome("timeout", message=f"no answer within {timeout:.0f} s; process group killed"))
        except wire.WireError:
            return self._finish(self._death())
        return self._with_output(self._outcome(header, arrays))

    def close(self) -> None:
        self._kill()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # --- lifecycle ---

    def _start(self, deadline: float) -> Outcome | None:
        """Spawn and load the child; on failure, remembers and returns the import failure."""
        self.close()
        self._scratch = Path(tempfile.mkdtemp(prefix="kernelgrade-"))
        workdir = self._scratch / "work"
        if self.program.folder is not None:
            shutil.copytree(self.program.folder, workdir, ignore=_skip_large(SKIP_COPY), symlinks=True)
        else:
            workdir.mkdir()
        request_r, self._request = os.pipe()
        self._response, response_w = os.pipe()
        os.set_blocking(self._request, False)
        os.set_blocking(self._response, False)
        self._offsets = {"stdout": 0, "stderr": 0}
        with open(self._scratch / "stdout", "wb") as out, open(self._scratch / "stderr", "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-B", str(CHILD), str(request_r), str(response_w)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=self._env(),
                pass_fds=(request_r, response_w),
                start_new_session=True,
            )
        os.close(request_r)
        os.close(response_w)
        config = {
            "repo": str(self.repo),
            "driver": self.program.driver,
            "entries": dict(self.program.entries),
            "aliases": {k: list(v) for k, v in importlib.import_module(self.program.driver).CHALLENGE.aliases.items()},
            "entries_from_driver": self.program.folder is None,
            "workdir": str(workdir),
            "device": self.limits.device,
            "memory_bytes": self.limits.memory_bytes,
            "gpu_memory_fraction": self.limits.gpu_memory_fraction,
            "file_size_bytes": self.limits.file_size_bytes,
        }
        try:
            wire.send(self._request, config, None, deadline)
            header, _ = wire.recv(self._response, deadline)
        except wire.Deadline:
            failure = Outcome("timeout", message=f"no answer within {self.limits.call_timeout_s:.0f} s")
        except wire.WireError:
            failure = self._death()
        else:
            if header.get("status") == "ready":
                return None
            failure = self._outcome(header, {})
        # Importing is the same for every case: a module that hangs, dies or raises at import fails every case of this
        # submission at once, instead of costing a restart (and a full timeout) per case.
        failure.message = f"while importing the submission: {failure.message}"
        self.import_failure = self._finish(failure)
        return self.import_failure

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERNELGRADE_"))}
        env.update({name: "1" for name in THREAD_VARS})
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        # CPU runs hide every GPU; GPU runs see the one this worker was given.
        env["CUDA_VISIBLE_DEVICES"] = self.limits.gpu if self.limits.device == "cuda" and self.limits.gpu else ""
        return env

    def _kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for fd in (self._request, self._response):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.process = None

    def _finish(self, outcome: Outcome) -> Outcome:
        """Kill the child after a fatal outcome; the next request starts a fresh one."""
        self._kill()
        return self._with_output(outcome)

    def _death(self) -> Outcome:
        """Name how a child that closed its pipe died: a signal, or an exit during the call."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return Outcome("crash", message="the child closed its pipe but did not exit")
        if code == -signal.SIGKILL:
            return Outcome(
                "oom", message="killed by SIGKILL from outside the grader (the kernel's out-of-memory killer)"
            )
        if code < 0:
            return Outcome("crash", message=f"killed by signal {signal.Signals(-code).name}")
        return Outcome("crash", message=f"the process exited with status {code} during the call")

    # --- responses ---

    @staticmethod
    def _outcome(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Outcome:
        calls = header.get("calls", [])
        if header.get("status") == "ok":
            return Outcome("ok", outputs=arrays, calls=calls)
        kind = header.get("kind", "exception")
        status = "oom" if kind == "oom" else "error"
        message = f"{header.get('type', 'Error')}: {header.get('message', '')}"
        return Outcome(status, calls=calls, kind=kind, message=message, traceback=header.get("traceback", ""))

    def _with_output(self, outcome: Outcome) -> Outcome:
        """Attach what the child printed since the last request, truncated to its tail."""
        if self._scratch is not None:
            outcome.stdout, outcome.stderr = self._tail("stdout"), self._tail("stderr")
        return outcome

    def _tail(self, stream: str) -> str:
        path = self._scratch / stream
        try:
            with open(path, "rb") as handle:
                handle.seek(self._offsets[stream])
                data = handle.read()
        except OSError:
            return ""
        self._offsets[stream] += len(data)
        keep = self.limits.output_tail_chars
        text = data[-4 * keep :].decode("utf-8", errors="replace")
        return text if len(text) <= keep else f"[... {len(data) - keep} bytes cut ...]\n{text[-keep:]}"


def _skip_large(base: Any) -> Any:
    """Combine the name patterns with a size cut-off."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(base(folder, names))
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > MAX_COPIED_FILE:
                skipped.add(name)
        return skipped

    return ignore


class SandboxPool:
    """One sandbox per program for the lifetime of a pytest process (a worker under xdist)."""

    def __init__(self, limits: Limits, repo: Path):
        self.limits, self.repo = limits, repo
        self._sandboxes: dict[Program, Sandbox] = {}

    def get(self, program: Program) -> Sandbox:
        if program not in self._sandboxes:
            self._sandboxes[program] = Sandbox(program, self.limits, self.repo)
        return self._sandboxes[program]

    def close(self) -> None:
        for sandbox in self._sandboxes.values():
            sandbox.close()
        self._sandboxes.clear()
