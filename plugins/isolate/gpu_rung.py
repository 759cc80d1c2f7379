"""Which children get the GPU, and in what containment: the strongest in which CUDA starts here, probed once per run.

Only a child whose runtime runs on the GPU is a GPU child (:func:`needs_gpu`, ``plugins/isolate/runtimes/``): a CUDA
build, a Triton/torch function on device tensors, or torch code where the challenge accepts it (ternary training, whose
torch submissions are told ``config["device"]`` is the GPU). Every other child of a GPU run, NumPy ones and the
reference baselines included, is contained like a child of a CPU run and sees no GPU.

A GPU child gets the first rung, strongest first, in which the driver starts (``cuInit`` and a device count):

1. ``namespaces``: the CPU children's bwrap sandbox plus the driver: its device files, its library folders and what
   CUDA reads under ``/proc`` and ``/sys`` (``containment.gpu_bind_args``, :func:`driver_library_folders`);
2. ``namespaces-without-userns`` (the grader is root): the same without a user namespace. The child is root with no
   capability, in its own mount, PID, network, IPC and UTS namespaces; the file system is read-only, the run folder
   and the home folder hidden;
3. ``uid`` (the grader is root and ``nobody`` can run the interpreter): no bwrap, the child runs as user nobody. It
   sees the network and the grader's processes, but cannot signal them, nor write the run folder or the grader's files;

each in a cgroup of its own where the hierarchy is writable, else without one. Where CUDA starts in none of these, the
GPU child is contained like any other, so its GPU work fails, and the reports say why: this grader never hands a GPU
to a child it cannot keep away from its own files (``KERNELGRADE_CONTAINMENT=process-group`` lowers every child to the
grader's own user, for hosts where that is acceptable).

Before the ladder the grader's own probe starts CUDA outside any sandbox (trusted code, no submission's): it says
whether CUDA starts on this host at all, and lets the driver make the device files it makes on first use
(``/dev/nvidia-uvm``), which no sandboxed process could make. The first process of a run that needs the rung probes
and writes it (JSON) in the run's folder, the others read it: one probe per run, and the reports show the rung the
children had (``results.json["sandbox"]["gpu"]``: rung, what was bound, why each stronger rung failed).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plugins.isolate import containment, runtimes
from plugins.isolate.containment import NOBODY, Cgroup, Containment

RUNGS = ("namespaces", "namespaces-without-userns", "uid", "process-group")
# cuInit and a device count through the driver API, what every CUDA program (torch included) does first; on failure it
# exits with the driver's error name, which the reports quote.
_CUDA_STARTS = (
    "import ctypes, sys\nlib = ctypes.CDLL('libcuda.so.1')\ncount = ctypes.c_int()\n"
    "code = lib.cuInit(0) or lib.cuDeviceGetCount(ctypes.byref(count))\nname = ctypes.c_char_p()\n"
    "lib.cuGetErrorName(code, ctypes.byref(name))\n"
    "sys.exit(f'CUDA error {code} ({(name.value or b\"?\").decode()})' if code else 0 if count.value else 'no device')"
)
_PROBE_TIMEOUT_S = 120


def needs_gpu(program: Any) -> bool:
    """Whether the child of a :class:`~plugins.isolate.sandbox.Program` (or of a submission: anything with a
    ``runtime``) is handed the GPU on a GPU run (module docstring): its runtime needs or uses one (CUDA, Triton; torch
    code). The reference baseline runs the reference module's own NumPy code in the Python runtime."""
    return runtimes.runtime(program.runtime).gpu != ""


@dataclass(frozen=True)
class GpuMode:
    """How GPU children are contained here: bwrap with or without a user namespace (None: no bwrap), as user nobody
    or not, in a cgroup or not; ``warning`` says what was given up for CUDA to start, ``tried`` why each stronger rung
    failed, ``binds`` what bwrap binds for the driver."""

    userns: bool | None
    cgroup: bool
    warning: str | None = None
    nobody: bool = False
    tried: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()

    @property
    def rung(self) -> str:
        if self.userns is not None:
            return RUNGS[0] if self.userns else RUNGS[1]
        return RUNGS[2] if self.nobody else RUNGS[3]

    def to_dict(self) -> dict[str, Any]:
        """The facts the reports show (``results.json["sandbox"]["gpu"]``)."""
        return {
            "rung": self.rung,
            "bwrap": self.userns is not None,
            "user_namespace": bool(self.userns),
            "nobody": self.nobody,
            "cgroup": self.cgroup,
            "binds": list(self.binds),
            "tried": list(self.tried),
        }

    @classmethod
    def from_json(cls, text: str) -> GpuMode | None:
        """A mode written by :func:`gpu_mode` (plain JSON values, checked field by field), or None."""
        try:
            raw = json.loads(text)
            tried, binds = tuple(raw["tried"]), tuple(raw["binds"])
            mode = cls(raw["userns"], raw["cgroup"], raw["warning"], raw["nobody"], tried, binds)
        except (ValueError, KeyError, TypeError):
            return None
        flags = [mode.cgroup, mode.nobody] + ([] if mode.userns is None else [mode.userns])
        texts = [*mode.tried, *mode.binds] + ([] if mode.warning is None else [mode.warning])
        ok = all(isinstance(f, bool) for f in flags) and all(isinstance(t, str) for t in texts)
        return mode if ok else None


def record_path(run_root: Path) -> Path:
    """Where a run keeps the rung of its GPU children. One for all its GPUs: what lets the driver start in a sandbox
    is the host's (its device files, libraries, kernel), not one card's; the first GPU child's probe decides."""
    return run_root / "gpu-rung.json"


@functools.cache
def gpu_mode(
    level: Containment, cgroup_parent: Path | None, repo: Path, gpu: str | None, record: Path | None = None
) -> GpuMode:
    """The rung of GPU children here (module docstring), cached per process; with ``record`` (in the run's folder,
    which no child can write) probed by the run's first process that asks, read by the others."""
    if record is None:
        return _probe(level, cgroup_parent, repo, gpu)
    with open(record.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # whoever holds it is probing: wait, then read what it found
        with contextlib.suppress(OSError):
            found = GpuMode.from_json(record.read_text())
            if found is not None:
                return found
        mode = _probe(level, cgroup_parent, repo, gpu)
        partial = record.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            partial.write_text(json.dumps(asdict(mode)))
            partial.rename(record)
        return mode


def _probe(level: Containment, cgroup_parent: Path | None, repo: Path, gpu: str | None) -> GpuMode:
    cgroups = cgroup_parent is not None
    if level.level != "namespaces":  # without bwrap, GPU children are contained as the others are
        return GpuMode(None, cgroups, nobody=level.level == "uid")
    host = _cuda_starts(level, None, False, None, repo, gpu)  # trusted and outside any sandbox (module docstring)
    if host:
        why = f"CUDA does not start on this host, even outside the sandbox ({host}): GPU children run as the others do"
        return GpuMode(True, cgroups, why, tried=(f"host: {host}",), binds=_binds())
    tried: list[str] = []
    for userns, nobody in _candidates():
        for in_cgroup in (True, False) if cgroups and not nobody else (False,):
            # A child that runs as nobody is moved into its cgroup by the grader once started (sandbox.py), as at
            # the uid level: the probe runs outside one.
            mode = GpuMode(userns, in_cgroup or (nobody and cgroups), nobody=nobody)
            why = _cuda_starts(level, userns, nobody, cgroup_parent if in_cgroup else None, repo, gpu)
            if not why:
                binds = _binds() if userns is not None else ()
                return GpuMode(mode.userns, mode.cgroup, _warning(mode, cgroups), nobody, tuple(tried), binds)
            tried.append(f"{mode.rung}{'' if mode.cgroup or not cgroups else ' without a cgroup'}: {why}")
    warning = (
        f"CUDA starts in no contained rung here ({'; '.join(tried)}): GPU children are contained as the others are, "
        "so their GPU work fails (KERNELGRADE_CONTAINMENT=process-group runs every child as the grader's own user)"
    )
    return GpuMode(True, cgroups, warning, tried=tuple(tried), binds=_binds())


def _candidates() -> list[tuple[bool | None, bool]]:
    """(userns, nobody) of the rungs this process may try, strongest first (root for all but the first)."""
    found: list[tuple[bool | None, bool]] = [(True, False)]
    if os.geteuid() == 0:
        found.append((False, False))
        if containment._nobody_can_run():
            found.append((None, True))
    return found


def _warning(mode: GpuMode, cgroups: bool) -> str | None:
    lost = []
    if mode.userns is False:
        lost.append("a user namespace (they run as root with no capability, the run folder hidden)")
    if mode.nobody:
        lost.append("bwrap (they run as user nobody: they see the network and the grader's processes, but cannot write "
                    "the run folder or the grader's files)")  # fmt: skip
    if cgroups and not mode.cgroup:
        lost.append("a cgroup (their processes are found through /proc)")
    if not lost:
        return None
    return f"CUDA does not start in the full sandbox here: GPU children run without {'; without '.join(lost)}"


def _binds() -> tuple[str, ...]:
    """What bwrap binds for the driver, as the facts show it: ``--dev-bind /dev/nvidia0`` and so on."""
    args = containment.gpu_bind_args()
    args += [arg for folder in driver_library_folders() for arg in ("--ro-bind", str(folder), str(folder))]
    return tuple(f"{args[i]} {args[i + 1]}" for i in range(0, len(args), 3))


@functools.cache
def driver_library_folders() -> tuple[Path, ...]:
    """The folders of the driver's user-space libraries (libcuda, libnvidia-*), from the loader's cache (``ldconfig
    -p``) and ``LD_LIBRARY_PATH``, each also through its links (on the H200 host, ``/usr/local/nvidia/lib64``, a
    read-only mount). GPU children get them bound read-only even where a hidden folder would cover them."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    paths = [line.rpartition("=>")[2].strip() for line in listing.splitlines() if "libcuda.so" in line]
    paths += [line.rpartition("=>")[2].strip() for line in listing.splitlines() if "libnvidia-" in line]
    for folder in filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":")):
        paths += glob.glob(os.path.join(folder, "libcuda.so*"))
    folders = {Path(p).parent for p in paths if p} | {Path(os.path.realpath(p)).parent for p in paths if p}
    return tuple(sorted(f for f in folders if f.is_dir()))


def _cuda_starts(
    level: Containment, userns: bool | None, nobody: bool, cgroup_parent: Path | None, repo: Path, gpu: str | None
) -> str:
    """ "" when CUDA starts in this rung (bwrap with or without a user namespace, else as nobody or as this user),
    else why not: the driver's error, or how the probe ended."""
    with tempfile.TemporaryDirectory() as work:
        argv, extra = [sys.executable, "-c", _CUDA_STARTS], {}
        if userns is not None:
            readable = containment.interpreter_paths(repo) + list(driver_library_folders())
            argv = containment.bwrap_args(level.bwrap, Path(work), [Path.home()], True, readable, userns) + argv
        elif nobody:
            extra = {"user": NOBODY, "group": NOBODY, "extra_groups": [], "cwd": "/"}
        group = Cgroup.make(cgroup_parent, f"cuda-probe-{os.getpid()}") if cgroup_parent else None
        env = dict(os.environ) | ({"CUDA_VISIBLE_DEVICES": gpu} if gpu else {})
        try:
            command = group.wrap(argv) if group else argv
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, **extra)
        except subprocess.TimeoutExpired:
            return f"no answer within {_PROBE_TIMEOUT_S} s"
        except OSError as exc:
            return f"could not start: {exc}"
        finally:
            if group is not None:
                group.remove()
    if done.returncode == 0:
        return ""
    last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return last[-200:]
