"""Runtimes: how a submission in one language is found, started, contained and timed.

A challenge's contract names the runtimes a submission may use (``Challenge.runtimes``); discovery gives each
submission one of them (:func:`for_folder`: the first that claims the folder by an import, its adapter or its source
files), and every later stage asks the :class:`Runtime` object instead of comparing names: whether there is a build,
whether the child needs the GPU, which loader the child uses, how a speed case is timed. A new language is one more
object here and one loader (``plugins/isolate/runtimes/<loader>.py``, loaded by path in the sandbox child).

This package imports only the standard library and the contracts, so discovery (which runs before isolation) can
use it.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
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
    # The GPU: "" never handed one; "uses": handed the GPU on GPU runs, runs on the CPU elsewhere (torch code, told
    # config["device"]); "needs": handed the GPU, and without one its run cases are skipped (only a build is graded).
    gpu: str = ""
    # How a speed case is timed, which decides who runs the submission's cases: "pair" (the grader times the
    # submission's child against the reference's own child, request by request, plugins/isolate/plugin.py) or
    # "device" (plugins/isolate/gpu_cases.py: the child times the kernel and the contract's ``speed_baselines`` with
    # CUDA events in paired trials, plugins/isolate/runtimes/cuda.py; such a runtime needs the GPU).
    timing: str = "pair"
    packages: tuple[str, ...] = ()  # the grader must import these for the runtime's children to start
    extra: str = ""  # how to install what ``packages`` lacks, for the skip reason
    # A Python runtime that claims a folder whose Python files import this package (MLX, torch), before the suffix
    # decides; "" for the others.
    imports: str = ""

    def __post_init__(self) -> None:
        if self.timing == "device" and not self.needs_gpu:
            raise ValueError(f"runtime {self.name}: timed on the device (CUDA events) yet does not need the GPU")

    @property
    def needs_gpu(self) -> bool:
        return self.gpu == "needs"

    def missing_packages(self) -> tuple[str, ...]:
        """The packages of :attr:`packages` that this machine cannot import."""
        return tuple(p for p in self.packages if importlib.util.find_spec(p) is None)

    def skip_reason(self, on_gpu: bool, builds: bool, is_build_case: bool) -> str | None:
        """Why a case of this runtime does not run here (None: it runs). ``on_gpu``: the run has a GPU; ``builds``:
        the build tool is present; the build case alone grades a build on a machine without a GPU."""
        if self.build and not builds:
            return f"no nvcc: {self.what} submissions are neither built nor run on this machine"
        if not is_build_case and (missing := self.missing_packages()):  # a build needs nvcc alone
            hint = f" ({self.extra})" if self.extra else ""
            return f"{', '.join(missing)} not installed: {self.what} submissions do not run on this machine{hint}"
        if self.needs_gpu and not on_gpu and not is_build_case:
            graded = " (the build case grades the source here)" if self.build else ""
            return f"no GPU: this {self.what} case runs only on a GPU{graded}"
        return None


# NumPy arrays in and out: every challenge's default.
PYTHON = Runtime("python", "Python", ".py", "adapter.py", "python", "python")
# Python code that imports torch (NumPy in and out): handed the GPU where the run has one, as the ternary challenge
# allows (its submissions train a model; the contract tells them config["device"]).
TORCH = Runtime("torch", "torch", ".py", "adapter.py", "python", "python", gpu="uses", imports="torch")
# Python code that imports MLX: an optional extra, so where it is absent its cases are skipped with the reason.
MLX = Runtime(
    "mlx", "MLX", ".py", "adapter.py", "python", "python", packages=("mlx",), imports="mlx",
    extra="optional extra: pip install -r requirements-mlx.txt",
)  # fmt: skip
# A CUDA C++ source built by the grader; its C functions get guarded device buffers (cuda.py).
CUDA = Runtime(
    "cuda", "CUDA", ".cu", "adapter.cu", "extern-c", "cuda", build=True, gpu="needs", timing="device",
    packages=("torch",),
)  # fmt: skip
# Triton or torch on the device: a Python function on torch CUDA tensors (triton.py).
TRITON = Runtime(
    "triton", "Triton/torch", ".py", "adapter.py", "python", "triton", gpu="needs", timing="device",
    packages=("torch", "triton"),
)  # fmt: skip

RUNTIMES = {r.name: r for r in (PYTHON, TORCH, MLX, CUDA, TRITON)}


def case_skip(rt: Runtime, is_build_case: bool, on_gpu: bool, has_nvcc: bool) -> str | None:
    """Why a case of a submission in runtime ``rt`` does not run here, or None (see :meth:`Runtime.skip_reason`); a
    challenge's build case grades a build, so a runtime without one (Triton compiles at its first call) skips it."""
    if is_build_case and not rt.build:
        return f"no build step: a {rt.what} submission is compiled at its first call, in the run cases"
    return rt.skip_reason(on_gpu, has_nvcc or not rt.build, is_build_case)


def runtime(name: str) -> Runtime:
    """The runtime called ``name``; KeyError for an unknown one (a contract naming it fails the conformance test)."""
    return RUNTIMES[name]


def of(challenge: Challenge) -> tuple[Runtime, ...]:
    """The runtimes a challenge accepts, in its order of preference."""
    return tuple(RUNTIMES[name] for name in challenge.runtimes)


def for_folder(challenge: Challenge, folder: Path) -> Runtime:
    """The runtime a submission folder is graded in: the first of the challenge's runtimes that claims it by an import
    (a Python file importing MLX or torch), else of the others the first whose adapter is at the folder's top, else the
    first whose source files the folder holds (``.cu`` before ``.py`` when the contract lists CUDA first), else the
    first (a folder with no code then says which files it lacks)."""
    accepted = of(challenge)
    if len(accepted) == 1:
        return accepted[0]
    if claiming := [rt for rt in accepted if rt.imports]:
        imported = _imported_packages(folder)
        for rt in claiming:
            if rt.imports in imported:
                return rt
    by_files = [rt for rt in accepted if not rt.imports] or list(accepted)  # a claim by import is never by suffix
    for rt in by_files:
        if (folder / rt.adapter).is_file():
            return rt
    for rt in by_files:
        if next(_code_files(folder, rt.suffix), None) is not None:
            return rt
    return by_files[0]


MAX_SCANNED_FILES, MAX_SCANNED_BYTES = 500, 2 << 20  # a folder's Python files read for imports, and each file's size


def _imported_packages(folder: Path) -> set[str]:
    """The top-level packages the folder's Python files import (read with ``ast``, never run; files past the limits
    and files that do not parse are left out)."""
    found: set[str] = set()
    for count, path in enumerate(_code_files(folder, ".py")):
        if count >= MAX_SCANNED_FILES:
            break
        try:
            if path.stat().st_size > MAX_SCANNED_BYTES:
                continue
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def _code_files(folder: Path, suffix: str) -> Iterator[Path]:
    """The regular files under ``folder`` ending in ``suffix``, hidden folders and links left out."""
    try:
        for path in folder.rglob(f"*{suffix}"):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if not hidden and path.is_file() and not path.is_symlink():
                yield path
    except OSError:
        return
