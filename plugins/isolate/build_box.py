"""The build's containment: nvcc, and everything it starts, run in the sandbox's containment, never as the grader.

A build step (nvcc, then ``nm`` on its library) works on a fresh copy of the submission's private copy (``src``,
read-only to the step) and writes only to its own ``out`` folder, which the grader reads afterwards. Strongest first,
by what :func:`containment.probe` found (:func:`box`):

- ``namespaces``: bubblewrap with every namespace (no network: a loopback of its own), every capability dropped, and
  a file system made only of the system's programs and libraries (``/usr`` and its links, the CUDA and host-compiler
  folders, the loader's cache), ``src`` read-only, ``out`` writable and a private ``/tmp`` of limited size: the
  grader's tree, home, run folder and build cache are not there. Where the grader runs as root and user ``nobody``
  can start bubblewrap, the step runs as ``nobody``, so the process-count limit holds (root is exempt from it);
- ``uid``: no bubblewrap, but the grader is root; the step runs as ``nobody`` (even where the sandbox's children
  cannot: nobody need not run the interpreter; it must reach the run's scratch folders) in a network namespace of its
  own; it sees what ``nobody`` may read of the file system (world-readable files), and cannot write the grader's;
- ``process-group``: the grader's own user, with the limits only (and no network where a user namespace can be made).

Every step has limits (:class:`BuildLimits`): wall time (the whole tree is killed: its cgroup, its process group, its
PID namespace), address space per process (``RLIMIT_AS``), size of any one file it writes (``RLIMIT_FSIZE``), processes
(``RLIMIT_NPROC``), and output: the grader reads at most ``log_bytes`` of it, then stops the step; the log it keeps is
the head and the tail. The environment is made here from nothing (no ``NVCC_*``, ``CPATH`` or ``GCC_*`` variables).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from plugins.isolate import containment, runspace
from plugins.isolate.containment import NOBODY, Cgroup

LAUNCHER = Path(__file__).resolve().parent / "build_launch.py"
SEEN_SRC, SEEN_OUT = Path("/build/src"), Path("/build/out")  # the step's view of its folders under bubblewrap
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")
LOG_HEAD, LOG_TAIL = 48 * 1024, 16 * 1024  # bytes of the step's output kept: the first errors, and how it ended


@dataclass(frozen=True)
class BuildLimits:
    """Limits of one build step. The demo's build peaks well under 1 GiB of address space per process."""

    seconds: float = 300.0
    memory_bytes: int = 4 * 2**30  # RLIMIT_AS of each process (cudafe++, cicc, ptxas, cc1plus)
    file_bytes: int = 256 * 2**20  # RLIMIT_FSIZE: any one file written (the library, nvcc's temporary files)
    log_bytes: int = 8 * 2**20  # output read before the step is stopped
    processes: int = 64  # RLIMIT_NPROC, over what the step's user already runs outside a namespace
    tmp_bytes: int = containment.PRIVATE_TMP_BYTES  # the private /tmp under bubblewrap


@dataclass(frozen=True)
class Box:
    """How build steps are contained here (see the module docstring); ``uid`` is the user they run as, if not ours."""

    level: str
    bwrap: str | None = None
    uid: int | None = None
    unshare_net: bool = False  # outside bubblewrap: the launcher makes a network namespace
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        who = "as nobody" if self.uid == NOBODY else "as the grader's user"
        net = "no network" if self.bwrap or self.unshare_net else "network reachable"
        return f"{'bubblewrap namespaces' if self.bwrap else self.level}, {who}, {net}"


@dataclass(frozen=True)
class Work:
    """One step's folders: the real paths, and the paths the step sees (the same outside bubblewrap)."""

    scratch: Path
    src: Path
    out: Path
    tmp: Path
    seen_src: Path
    seen_out: Path


@dataclass(frozen=True)
class Ran:
    """How a step ended: its exit status (None when the grader stopped it: ``stopped`` says why), its cut log."""

    returncode: int | None
    log: str
    stopped: str
    seconds: float


@functools.cache
def box(run_root: Path, tools: tuple[Path, ...] = ()) -> Box:
    """The strongest build containment here for steps that work in ``run_root`` and run ``tools`` (folders outside
    ``/usr`` the build reads: nobody must reach them too), cached per process."""
    level = containment.probe()
    if level.level == "namespaces":
        if os.geteuid() == 0 and _nobody_bwrap_works(level.bwrap, run_root, tools):
            return Box("namespaces", level.bwrap, NOBODY)
        warning = "builds run in bubblewrap as root without capabilities: the process-count limit does not apply"
        return Box("namespaces", level.bwrap, None, warnings=(warning,) if os.geteuid() == 0 else ())
    # As root, a build runs as nobody even where the sandbox's children cannot (nobody need not run the interpreter).
    reach = [shutil.which("test", path="/usr/bin:/bin") or "/usr/bin/test", "-x", str(run_root / "sandboxes")]
    for tool in tools:
        reach += ["-a", "-x", str(tool)]
    uid = NOBODY if os.geteuid() == 0 and _launches(NOBODY, False, reach) else None
    net = _launches(uid, True, [shutil.which("true", path="/usr/bin:/bin") or "/usr/bin/true"])
    rung = "uid" if uid is not None else "process-group"
    warnings = [f"builds run without namespaces ({rung}): they see the file system as their user does"]
    if not net:
        warnings.append("builds can reach the network (no network namespace could be made)")
    return Box(rung, None, uid, net, tuple(warnings))


def make_work(space: runspace.RunSpace, folder: Path, where: Box) -> Work:
    """A scratch folder with a vetted copy of ``folder`` (``src``, read-only to the step: the key is computed over it)
    and an empty ``out`` and ``tmp`` that the step's user owns."""
    scratch = space.scratch()
    scratch.chmod(0o711)  # another user (nobody) reaches src and out by name, lists nothing
    src, out, tmp = scratch / "src", scratch / "out", scratch / "tmp"
    runspace.copy_folder(folder, src)
    for path in [src, *src.rglob("*")]:
        if not path.is_symlink():  # readable by the step's user whatever the grader's umask; writable by none
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)
    for path in (out, tmp):
        path.mkdir(mode=0o700)
        if where.uid is not None:
            os.chown(path, where.uid, where.uid)
    seen = (SEEN_SRC, SEEN_OUT) if where.bwrap else (src, out)
    return Work(scratch, src, out, tmp, *seen)


def run(argv: list[str], work: Work, where: Box, limits: BuildLimits, space: runspace.RunSpace,
        tools: tuple[Path, ...] = (), keep: int = LOG_HEAD) -> Ran:  # fmt: skip
    """Run one step (``argv`` names paths as the step sees them) contained as ``where`` says; ``tools`` are folders
    outside ``/usr`` that it must read (the CUDA toolkit, the host compiler); the log keeps the first ``keep`` bytes
    of the output and the last :data:`LOG_TAIL`."""
    tmp = Path("/tmp") if where.bwrap else work.tmp
    path = ":".join([*(str(t / "bin") for t in tools), "/usr/bin", "/bin"])
    env = {"PATH": path, "HOME": str(tmp), "TMPDIR": str(tmp), "LC_ALL": "C", "LANG": "C"}
    full = _bwrap_args(where.bwrap, work, limits, tools) + argv if where.bwrap else argv
    parent = space.cgroup_parent(containment.probe())
    group = Cgroup.make(parent, f"build-{work.scratch.name}") if parent else None
    spec = {
        "cgroup": str(group.path) if group else None,
        "unshare_net": where.unshare_net,
        "rlimits": _rlimits(limits, where.uid),
        "uid": where.uid,
        "gid": where.uid,
        "env": env,
    }
    launcher = [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec), *full]
    read_end, write_end = os.pipe()
    start = time.monotonic()
    try:
        process = subprocess.Popen(
            launcher, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end, cwd=work.src, env={},
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(write_end)
    try:
        head, tail, total, stopped = _drain(read_end, start + limits.seconds, limits.log_bytes, keep)
        code = _wait(process, group, start + limits.seconds, stopped)
    finally:
        os.close(read_end)
        _stop(process, group)
        if group is not None:
            group.remove()
    stopped = stopped or ("time" if code is None else "")
    return Ran(code, _cut(head, tail, total), stopped, time.monotonic() - start)


def _bwrap_args(bwrap: str, work: Work, limits: BuildLimits, tools: tuple[Path, ...]) -> list[str]:
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL", *_system(tools)]
    args += ["--dev", "/dev", "--proc", "/proc", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--ro-bind", str(work.src), str(SEEN_SRC), "--bind", str(work.out), str(SEEN_OUT)]
    return [*args, "--chdir", str(SEEN_SRC), "--"]


def _system(tools: tuple[Path, ...]) -> list[str]:
    """bwrap arguments for the only files a step sees besides its own: programs, libraries, the loader's cache."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    for name in ETC_FILES:
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    for tool in tools:
        if tool.is_dir() and Path("/usr") not in [tool, *tool.parents]:
            args += ["--ro-bind", str(tool), str(tool)]
    return args


def _rlimits(limits: BuildLimits, uid: int | None) -> dict[str, int]:
    # RLIMIT_NPROC counts the user's tasks machine-wide outside a user namespace (and is checked when the launcher
    # becomes that user): the cap is what the user already runs plus the step's share.
    processes = limits.processes + _tasks_of(os.geteuid() if uid is None else uid)
    cpu = int(limits.seconds) + 10  # a backstop: the grader kills the step at ``seconds`` of wall time
    return {
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_FSIZE": limits.file_bytes,
        "RLIMIT_NPROC": processes,
        "RLIMIT_CPU": cpu,
        "RLIMIT_CORE": 0,
    }


def _tasks_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = dict(line.split(":", 1) for line in Path(entry.path, "status").read_text().splitlines())
                if int(fields["Uid"].split()[0]) == uid:
                    count += int(fields["Threads"])
    return count


def _drain(fd: int, deadline: float, cap: int, keep: int) -> tuple[bytes, bytes, int, str]:
    """Read the step's output until it closes, the deadline passes or ``cap`` bytes came: head, tail, total, why
    reading stopped early ("" when the output ended)."""
    head, tail, total = bytearray(), bytearray(), 0
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(head), bytes(tail), total, "time"
            if not selector.select(min(left, 1.0)):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return bytes(head), bytes(tail), total, ""
            total += len(chunk)
            room = keep - len(head)
            head += chunk[:room]
            tail = (tail + chunk[room:])[-LOG_TAIL:] if len(chunk) > room else tail
            if total > cap:
                return bytes(head), bytes(tail), total, "output"


def _wait(process: subprocess.Popen[bytes], group: Cgroup | None, deadline: float, stopped: str) -> int | None:
    if stopped:
        _stop(process, group)
        return None
    try:
        return process.wait(timeout=max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:  # closed its output, still running
        return None


def _stop(process: subprocess.Popen[bytes], group: Cgroup | None) -> None:
    """Kill every process of the step: its cgroup, its process group (bubblewrap's PID namespace dies with it)."""
    if group is not None:
        group.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _cut(head: bytes, tail: bytes, total: int) -> str:
    if total <= len(head) + len(tail):
        return (head + tail).decode(errors="replace")
    cut = total - len(head) - len(tail)
    return f"{head.decode(errors='replace')}\n[... {cut} bytes of output cut ...]\n{tail.decode(errors='replace')}"


def _nobody_bwrap_works(bwrap: str, run_root: Path, tools: tuple[Path, ...]) -> bool:
    """Whether user nobody can start bubblewrap and reach the run's scratch folders and the tools (user namespaces
    for all)."""
    true = shutil.which("true", path="/usr/bin:/bin") or "/usr/bin/true"
    args = [bwrap, "--unshare-all", *_system(tools), "--ro-bind", str(run_root / "sandboxes"), "/probe", "--", true]
    try:
        done = subprocess.run(args, user=NOBODY, group=NOBODY, extra_groups=[], cwd="/", capture_output=True,
                              timeout=20, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _launches(uid: int | None, unshare_net: bool, argv: list[str]) -> bool:
    """Whether the launcher, as ``uid`` and with or without a network of its own, runs ``argv`` successfully."""
    spec = {"unshare_net": unshare_net, "uid": uid, "gid": uid, "env": {}}
    try:
        done = subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec), *argv], cwd="/",
                              capture_output=True, timeout=20, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0
