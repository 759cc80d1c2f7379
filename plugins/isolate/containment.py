"""What keeps a sandbox child away from the grader: namespaces through bubblewrap, a cgroup, or at least another user.

Probed once per process (:func:`probe`), strongest first:

- ``namespaces``: ``bwrap`` (the Debian package ``bubblewrap``) works here. The child then runs in its own user, PID,
  mount, network, IPC and UTS namespaces with every capability dropped: the whole file system read-only except three
  tmpfs mounts of its own, each with a size (its work folder, ``/tmp``, ``/dev/shm``; see ``diskcap.py``); ``/proc``
  its own namespace's, read-only (so it cannot reset the kernel's peak-RSS mark); the run folder hidden; no network
  but loopback. It cannot see or signal the grader (its
  parent is the namespace's init, which ignores it), and when the namespace's init dies every process in it dies.
- ``uid``: no bwrap, but the grader runs as root and the unprivileged user ``nobody`` can run the interpreter: the
  child runs as ``nobody``, so it cannot signal the grader or write the grader's files.
- ``process-group``: neither. Only rlimits and a process group remain; a submission can then reach the grader.

Independently, where the cgroup v2 hierarchy is writable, each child runs in a cgroup of its own: the grader lists
every process of the tree from ``cgroup.procs`` (forked, double-forked and ``setsid`` ones included), kills them all
with ``cgroup.kill``, and reads ``memory.peak`` where the memory controller is enabled. What is missing is said in
:attr:`Containment.warnings`, which the reports show.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOBODY = 65534
PRIVATE_TMP_BYTES = 512 * 2**20  # the child's /tmp and /dev/shm (tmpfs: memory, so capped)
WORK_BYTES = 512 * 2**20  # the child's work folder (tmpfs): its folder's copy (at most 256 MiB) and what it writes
_FORCED = "KERNELGRADE_CONTAINMENT"  # "namespaces" | "uid" | "process-group": the grader's own tests force a level


@dataclass(frozen=True)
class Containment:
    """The strongest containment this machine allows (see the module docstring)."""

    level: str
    bwrap: str | None = None
    cgroup_base: Path | None = None  # a writable cgroup v2 folder under which runs make theirs
    memory_peak: bool = False  # the memory controller can be enabled there (memory.peak per sandbox)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "namespaces": self.level == "namespaces",
            "separate_user": self.level in ("namespaces", "uid"),
            "cgroup": self.cgroup_base is not None,
            "memory_peak": self.memory_peak,
            "warnings": list(self.warnings),
        }


@functools.cache
def probe() -> Containment:
    """The containment level, cgroup support and warnings for this machine (cached per process)."""
    forced = os.environ.get(_FORCED, "")
    bwrap = shutil.which("bwrap")
    warnings: list[str] = []
    base, memory = _cgroup_base()
    if base is None:
        warnings.append(
            "no writable cgroup v2 hierarchy: a submission's processes are found by their parent links and killed by "
            "process group and namespace, and its memory is sampled from /proc"
        )
    if forced in ("", "namespaces") and bwrap and _bwrap_works(bwrap):
        return Containment("namespaces", bwrap, base, memory, tuple(warnings))
    if forced != "namespaces":
        why = f"bwrap {'does not work here' if bwrap else 'is not installed'} (apt-get install bubblewrap)"
        if forced in ("", "uid") and os.geteuid() == 0 and _nobody_can_run():
            warnings.append(f"{why}: submissions run as user nobody, seeing the network and the grader's processes")
            return Containment("uid", None, base, memory, tuple(warnings))
        warnings.append(
            f"{why}, and no other user can run the interpreter: submissions run as the grader's own user, in a "
            "process group with rlimits only; they can write the grader's files and signal its processes"
        )
    return Containment("process-group", None, base, memory, tuple(warnings))


def bwrap_args(
    bwrap: str,
    workdir: Path,
    hidden: list[Path],
    gpu: bool,
    readable: list[Path] | None = None,
    userns: bool = True,
    *,
    source: Path | None = None,
    writable: Path | None = None,
) -> list[str]:
    """The bwrap command line before the child's own: see the module docstring for what each part is for. Without
    ``userns`` (for a GPU driver that will not start in a user namespace; bwrap must then run as root) the child is
    root without any capability, in the same other namespaces. ``workdir`` is a tmpfs of :data:`WORK_BYTES`, empty:
    ``source`` (the vetted copy of the child's folder) is bound read-only for the child's start to copy from;
    ``writable`` (its owner's compile cache) is bound read-write, the one host folder it may write."""
    unshare = ["--unshare-all"] if userns else ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args = [bwrap, "--die-with-parent", "--new-session", *unshare, "--cap-drop", "ALL"]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--remount-ro", "/proc"]
    if gpu:  # what the driver needs (gpu_rung.py says which children get it)
        args += gpu_bind_args()
    size = str(PRIVATE_TMP_BYTES)
    args += ["--size", size, "--tmpfs", "/dev/shm", "--size", size, "--tmpfs", "/tmp"]
    covered = [p for p in hidden if p.exists() and not _under(p, Path("/tmp")) and p != Path("/")]
    for path in covered:  # the run folder and the temp folder when it is not /tmp (locks, other sandboxes), home
        args += ["--tmpfs", str(path)]
    # The interpreter, the repo or a virtual environment may live under a hidden temp folder: bring them back.
    for path in readable or []:  # (never a hidden folder itself: a script run from /tmp puts /tmp on sys.path)
        if any(_under(path, h) and path != h for h in [Path("/tmp"), *hidden]) and path.exists():
            args += ["--ro-bind", str(path), str(path)]
    if source is not None:
        args += ["--ro-bind", str(source), str(source)]
    if writable is not None:  # a mount of its own: it stays writable when a hiding tmpfs above is remounted read-only
        args += ["--bind", str(writable), str(writable)]
    args += ["--size", str(WORK_BYTES), "--tmpfs", str(workdir), "--chdir", str(workdir)]
    # Writable space is the three sized mounts only: the tmpfs mounts that hide folders, and /dev, have no size.
    for path in [*covered, Path("/dev")]:
        args += ["--remount-ro", str(path)]
    return [*args, "--"]


# What CUDA (and NVML) read besides the device files: the driver's entries under /proc and the PCI devices in /sys.
# They are under the read-only root already; binding them by name keeps them if the root ever narrows.
GPU_SYSTEM_PATHS = (
    "/proc/driver/nvidia",
    "/sys/bus/pci",
    "/sys/devices",
    "/sys/module/nvidia",
    "/sys/module/nvidia_uvm",
)


def gpu_bind_args() -> list[str]:
    """bwrap arguments that give a GPU child the driver: every NVIDIA device file (``nvidiactl``, ``nvidia0``...,
    ``nvidia-uvm``, ``nvidia-uvm-tools``, ``nvidia-modeset``, the ``nvidia-caps`` folder of MIG) and DRI node on a
    ``--dev`` of its own, and :data:`GPU_SYSTEM_PATHS` read-only. The driver's libraries come through ``readable``
    (``gpu_rung.driver_library_folders``)."""
    args = []
    for device in sorted(glob.glob("/dev/nvidia*")) + sorted(glob.glob("/dev/dri/*")):
        args += ["--dev-bind", device, device]
    for path in GPU_SYSTEM_PATHS:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def interpreter_paths(repo: Path) -> list[Path]:
    """What the child must be able to read: the repo and the interpreter's own folders."""
    paths = {repo, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent}
    paths |= {Path(p) for p in sys.path if p and Path(p).is_dir()}
    return sorted(paths)


@functools.cache
def _bwrap_works(bwrap: str) -> bool:
    with tempfile.TemporaryDirectory() as work:
        args = bwrap_args(bwrap, Path(work), [], gpu=False)
        try:
            done = subprocess.run([*args, "true"], capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


@functools.cache
def _nobody_can_run() -> bool:
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import numpy"], user=NOBODY, group=NOBODY, extra_groups=[],
            cwd="/", capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


# --- cgroups ---


def _cgroup_base() -> tuple[Path | None, bool]:
    """This process's own cgroup v2 folder if a child cgroup can be made there (and whether memory can be enabled)."""
    mount = next((m for m in _mounts() if m[1] == "cgroup2"), None)
    own = next((line[3:] for line in _read("/proc/self/cgroup").splitlines() if line.startswith("0::")), None)
    if mount is None or own is None:
        return None, False
    base = Path(mount[0]) / own.strip().lstrip("/")
    trial = base / f"kernelgrade-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        trial.mkdir()
    except OSError:
        return None, False
    try:
        ok = (trial / "cgroup.kill").exists() and (trial / "cgroup.procs").exists()
        memory = ok and _enable_memory(trial)
    finally:
        with contextlib.suppress(OSError):
            trial.rmdir()
    return (base, memory) if ok else (None, False)


def _enable_memory(group: Path) -> bool:
    """Enable the memory controller for ``group``'s children, where its parent offers it."""
    if "memory" not in _read(group / "cgroup.controllers").split():
        return False
    try:
        (group / "cgroup.subtree_control").write_text("+memory")
    except OSError:
        return False
    return True


def _mounts() -> list[tuple[str, str]]:
    found = []
    for line in _read("/proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        if left and right:
            found.append((left.split()[4], right.split()[0]))
    return found


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


class Cgroup:
    """One cgroup v2 folder: processes listed, killed together, removed; ``memory.peak`` where enabled."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def make(cls, parent: Path, name: str, memory: bool = False) -> Cgroup | None:
        """``parent/name``; with ``memory``, its own children get the memory controller (``memory.peak``)."""
        path = parent / name
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            return None
        if memory:
            _enable_memory(path)
        return cls(path)

    def procs(self) -> list[int]:
        return [int(p) for p in _read(self.path / "cgroup.procs").split()]

    def kill(self) -> None:
        """Kill every process in the group and its children, then wait (briefly) until it is empty."""
        for group in sorted(self.path.rglob("cgroup.kill"), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                group.write_text("1")
        deadline = time.monotonic() + 2.0
        while "populated 1" in _read(self.path / "cgroup.events") and time.monotonic() < deadline:
            time.sleep(0.005)

    def freeze(self, frozen: bool) -> bool:
        """Write ``cgroup.freeze`` (False where the kernel has no freezer here); when freezing, wait (briefly) until the
        kernel reports every task of the group stopped."""
        try:
            (self.path / "cgroup.freeze").write_text("1" if frozen else "0")
        except OSError:
            return False
        deadline = time.monotonic() + 0.2  # a task inside a system call stops when it leaves it
        while frozen and "frozen 1" not in _read(self.path / "cgroup.events") and time.monotonic() < deadline:
            time.sleep(0.001)
        return True

    def remove(self) -> None:
        self.kill()
        for folder in sorted((p for p in self.path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def add(self, pid: int) -> None:
        """Move a started process into this group (the grader does it, as root, for children that run as nobody)."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside this cgroup: a shell joins it, then execs ``argv`` (before any child code runs)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *argv]


def remove_stale_cgroups(base: Path, prefix: str, alive: Any) -> None:
    """Kill and remove run cgroups whose owner process is gone (``alive(name)`` says which are still owned)."""
    with contextlib.suppress(OSError):
        for path in base.iterdir():
            if path.is_dir() and path.name.startswith(prefix) and not alive(path.name):
                Cgroup(path).remove()
