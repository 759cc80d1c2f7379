"""Runtimes: how a submission in one language is found, started, contained and timed.

A challenge's contract names the runtimes a submission may use (``Challenge.runtimes``); discovery gives each
submission one of them (:func:`for_folder`: the first whose source files the folder holds), and every later stage asks
the :class:`Runtime` object instead of comparing names: whether there is a build, whether the child needs the GPU,
which loader the child uses, how a speed case is timed. A new language is one more object here and one loader
(``plugins/isolate/runtimes/<loader>.py``, loaded by path in the sandbox child).

This package imports only the standard library and the contracts, so discovery (which runs before isolation) can
use it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from reference.contract import Challenge


@dataclass(frozen=True)
class Runtime:
    """One way of running a submission (see the module docstring)."""

    name: str
    what: str  # its name in messages: "Python", "CUDA", "Triton/torch"
    suffix: str  # the files that count as code
    adapter: str  # the adapter file that, when present at the folder's top, defines every entry point
    entries_by: str  # how entry points are found: "python" (definitions in .py files), "extern-c" (C linkage in .cu)
    loader: str  # the child's loader, plugins/isolate/runtimes/<loader>.py
    build: bool = False  # the grader compiles the source first (nvcc, plugins/isolate/build.py), contained
    gpu: bool = False  # the child is handed the GPU; without one, run cases are skipped and only a build is graded
    # How a speed case is timed: "pair" (the grader times the submission's child against the reference's own child,
    # request by request, plugins/isolate/plugin.py) or "device" (the child times the kernel and the contract's
    # ``speed_baselines`` with CUDA events in paired trials, plugins/isolate/runtimes/cuda.py).
    timing: str = "pair"
    packages: tuple[str, ...] = ()  # the grader must import these for the runtime's children to start

    def missing_packages(self) -> tuple[str, ...]:
        """The packages of :attr:`packages` that this machine cannot import."""
        return tuple(p for p in self.packages if importlib.util.find_spec(p) is None)

    def skip_reason(self, on_gpu: bool, builds: bool, is_build_case: bool) -> str | None:
        """Why a case of this runtime does not run here (None: it runs). ``on_gpu``: the run has a GPU; ``builds``:
        the build tool is present; the build case alone grades a build on a machine without a GPU."""
        if self.build and not builds:
            return f"no nvcc: {self.what} submissions are neither built nor run on this machine"
        if missing := self.missing_packages():
            return f"{', '.join(missing)} not installed: {self.what} submissions do not run on this machine"
        if self.gpu and not on_gpu and not is_build_case:
            graded = " (the build case grades the source here)" if self.build else ""
            return f"no GPU: this {self.what} case runs only on a GPU{graded}"
        return None


PYTHON = Runtime("python", "Python", ".py", "adapter.py", "python", "python")
CUDA = Runtime(
    "cuda", "CUDA", ".cu", "adapter.cu", "extern-c", "cuda", build=True, gpu=True, timing="device",
    packages=("torch",),
)  # fmt: skip
# Triton or torch: a Python function on torch CUDA tensors (plugins/isolate/runtimes/triton.py).
TRITON = Runtime(
    "triton", "Triton/torch", ".py", "adapter.py", "python", "triton", gpu=True, timing="device",
    packages=("torch", "triton"),
)  # fmt: skip

RUNTIMES = {r.name: r for r in (PYTHON, CUDA, TRITON)}


def runtime(name: str) -> Runtime:
    """The runtime called ``name``; KeyError for an unknown one (a contract naming it fails the conformance test)."""
    return RUNTIMES[name]


def of(challenge: Challenge) -> tuple[Runtime, ...]:
    """The runtimes a challenge accepts, in its order of preference."""
    return tuple(RUNTIMES[name] for name in challenge.runtimes)


def for_folder(challenge: Challenge, folder: Path) -> Runtime:
    """The runtime a submission folder is graded in: the first of the challenge's runtimes whose adapter is at the
    folder's top, else the first whose source files the folder holds (``.cu`` before ``.py`` when the contract lists
    CUDA first), else the first (a folder with no code then says which files it lacks)."""
    accepted = of(challenge)
    if len(accepted) == 1:
        return accepted[0]
    for rt in accepted:
        if (folder / rt.adapter).is_file():
            return rt
    for rt in accepted:
        if _holds(folder, rt.suffix):
            return rt
    return accepted[0]


def _holds(folder: Path, suffix: str) -> bool:
    """Whether any file under ``folder`` (hidden folders and links left out) ends in ``suffix``."""
    try:
        for path in folder.rglob(f"*{suffix}"):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if not hidden and path.is_file() and not path.is_symlink():
                return True
    except OSError:
        return False
    return False
