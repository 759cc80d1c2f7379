"""Build a CUDA submission into a shared library with nvcc: the grader's half of the ``cuda`` runtime.

nvcc never runs as the grader. Each build step runs in the build's containment (``build_box.py``: the sandbox's
namespaces, or its weaker rungs, with time, memory, file-size, process and output limits) on a fresh copy of the
submission's private copy (``runspace.py``), so it can read nothing of the submission's original folder and nothing
outside the copy: an ``#include`` that leaves the folder fails, and the message says so. The command is the grader's
alone: fixed flags (:data:`NVCC_FLAGS`), a host compiler the grader chose (``-ccbin``), the output path, and the one
translation unit discovery chose (``adapter.cu`` wins) passed as ``./name``, so that no file name parses as an option;
a name nvcc would hand to a shell unquoted (``$``, backquotes, quotes, backslashes, control characters) is refused.

The architecture is the GPU's (``nvidia-smi``'s compute capability) or sm_90, the H200's, where there is none (CI
builds for the machine that will run the code). Results, failures included, are cached (``build_cache.py``) under a key
over every byte of the copy and every tool and flag; a build the grader had to stop (time, output) is not cached.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from plugins.isolate import build_box, build_cache, containment, runspace
from plugins.isolate.build_box import BuildLimits

NVCC_FLAGS = ("-O3", "-std=c++17", "-lineinfo", "-Xcompiler", "-fPIC", "-shared")
DEFAULT_ARCH = "sm_90"  # the H200; used where no GPU reports its compute capability
HOST_COMPILER = "g++"  # found on the grader's PATH; passed to nvcc as -ccbin
KEY_VERSION = "build-2"  # bump when the build's command or containment changes what it produces
SOURCE_SUFFIXES = {".cu", ".cuh", ".h", ".hpp", ".hh", ".cpp", ".cc", ".c", ".inl", ".inc"}
FIRST_ERROR_LINES = 12  # of the compiler's output, from its first error on, kept in the case's message
MAX_SOURCE_BYTES = 4 * 2**20
SYMBOL_BYTES = 16 * 2**20  # of nm's listing, read whole (a library of many C++ templates exports thousands of names)
# nvcc runs its steps through a shell with the source's name in double quotes: these would be interpreted there.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.+,=@%:/ -]+")
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
_MARKDOWN = re.compile(r"^(```|#{1,6} +[A-Z*`])", re.MULTILINE)  # a fence, or a heading (directives are lowercase)
_OPEN_FAILED = re.compile(r"cannot open source file|No such file or directory", re.IGNORECASE)


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
def _version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


@functools.cache
def toolkit_bin(nvcc: str) -> Path:
    """The folder of the real nvcc binary (``nvcc`` on PATH may be a wrapper script): what ``nvcc --dryrun`` calls
    ``_HERE_``; the build runs that binary, and sees its toolkit (the folder above) read-only."""
    try:
        done = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", "-o", "/dev/null", "/dev/null"],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        here = re.search(r"^#\$ _HERE_=(.+)$", done.stdout + done.stderr, re.MULTILINE)
    except (OSError, subprocess.TimeoutExpired):
        here = None
    return Path(here[1].strip()) if here else Path(nvcc).resolve().parent


def host_compiler() -> str | None:
    """The host compiler nvcc is told to use (``-ccbin``): the grader's ``g++``, never one a submission names."""
    return shutil.which(HOST_COMPILER)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kernelgrade/cuda`` (``~/.cache/kernelgrade/cuda`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kernelgrade" / "cuda"  # a folder name: the nvcc builds of CUDA sources


def command(nvcc: str, ccbin: str, source: str, output: Path, arch: str) -> list[str]:
    """nvcc's command line: ``./source`` cannot parse as an option (nvcc 13 has no ``--``)."""
    return [nvcc, "-ccbin", ccbin, f"-arch={arch}", *NVCC_FLAGS, "-o", str(output), f"./{source}"]


def unsafe_name(source: str) -> str | None:
    """Why ``source`` cannot be handed to nvcc, or None."""
    parts = source.split("/")
    if not _SAFE_NAME.fullmatch(source) or ".." in parts or source.startswith("/"):
        return (
            f"the source's file name {source!r} holds characters that nvcc would hand to a shell (only letters, "
            "digits, spaces and _ . + , = @ % : - are taken, inside the folder): rename the file"
        )
    return None


@dataclass(frozen=True)
class _Plan:
    """What one build needs besides the folder: the tools, the key's parts, where and under which limits it runs."""

    nvcc: str  # the real binary (see toolkit_bin)
    ccbin: str
    arch: str
    parts: list[str]
    tools: tuple[Path, ...]  # folders the build reads outside /usr: the CUDA toolkit, the host compiler's prefix
    where: build_box.Box
    limits: BuildLimits
    space: runspace.RunSpace


def build(
    folder: Path,
    source: str,
    exports: tuple[str, ...] = (),
    cache: Path | None = None,
    *,
    space: runspace.RunSpace | None = None,
    limits: BuildLimits | None = None,
) -> BuildResult:
    """Compile ``folder/source`` into a cached ``library.so`` that must export ``exports`` (C names).

    ``folder`` is the submission's private copy (the run's, made before any child ran); ``cache`` overrides the cache
    folder (the grader's own tests). The library's folder holds nothing but the library, its log and its record, so
    the sandbox can take it as the program's folder (the child then loads its own copy).
    """
    nvcc, ccbin = nvcc_path(), host_compiler()
    problem = unsafe_name(source)
    if nvcc is None or ccbin is None:
        problem = f"no {'nvcc' if nvcc is None else HOST_COMPILER} on this machine"
    elif not problem and (not (folder / source).is_file() or (folder / source).is_symlink()):
        problem = f"{source} is not a regular file of the folder's copy (files over the size caps are left out)"
    if problem:
        return BuildResult(False, None, problem, "", "", False)
    space = space or runspace.default()
    tools = (toolkit_bin(nvcc).parent, Path(ccbin).resolve().parent.parent)
    where = build_box.box(space.root, tools)
    # A shared cache only where no child can write it: children that run as the grader's user get a per-run cache.
    shared = containment.probe().level != "process-group"
    store = build_cache.open_cache(cache, space, shared, cache_dir())
    parts = [KEY_VERSION, source, gpu_arch(), " ".join(NVCC_FLAGS), _version(nvcc), ccbin, _version(ccbin)]
    real = str(toolkit_bin(nvcc) / "nvcc")
    plan = _Plan(real, ccbin, gpu_arch(), parts, tools, where, limits or BuildLimits(), space)
    key = build_cache.build_key(folder, parts)
    with store.locked(key):
        entry, note = store.lookup(key)
        if entry is not None:
            return _result(folder, source, entry, exports, key, None, where)
        done = _compile(folder, source, key, plan, store)
    if isinstance(done, BuildResult):
        return done
    entry, seconds = done
    notes = "; ".join(n for n in (store.note, note, *where.warnings) if n)  # what the reports should know
    return _result(folder, source, entry, exports, key, seconds, where, notes)


def _compile(
    folder: Path, source: str, key: str, plan: _Plan, store: build_cache.Cache
) -> tuple[build_cache.Entry, float] | BuildResult:
    """Build in a fresh scratch folder and store the entry; a BuildResult where the build was stopped (not cached)."""
    work = build_box.make_work(plan.space, folder, plan.where)
    try:
        if build_cache.build_key(work.src, plan.parts) != key:  # the copy changed between the two reads
            return BuildResult(False, None, f"{source}: the folder changed while it was being built", "", key, False)
        argv = command(plan.nvcc, plan.ccbin, source, work.seen_out / build_cache.LIBRARY, plan.arch)
        ran = build_box.run(argv, work, plan.where, plan.limits, plan.space, plan.tools)
        log = _relative(ran.log, work)
        if ran.stopped:  # not cached: a slower machine, or a later run, may finish it
            return BuildResult(False, None, stopped_message(source, ran.stopped, log, plan.limits), log, key, False)
        built = ran.returncode == 0 and os.path.lexists(work.out / build_cache.LIBRARY)
        symbols = _symbols(work, plan) if built else []
        log = log if built else f"exit {ran.returncode}\n{log}"
        try:
            return store.store(key, work.out if built else None, log, ran.returncode, symbols), ran.seconds
        except (OSError, ValueError) as exc:  # the output is a link, a hard link, a folder or too large
            return BuildResult(False, None, f"nvcc on {source}: its output was refused: {exc}", log, key, False)
    finally:
        shutil.rmtree(work.scratch, ignore_errors=True)


def _symbols(work: build_box.Work, plan: _Plan) -> list[str] | None:
    """Dynamic symbols the library defines: ``nm -D`` in the build's containment (it parses the build's output);
    None where nm is missing or fails (the exports are then not checked)."""
    nm = shutil.which("nm")
    if nm is None:
        return None
    argv = [nm, "-D", "--defined-only", str(work.seen_out / build_cache.LIBRARY)]
    limits = BuildLimits(seconds=60, log_bytes=SYMBOL_BYTES)
    ran = build_box.run(argv, work, plan.where, limits, plan.space, plan.tools, keep=SYMBOL_BYTES)
    if ran.returncode != 0:
        return None
    return [line.split()[-1] for line in ran.log.splitlines() if len(line.split()) >= 3]


def _result(
    folder: Path,
    source: str,
    entry: build_cache.Entry,
    exports: tuple[str, ...],
    key: str,
    seconds: float | None,
    where: build_box.Box,
    note: str = "",
) -> BuildResult:
    cached = seconds is None
    if not entry.ok:
        return BuildResult(False, None, failure_message(folder, source, entry.log), entry.log, key, cached)
    missing = [name for name in exports if entry.symbols is not None and name not in entry.symbols]
    if missing:
        message = (
            f"{source} built, but the library exports no {', '.join(missing)}: the contract function needs C "
            f'linkage (extern "C"), or an adapter.cu that defines it'
        )
        return BuildResult(False, None, message, entry.log, key, cached)
    how = "cached build" if cached else f"built in {seconds:.1f} s ({where.describe()})"
    if exports and entry.symbols is None:  # said here: the child's load then fails with the loader's words only
        note = "; ".join(n for n in (note, f"exports not checked ({', '.join(exports)}): nm is missing or failed") if n)
    message = f"{how}: nvcc -arch={gpu_arch()} {' '.join(NVCC_FLAGS)} {source}" + (f"; {note}" if note else "")
    return BuildResult(True, entry.library, message, entry.log, key, cached)


def stopped_message(source: str, stopped: str, log: str, limits: BuildLimits) -> str:
    """Why the grader stopped the build (``stopped``: "output" or "time"), then the first errors of its log."""
    if stopped == "output":
        why = f"its output passed {limits.log_bytes >> 20} MiB, so it was stopped"
    else:
        why = f"it did not finish within {limits.seconds:.0f} s; all its processes were killed"
    return f"nvcc on {source}: {why}:\n{first_errors(log.splitlines())}"


def failure_message(folder: Path, source: str, log: str) -> str:
    """Why the build failed: a word on sources that are not CUDA at all and on includes from outside the folder, then
    the compiler's first errors."""
    lines = log.splitlines()
    status = lines[0] if lines else ""
    head = f"nvcc failed ({status}) on {source}"
    if _MARKDOWN.search(_read_start(folder / source)):
        head = f"{source} is not CUDA source: it reads as a Markdown document (a ``` fence or a heading); {head}"
    outside = outside_includes(folder)
    if outside and _OPEN_FAILED.search(log):
        head += (
            f". The build sees only the submission's folder (its private copy), and its sources #include files "
            f"outside it ({', '.join(outside[:5])}): copy them into the folder and include them from there"
        )
    return f"{head}:\n{first_errors(lines[1:])}"


def outside_includes(folder: Path) -> list[str]:
    """The ``#include "..."`` names in the folder's sources that point outside it (absolute, or up past its top)."""
    found: set[str] = set()
    root = folder.resolve()
    for path in sorted(folder.rglob("*")):
        if path.suffix in SOURCE_SUFFIXES and path.is_file() and not path.is_symlink():
            for name in _INCLUDE.findall(_read_start(path)):
                target = Path(os.path.normpath(path.parent.resolve() / name))
                if root not in target.parents:
                    found.add(name)
    return sorted(found)


def first_errors(lines: list[str]) -> str:
    """The compiler's output from its first error on, a few lines (the context nvcc prints under each error)."""
    start = next((i for i, line in enumerate(lines) if re.search(r"\berror\b", line, re.IGNORECASE)), 0)
    return "\n".join(lines[start : start + FIRST_ERROR_LINES]).strip() or "(no compiler output)"


def _read_start(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_SOURCE_BYTES).decode(errors="replace")
    except OSError:
        return ""


def _relative(log: str, work: build_box.Work) -> str:
    """Compiler output with the build's folder shown as relative paths, and ``./name`` as ``name``."""
    log = log.replace(f"{work.seen_src}/", "").replace(f"{work.seen_out}/", "")
    return re.sub(r"(^|[\s\"'(])\./(?=\S)", r"\1", log, flags=re.MULTILINE)
