"""The grader's side of a sandbox: one spawned child per submission, reused across its cases.

A child is started lazily with ``subprocess`` (a fresh interpreter, never a fork of a process that may hold CUDA),
contained as strongly as the machine allows (``containment.py``: namespaces through bwrap, a cgroup, another user),
with capped BLAS threads, its stdout and stderr drained into bounded tails, and a fresh copy of the submission's
folder (made from the run's vetted copy, ``runspace.py``) as its working directory. The grader times every request
and samples the memory of the child's whole process tree while it runs (``measure.py``); the child reports no
measurement. After a timeout, crash or kill every process of the child's tree is killed and the next case starts a
new one; nothing of one submission's child is shared with another's. Every request also follows the run's rules for
the machine (``tenant.py``): the child is listed in the run's registry and frozen while another case is timed
(``fairness.py``), its writable space is capped (``diskcap.py``), and a child that leaves threads or processes running
after its answer fails the case (``left_running``) and is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plugins.base.records import MESSAGE_CHARS, OUTPUT_CHARS, TRACEBACK_CHARS, TYPE_CHARS, Outcome, safe_text
from plugins.config.gpus import GPU_DEVICE
from plugins.isolate import compile_cache, containment, fairness, gpu_rung, runspace, runtimes, wire
from plugins.isolate.containment import Cgroup
from plugins.isolate.exchange import Exchange, OverCap, Service, converse
from plugins.isolate.measure import OutputTail, TreeMemory, oom_kills
from plugins.isolate.tenant import Tenant, fairly

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
# Where caches and temp files go: the child's private temp folder (the JIT caches then go to its owner's compile cache,
# compile_cache.CACHE_VARS, where the program names an owner).
PRIVATE_DIRS = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "CUDA_CACHE_PATH")
# Environment variables that look like credentials stay with the grader: a child could print them into the reports.
_SECRET = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|^AWS_|^GH_|^GITHUB_", re.I)
# A CUDA error in an exception leaves the child's context unusable: the next case gets a fresh process.
_DEVICE_FAULT = re.compile(r"CUDA error|illegal memory access|unspecified launch failure|device-side assert", re.I)
# Under bwrap the child's work folder is an empty tmpfs: the vetted copy of its folder is copied in before it starts.
_COPY_IN = 'cp -a -- "$1/." "$2/" || exit 97; shift 2; exec "$@"'
# A timed request's pipes. Each trial sends its inputs and reads the answer through two pipes, inside the timed window
# of both sides: on the 2-core machine the layer-norm speed case's 64 MiB round trip took 101 to 118 ms through pipes
# of the default 64 KiB and 39 to 42 ms through pipes of 1 MiB (an echo, no work), against 23 ms of the reference's
# own arithmetic. So the pipes of a timed pair are widened while it holds its slot, then given back. The capacity is
# charged to the user who made the pipe: past ``pipe-user-pages-soft`` (64 MiB by default), every new pipe of that
# user, in any of its programs, gets two pages, so an unprivileged grader keeps its timed pipes within half of it.
TIMED_PIPE_BYTES = 1 << 20
DEFAULT_PIPE_BYTES = 1 << 16
_PIPE_SOFT_LIMIT = Path("/proc/sys/fs/pipe-user-pages-soft")
_CHILD_KINDS = ("exception", "oom", "contract")  # the kinds of error a child's answer may state (child.py)


@dataclass(frozen=True)
class Limits:
    """Resource limits for every child (from the command line, see plugins/config/)."""

    call_timeout_s: float
    memory_bytes: int
    device: str  # "cpu" or GPU_DEVICE
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for the child on GPU runs
    gpu_memory_fraction: float = 0.5  # of the GPU's memory, per child, on GPU runs (through torch)
    file_size_bytes: int = 256 * 2**20
    output_tail_chars: int = 2000
    compile_cache: Path | None = None  # --compile-cache: compile caches kept across runs there (compile_cache.py)


@dataclass(frozen=True)
class Program:
    """What a child loads: the driver module, the entry points (name -> file in ``folder``), and the folder."""

    driver: str
    # (entry point, file relative to folder), hashable so programs key pools; with no folder, (entry point, the driver
    # module's function that stands for it)
    entries: tuple[tuple[str, str], ...]
    folder: Path | None  # None: entries come from the driver module itself (the trusted baseline)
    runtime: str = "python"  # how the child loads the entries (plugins/isolate/runtimes/)
    # Whose compile cache its children share (compile_cache.owner); None: a private cache per child, as for a probe.
    cache: str | None = None


def _set_pipe_capacity(fd: int, size: int) -> None:
    """The pipe ``fd`` belongs to gets ``size`` bytes (Linux ``F_SETPIPE_SZ``). Where that fails (another system, a
    shrink below what the pipe holds, a size over ``pipe-max-size``) the pipe keeps its size: a timed request then only
    crosses more slowly."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


def timed_pipe_bytes(pairs: int) -> int:
    """The capacity of each of a timed pair's four pipes when ``pairs`` pairs may be timed at once: 1 MiB for root
    (exempt from the limit), else what keeps them all within half of the user's soft limit (a power of two, 64 KiB at
    least)."""
    if os.geteuid() == 0:
        return TIMED_PIPE_BYTES
    try:
        soft_pages = int(_PIPE_SOFT_LIMIT.read_text())
    except (OSError, ValueError):
        return DEFAULT_PIPE_BYTES
    if soft_pages == 0:  # no soft limit
        return TIMED_PIPE_BYTES
    share = soft_pages * os.sysconf("SC_PAGE_SIZE") // 2 // (4 * max(pairs, 1))
    if share < DEFAULT_PIPE_BYTES:
        return DEFAULT_PIPE_BYTES
    return min(TIMED_PIPE_BYTES, 1 << (share.bit_length() - 1))


class Sandbox:
    """One child process for one program; ``run`` sends a request and returns its :class:`Outcome`."""

    def __init__(self, program: Program, limits: Limits, repo: Path, space: runspace.RunSpace | None = None):
        self.program, self.limits, self.repo = program, limits, repo.resolve()
        self.space = space or runspace.default()
        self.containment = containment.probe()
        # Only a child whose challenge runs on the GPU is handed it; every other one is contained as on a CPU run.
        self.gpu = limits.device == GPU_DEVICE and gpu_rung.needs_gpu(program)
        self._mode: gpu_rung.GpuMode | None = None  # a GPU child's rung, once looked up (_gpu_mode)
        self.process: subprocess.Popen[bytes] | None = None
        self.import_failure: Outcome | None = None
        self.copy_notes: list[str] = []
        self._scratch: Path | None = None
        self._cache: Path | None = None  # the owner's compile cache (compile_cache.py), while a child runs
        self._cgroup: Cgroup | None = None
        self._memory: TreeMemory | None = None
        self._output: OutputTail | None = None
        self._last_output: dict[str, str] = {}
        self._bwrap = False  # whether the current child runs under bwrap (GPU children may not, see _command)
        self.start_seconds = 0.0  # time spent starting children (spawn, imports, ready) over this sandbox's life
        self.key = secrets.token_hex(8)  # this sandbox in the run's registry of children (fairness.py)
        self.cores: set[int] | None = None  # the cores of the timed slot this sandbox is pinned to, if any
        self.pipe_bytes = DEFAULT_PIPE_BYTES  # its request and answer pipes' capacity (wider while timed)
        self._tenant: Tenant | None = None  # the watch over the current child (tenant.py)
        self._ended: Tenant | None = None  # the last child's watch, once it was killed (its verdict stays)

    @fairly
    def run(
        self,
        inputs: dict[str, np.ndarray],
        params: dict[str, Any],
        measure: dict[str, Any],
        caps: wire.Caps | None = None,
        services: Mapping[str, Service] | None = None,
    ) -> Outcome:
        """Run one case; the timeout covers the whole request (with its service calls: ``exchange.py``), scaled by the
        number of timed repeats. A case whose params set ``timeout_s`` (a training run) gets that limit when longer than
        ``--call-timeout``. Service calls counted per name and checkpoints land on the outcome. Every message of the
        child is read under ``caps`` (``wire.case_caps``; from the inputs alone when None): one over them is refused
        unread, the child killed, and the case ``wrong``."""
        per_call = max(self.limits.call_timeout_s, float(params.get("timeout_s", 0.0)))
        timeout = per_call * (1 + measure.get("warmup", 0) + measure.get("repeats", 0))
        if not self._started():
            return self.import_failure
        deadline = time.monotonic() + timeout
        kills_before = oom_kills()
        exchange = Exchange(services or {}, lambda: self._memory.current([self._scratch]))
        self._memory.start()
        start = time.perf_counter()
        try:
            wire.send(self._request, {"params": params}, inputs, deadline)
            header, arrays = converse(exchange, self._request, self._response, deadline, caps or wire.case_caps(inputs))
        except wire.Deadline:
            self._memory.stop()
            message = f"no answer within {timeout:.0f} s; all its processes killed"
            return self._finish(Outcome("timeout", message=message))
        except wire.Refused as exc:
            self._memory.stop()
            return self._finish(_refused(exc))
        except wire.WireError:
            self._memory.stop()
            return self._finish(self._death(kills_before))
        except OverCap as exc:
            self._memory.stop()
            return self._finish(Outcome("error", kind="limit", message=f"{exc}; all its processes killed"))
        except BaseException:  # a grader function failed mid-request: the child waits for an answer that never comes
            self._memory.stop()
            self._kill()
            raise
        seconds = time.perf_counter() - start
        # The inputs arrive into arrays of their own in the child: the rule is about what the submission adds.
        peak = max(self._memory.stop() - sum(a.nbytes for a in inputs.values()), 0)
        outcome = self._outcome(header, arrays)
        outcome.calls = [{"measured": True, "seconds": seconds, "peak_bytes": peak}]
        outcome.service_calls, outcome.checkpoints = exchange.calls, exchange.checkpoints
        if outcome.status == "ok":  # what the grader kept from the service calls, over what the child answered
            outcome.outputs = {**outcome.outputs, **exchange.recorded()}
        if outcome.status == "error" and _DEVICE_FAULT.search(outcome.message + outcome.traceback):
            return self._finish(outcome)
        return self._with_output(outcome)

    def start_ahead(self) -> None:
        """Start the child now if none runs, as the next request would (the same start, counted the same way), so that
        a speed case does not pay it while it holds a speed slot. A failed import is kept: the next request answers
        with it."""
        with fairness.busy(self.space.root, self.key):  # a child starting is no idle child: never frozen meanwhile
            self._started()

    def pin(self, cores: set[int] | None) -> None:
        """Keep the child's tree on ``cores`` (None: every core) from its next request on, restarts included."""
        self.cores = cores
        if self._tenant is not None:
            self._tenant.pin(cores)

    def set_pipes(self, size: int) -> None:
        """Give the request and answer pipes ``size`` bytes each, from now on, restarts included (``timed_pipe_bytes``
        while a pair is timed, ``DEFAULT_PIPE_BYTES`` after)."""
        self.pipe_bytes = size
        if self.process is not None:
            for fd in (self._request, self._response):
                _set_pipe_capacity(fd, size)

    def close(self) -> None:
        self._kill()
        self._clean_scratch()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None

    # --- lifecycle ---

    def _started(self) -> bool:
        """Whether a child runs, started now if none does (its start counted in ``start_seconds``); False once its
        import failed (``import_failure`` says how), which is not tried again."""
        if self.process is None and self.import_failure is None:
            began = time.perf_counter()
            self._start(time.monotonic() + self.limits.call_timeout_s)
            self.start_seconds += time.perf_counter() - began
        return self.import_failure is None

    def _start(self, deadline: float) -> Outcome | None:
        """Spawn and load the child; on failure, remembers and returns the import failure."""
        self.close()
        self._scratch = self.space.scratch()
        workdir = self._scratch / "work"
        source, self.copy_notes = runspace.child_source(self.space, self.program.folder, self._scratch)
        self._cache = self._compile_cache(source)
        request_r, self._request = os.pipe()
        self._response, response_w = os.pipe()
        os.set_blocking(self._request, False)
        os.set_blocking(self._response, False)
        if self.pipe_bytes != DEFAULT_PIPE_BYTES:
            for fd in (self._request, self._response):
                _set_pipe_capacity(fd, self.pipe_bytes)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._output = OutputTail({"stdout": out_r, "stderr": err_r}, self.limits.output_tail_chars)
        argv, extra = self._command(workdir, request_r, response_w, source)
        self._copy_folder(workdir, source)
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=workdir,
                env=self._env(),
                pass_fds=(request_r, response_w),
                start_new_session=True,
                **extra,
            )
        finally:
            for fd in (request_r, response_w, out_w, err_w):
                os.close(fd)
        if self._cgroup is not None and self._nobody:
            try:
                self._cgroup.add(self.process.pid)
            except OSError:  # then the process group (and /proc) find the tree, as without cgroups
                self._cgroup.remove()
                self._cgroup = None
        pid, cgroup = self.process.pid, self._cgroup
        trusted = self.program.folder is None  # the reference's own entry points
        self._tenant = Tenant(
            self.space.root, self.key, pid, cgroup, self._bwrap, workdir, self._scratch, trusted, cache=self._cache
        )
        self._tenant.pin(self.cores)
        kills_before = oom_kills()
        self._memory = TreeMemory(self.process.pid, self._cgroup, hwm_trusted=self._bwrap)
        config = {
            "repo": str(self.repo),
            "driver": self.program.driver,
            "entries": dict(self.program.entries),
            "aliases": {k: list(v) for k, v in importlib.import_module(self.program.driver).CHALLENGE.aliases.items()},
            "entries_from_driver": self.program.folder is None,
            "runtime": self.program.runtime,
            "loader": runtimes.runtime(self.program.runtime).loader,
            "workdir": str(workdir),
            "device": GPU_DEVICE if self.gpu else "cpu",
            "memory_bytes": self.limits.memory_bytes,
            "gpu_memory_fraction": self.limits.gpu_memory_fraction,
            "file_size_bytes": self.limits.file_size_bytes,
        }
        try:
            wire.send(self._request, config, None, deadline)
            header, _ = wire.recv(self._response, deadline, wire.HANDSHAKE)
        except wire.Deadline:
            failure = Outcome("timeout", message=f"no answer within {self.limits.call_timeout_s:.0f} s")
        except wire.Refused as exc:
            failure = _refused(exc)
        except wire.WireError:
            failure = self._death(kills_before)
        else:
            if header.get("status") == "ready":
                return None
            failure = self._outcome(header, {})
        # Importing is the same for every case: a module that hangs, dies or raises at import fails every case of this
        # submission at once, instead of costing a restart (and a full timeout) per case.
        failure.message = f"while importing the submission: {failure.message}"
        if self.copy_notes:
            failure.message += f" (the folder's copy {'; '.join(self.copy_notes)})"
        self.import_failure = self._finish(failure)
        return self.import_failure

    def _copy_folder(self, workdir: Path, source: Path | None) -> None:
        """The child's working copy. Under bwrap the child's start copies ``source`` into its own capped tmpfs (see
        ``_command``), and ``workdir`` here is only the mount point; else it is copied here, on the host's disk."""
        workdir.mkdir()
        if source is not None and not self._bwrap:
            try:
                shutil.copytree(source, workdir, symlinks=True, dirs_exist_ok=True)
            except (OSError, shutil.Error) as exc:
                self.copy_notes = [*self.copy_notes, f"could not be made: {exc}"]
        if self._nobody:  # the child runs as nobody and works in its own folder
            for path in [self._scratch, *self._scratch.rglob("*")]:
                os.chown(path, containment.NOBODY, containment.NOBODY, follow_symlinks=False)

    def _command(
        self, workdir: Path, request_r: int, response_w: int, source: Path | None = None
    ) -> tuple[list[str], dict[str, Any]]:
        """The child's command line inside its containment, and the extra arguments of Popen."""
        argv = [sys.executable, "-B", str(CHILD), str(request_r), str(response_w)]
        level, extra = self.containment, {}
        parent = self.space.cgroup_parent(level)
        userns, in_cgroup, readable = self._userns(), True, []
        mode = self._gpu_mode()
        if mode is not None:  # as strong as lets CUDA start here (gpu_rung.py); the driver's libraries stay readable
            in_cgroup = mode.cgroup
            readable = list(gpu_rung.driver_library_folders())
        self._bwrap = userns is not None
        if self._bwrap:
            # The home folder (keys, tokens, caches) is hidden too; the interpreter and built libraries come back.
            hidden = [self.space.root, Path(os.environ.get("TMPDIR", "/tmp")), Path.home()]
            built = [Path(f).parent for _, f in self.program.entries if os.path.isabs(f)]
            readable += containment.interpreter_paths(self.repo) + built
            if source is not None:
                argv = ["/bin/sh", "-c", _COPY_IN, "copy-in", str(source), str(workdir), *argv]
            box = containment.bwrap_args(
                level.bwrap, workdir, hidden, self.gpu, readable, userns, source=source, writable=self._cache
            )
            argv = box + argv
        elif self._nobody:
            extra = {"user": containment.NOBODY, "group": containment.NOBODY, "extra_groups": []}
        self._cgroup = Cgroup.make(parent, self._scratch.name) if parent and in_cgroup else None
        # As nobody, a wrapping shell may not write the root-owned cgroup.procs: the grader moves the child in itself
        # right after starting it (see _start), before it is sent the config, so before any submission code runs.
        if self._cgroup is not None and not self._nobody:
            argv = self._cgroup.wrap(argv)
        return argv, extra

    def _compile_cache(self, source: Path | None) -> Path | None:
        """The program's owner's compile cache for the child about to start (None: it has none). Kept across runs
        only where the child runs under bwrap, alone with the folder (compile_cache.py says why)."""
        if self.program.cache is None:
            return None
        bwrap = self._userns() is not None
        keep_in = self.limits.compile_cache if bwrap and self.program.folder is not None else None
        uid = containment.NOBODY if self._nobody else None
        return compile_cache.prepare(self.space, self.program.cache, source, uid, keep_in)

    def _userns(self) -> bool | None:
        """How the child is contained: under bwrap with a user namespace (True) or without one (False, a GPU child
        whose driver needs it), or not under bwrap at all (None)."""
        mode = self._gpu_mode()
        if mode is not None:
            return mode.userns
        return True if self.containment.level == "namespaces" else None

    def _gpu_mode(self) -> gpu_rung.GpuMode | None:
        """The rung of this GPU child (probed once per run, gpu_rung.py); None for every other child."""
        if not self.gpu:
            return None
        if self._mode is None:  # the run's probe, read once (a locked file read)
            level, record = self.containment, gpu_rung.record_path(self.space.root)
            self._mode = gpu_rung.gpu_mode(level, self.space.cgroup_parent(level), self.repo, self.limits.gpu, record)
        return self._mode

    @property
    def _nobody(self) -> bool:
        """Whether the child runs as user nobody: at the uid level, or on that rung of GPU children."""
        mode = self._gpu_mode()
        return self.containment.level == "uid" or (mode is not None and mode.nobody)

    @property
    def rung(self) -> str:
        """The current child's rung: a GPU child's (``gpu_rung.RUNGS``), else the containment level."""
        mode = self._gpu_mode()
        return mode.rung if mode is not None else self.containment.level

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERNELGRADE_")) and not _secret(k)}
        env.update({name: "1" for name in THREAD_VARS})
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        # Caches and temp files stay in the sandbox: its private /tmp under bwrap, else its own scratch folder.
        private = Path("/tmp")
        if not self._bwrap:
            private = self._scratch / "tmp"
            private.mkdir(exist_ok=True)
            if self._nobody:
                os.chown(private, containment.NOBODY, containment.NOBODY)
        for name in PRIVATE_DIRS:
            env[name] = str(private)
        for name in compile_cache.CACHE_VARS if self._cache is not None else ():
            env[name] = str(self._cache)
        # CPU children hide every GPU; GPU children (gpu_rung.needs_gpu) see the one this worker was given.
        env["CUDA_VISIBLE_DEVICES"] = self.limits.gpu if self.gpu and self.limits.gpu else ""
        return env

    def _kill(self) -> None:
        """Kill every process of the child's tree: its cgroup, else its namespace (through its root) and group."""
        if self.process is None:
            return
        if self._cgroup is not None:
            self._cgroup.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self._tenant is not None:
            self._tenant.close()
            self._ended, self._tenant = self._tenant, None
        self._clean_scratch()
        for fd in (self._request, self._response):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.process = None
        if self._output is not None:
            self._last_output = {name: self._output.take(name) for name in ("stdout", "stderr")}
            self._output.close()
            self._output = None

    def _clean_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _finish(self, outcome: Outcome) -> Outcome:
        """Kill the child after a fatal outcome; the next request starts a fresh one."""
        self._kill()
        return self._with_output(outcome)

    def _death(self, oom_kills_before: int) -> Outcome:
        """Name how a child that closed its pipe died: a signal, or an exit during the call. SIGKILL is ``oom`` only
        when the kernel counted an out-of-memory kill meanwhile; a submission that kills itself has crashed."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return Outcome("crash", message="the child closed its pipe but did not exit")
        if self._bwrap and code > 128 and code - 128 in signal.valid_signals():
            code = 128 - code  # bwrap exits with 128 + the signal that ended its child
        if code == -signal.SIGKILL:
            after = oom_kills()
            if after > oom_kills_before >= 0:
                return Outcome("oom", message="killed by the kernel's out-of-memory killer (SIGKILL)")
            return Outcome("crash", message="killed by SIGKILL (not by the grader, and not for lack of memory)")
        if code < 0:
            return Outcome("crash", message=f"killed by signal {signal.Signals(-code).name}")
        return Outcome("crash", message=f"the process exited with status {code} during the call")

    # --- responses ---

    @staticmethod
    def _outcome(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Outcome:
        """The outcome a child's answer states. Its text is cut and made valid UTF-8 here, the first place it reaches
        the grader (``records.safe_text``); nothing else of the header is kept (a child measures nothing)."""
        if header.get("status") == "ok":
            return Outcome("ok", outputs=arrays)
        kind = header.get("kind") if header.get("kind") in _CHILD_KINDS else "exception"
        status = "oom" if kind == "oom" else "error"
        error_type = safe_text(header.get("type", "Error"), TYPE_CHARS)
        message = safe_text(f"{error_type}: {safe_text(header.get('message', ''), MESSAGE_CHARS)}", MESSAGE_CHARS)
        traceback = safe_text(header.get("traceback", ""), TRACEBACK_CHARS, tail=True)
        return Outcome(status, kind=kind, message=message, traceback=traceback)

    def _with_output(self, outcome: Outcome) -> Outcome:
        """Attach what the child printed since the last request, truncated to its tail (and valid UTF-8)."""
        if self._output is not None:
            outcome.stdout, outcome.stderr = self._output.take("stdout"), self._output.take("stderr")
        elif self._last_output:  # the child was just killed: what it printed before
            outcome.stdout, outcome.stderr = self._last_output["stdout"], self._last_output["stderr"]
            self._last_output = {}
        outcome.stdout = safe_text(outcome.stdout, OUTPUT_CHARS, tail=True)
        outcome.stderr = safe_text(outcome.stderr, OUTPUT_CHARS, tail=True)
        return outcome


def _refused(exc: wire.Refused) -> Outcome:
    """A child's answer over the wire's caps or against its rules: the submission's failure (``wrong``)."""
    message = f"the child's answer broke the wire's rules; it was not read and the child was killed: {exc}"
    return Outcome("error", kind="contract", message=message)


def _secret(name: str) -> bool:
    return bool(_SECRET.search(name)) and not name.endswith(("_CA_BUNDLE", "_CA_CERTS", "_CERT_FILE", "_CERT_DIR"))


class SandboxPool:
    """A sandbox per program in a pytest process (a worker under xdist), the ``keep`` most recently used kept alive.

    A worker grades one submission after another (``schedule.py`` hands out submissions whole), so an idle child is
    rarely needed again; keeping every one alive held a Python process (often with torch imported) per submission and
    worker until the run's end. A child closed here starts again on its next request, as after a crash."""

    def __init__(self, limits: Limits, repo: Path, space: runspace.RunSpace | None = None, keep: int = 4):
        self.limits, self.repo, self.space, self.keep = limits, repo, space, keep
        self._sandboxes: dict[Program, Sandbox] = {}
        self._closed_start_seconds = 0.0
        self._closing: list[threading.Thread] = []  # children being closed in the background

    @property
    def start_seconds(self) -> float:
        """Time this process spent starting children, all sandboxes together (for the case records' time split)."""
        return self._closed_start_seconds + sum(s.start_seconds for s in self._sandboxes.values())

    def get(self, program: Program) -> Sandbox:
        sandbox = self._sandboxes.pop(program, None) or Sandbox(program, self.limits, self.repo, self.space)
        self._sandboxes[program] = sandbox  # most recently used last
        while len(self._sandboxes) > self.keep:
            oldest = self._sandboxes.pop(next(iter(self._sandboxes)))
            self._closed_start_seconds += oldest.start_seconds
            self._closing = [t for t in self._closing if t.is_alive()]
            self._closing.append(_in_background(oldest.close))
        return sandbox

    def close(self) -> None:
        """Close every child, side by side, and wait until all are gone (their cgroups removed)."""
        closing = self._closing + [_in_background(s.close) for s in self._sandboxes.values()]
        for thread in closing:
            thread.join()
        self._sandboxes.clear()
        self._closing.clear()


def _in_background(close: Callable[[], None]) -> threading.Thread:
    """Close a child in a thread of its own: killing it, reaping it and emptying its cgroup takes up to a second or more
    for a child that holds a CUDA context (the driver tears the context down), which is no part of the case that
    needed its place, nor of the run's end when several children close at once."""
    thread = threading.Thread(target=close, name="kernelgrade-close", daemon=True)
    thread.start()
    return thread
