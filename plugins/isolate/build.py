"""Build a CUDA submission into a shared library with nvcc: the grader's half of the ``cuda`` runtime.

Runs in the grader (never in the sandbox): nvcc only reads the submission's source, it does not run it. One translation
unit is compiled, the file discovery chose (``adapter.cu`` wins); it may ``#include`` the folder's other files.

- Flags live in :data:`NVCC_FLAGS`; the architecture is the GPU's (``nvidia-smi``'s compute capability) or sm_90, the
  H200's, where there is none (CI builds for the machine that will run the code).
- Output is cached by a hash of every source-like file in the folder, the flags, the architecture and nvcc's version,
  under :func:`cache_dir`, one folder per key. A build holds a per-key file lock and writes a temporary folder that is
  renamed into place, so xdist workers and reruns build each source once. Failures are cached too, so every case of a
  submission that does not build reports the same compiler errors without recompiling (a timeout is not cached).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NVCC_FLAGS = ("-O3", "-std=c++17", "-lineinfo", "-Xcompiler", "-fPIC", "-shared")
DEFAULT_ARCH = "sm_90"  # the H200; used where no GPU reports its compute capability
SOURCE_SUFFIXES = {".cu", ".cuh", ".h", ".hpp", ".hh", ".cpp", ".cc", ".c", ".inl", ".inc"}
BUILD_TIMEOUT_S = 300.0
FIRST_ERROR_LINES = 12  # of the compiler's output, from its first error on, kept in the case's message
MAX_SOURCE_BYTES = 4 * 2**20
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
_MARKDOWN = re.compile(r"^(```|#{1,6} +[A-Z*`])", re.MULTILINE)  # a fence, or a heading (directives are lowercase)


@dataclass(frozen=True)
class BuildResult:
    """One build: ``library`` when it succeeded; ``message`` says how it went (the first errors when it failed)."""

    ok: bool
    library: Path | None
    message: str
    log: str
    key: str
    cached: bool


def nvcc_path() -> str | None:
    """nvcc on PATH, or in the default CUDA install folder; None where there is none."""
    found = shutil.which("nvcc")
    default = Path("/usr/local/cuda/bin/nvcc")
    return found or (str(default) if default.exists() else None)


@functools.cache
def gpu_arch() -> str:
    """``sm_XY`` of the first GPU nvidia-smi lists, else :data:`DEFAULT_ARCH` (asks no CUDA context of this process)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_ARCH
    match = re.match(r"\s*(\d+)\.(\d+)", done.stdout) if done.returncode == 0 else None
    return f"sm_{match[1]}{match[2]}" if match else DEFAULT_ARCH


@functools.cache
def nvcc_version(nvcc: str) -> str:
    try:
        return subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kernelgrade/cuda`` (``~/.cache/kernelgrade/cuda`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kernelgrade" / "cuda"


def sources(folder: Path) -> list[Path]:
    """The folder's source-like files (relative), which a build may include and so its cache key covers."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and path.suffix in SOURCE_SUFFIXES and not any(p.startswith(".") for p in rel.parts):
            found.append(rel)
    return found


def included_outside(folder: Path) -> list[Path]:
    """Files outside the folder that its sources ``#include "..."`` (directly or through each other), so that the
    cache key follows them too (an adapter may include a shared header from elsewhere in a model's repo)."""
    seen: set[Path] = set()
    pending = [(folder / rel).resolve() for rel in sources(folder)]
    while pending:
        path = pending.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        with contextlib.suppress(OSError):
            text = path.read_bytes()[:MAX_SOURCE_BYTES].decode(errors="replace")
            pending += [(path.parent / name).resolve() for name in _INCLUDE.findall(text)]
    root = folder.resolve()
    return sorted(path for path in seen if root not in path.parents)


def command(nvcc: str, source: str, output: Path, arch: str) -> list[str]:
    return [nvcc, f"-arch={arch}", *NVCC_FLAGS, "-o", str(output), source]


def cache_key(folder: Path, source: str, nvcc: str, arch: str) -> str:
    digest = hashlib.sha256()
    for part in (source, arch, " ".join(NVCC_FLAGS), nvcc_version(nvcc)):
        digest.update(part.encode() + b"\0")
    named = [(rel.as_posix(), folder / rel) for rel in sources(folder)]
    named += [(path.as_posix(), path) for path in included_outside(folder)]
    for name, path in named:
        digest.update(name.encode() + b"\0" + path.read_bytes()[:MAX_SOURCE_BYTES] + b"\0")
    return digest.hexdigest()[:24]


LIBRARY = "library.so"  # in the build's folder, ``<cache>/<key>/``, beside build.log (or failed.log)


def build(folder: Path, source: str, exports: tuple[str, ...] = (), cache: Path | None = None) -> BuildResult:
    """Compile ``folder/source`` into ``<cache>/<key>/library.so``, which must export ``exports`` (C names).

    The build's folder holds nothing but the library and its log, so the sandbox can take it as the program's folder
    (the child then loads its own copy, whatever it may see of the grader's file system).
    """
    nvcc = nvcc_path()
    if nvcc is None:
        return BuildResult(False, None, "no nvcc on this machine", "", "", False)
    arch = gpu_arch()
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = cache_key(folder, source, nvcc, arch)
    final = cache / key
    with _locked(cache / f"{key}.lock"):
        if final.is_dir():
            return _result(folder, source, final, exports, cached=True, seconds=None)
        staging = cache / f"{key}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        start = time.monotonic()
        try:
            done = subprocess.run(
                command(nvcc, source, staging / LIBRARY, arch),
                cwd=folder, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)  # not cached: a slow machine may finish it next time
            message = f"nvcc did not finish within {BUILD_TIMEOUT_S:.0f} s on {source}"
            return BuildResult(False, None, message, "", key, False)
        log = _relative(done.stdout + done.stderr, folder)
        if done.returncode == 0 and (staging / LIBRARY).exists():
            (staging / "build.log").write_text(log)
        else:
            (staging / LIBRARY).unlink(missing_ok=True)
            (staging / "failed.log").write_text(f"exit {done.returncode}\n{log}")
        os.replace(staging, final)  # atomic: other processes see a whole build or none
        return _result(folder, source, final, exports, False, time.monotonic() - start)


def _result(
    folder: Path, source: str, built: Path, exports: tuple[str, ...], cached: bool, seconds: float | None
) -> BuildResult:
    key = built.name
    if (built / "failed.log").exists():
        log = (built / "failed.log").read_text()
        return BuildResult(False, None, failure_message(folder, source, log), log, key, cached)
    log = (built / "build.log").read_text() if (built / "build.log").exists() else ""
    symbols = exported_symbols(built / LIBRARY)
    missing = [name for name in exports if symbols is not None and name not in symbols]
    if missing:
        message = (
            f"{source} built, but the library exports no {', '.join(missing)}: the contract function needs C "
            f'linkage (extern "C"), or an adapter.cu that defines it'
        )
        return BuildResult(False, None, message, log, key, cached)
    how = "cached build" if cached else f"built in {seconds:.1f} s"
    message = f"{how}: nvcc -arch={gpu_arch()} {' '.join(NVCC_FLAGS)} {source}"
    return BuildResult(True, built / LIBRARY, message, log, key, cached)


def failure_message(folder: Path, source: str, log: str) -> str:
    """Why the build failed: a word on sources that are not CUDA at all, then the compiler's first errors."""
    lines = log.splitlines()
    status = lines[0] if lines else ""
    head = f"nvcc failed ({status}) on {source}"
    with contextlib.suppress(OSError):
        if _MARKDOWN.search((folder / source).read_text(errors="replace")[:MAX_SOURCE_BYTES]):
            head = f"{source} is not CUDA source: it reads as a Markdown document (a ``` fence or a heading); {head}"
    return f"{head}:\n{first_errors(lines[1:])}"


def first_errors(lines: list[str]) -> str:
    """The compiler's output from its first error on, a few lines (the context nvcc prints under each error)."""
    start = next((i for i, line in enumerate(lines) if re.search(r"\berror\b", line, re.IGNORECASE)), 0)
    return "\n".join(lines[start : start + FIRST_ERROR_LINES]).strip() or "(no compiler output)"


def exported_symbols(library: Path) -> set[str] | None:
    """Dynamic symbols the library defines (``nm -D``), read without loading it; None where nm is missing."""
    if shutil.which("nm") is None:
        return None
    done = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=False)
    return {line.split()[-1] for line in done.stdout.splitlines() if line.strip()} if done.returncode == 0 else None


def _relative(log: str, folder: Path) -> str:
    """Compiler output with the submission's folder shown as relative paths."""
    return log.replace(f"{folder.resolve()}/", "").replace(f"{folder}/", "")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
