"""Find which file of a submission defines each entry point, by reading source (``ast``), never by importing it.

Discovery runs in the grader's process, so a submission's module must not execute there: modules that print, read files
or loop forever at import are parsed, not run. Rules, in order:

1. an ``adapter.py`` at the folder's top wins for every entry point (it may import the submission's own modules);
2. otherwise a file that defines *all* entry points beats one that defines some;
3. files that look like the model's own tests or benchmarks (``test_*.py``, ``*_test.py``, ``conftest.py``,
   ``bench*``, anything under ``tests/``) count only when nothing else defines the name;
4. then the shallowest file, then the one named after the challenge, then alphabetical order.

The chosen file and the alternatives are recorded so the report can show them.
"""

from __future__ import annotations

import ast
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

ADAPTER = "adapter.py"
MAX_SOURCE_BYTES = 2 * 2**20
SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", "site-packages"}
MAX_FILES_LISTED = 5000  # a submission folder with more source files than this is not a kernel; the rest are ignored


class Unreadable(Exception):
    """A source file the grader will not parse, with the reason as the message (shown in the report)."""


def read_source(path: Path, limit: int = MAX_SOURCE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; raises :class:`Unreadable` otherwise.

    A FIFO, a device (a symlink to ``/dev/zero``) or a socket named ``*.py`` is never opened for reading: the file type
    is checked before opening, and again on the open descriptor (opened non-blocking, so a FIFO swapped in between
    cannot block), and at most ``limit + 1`` bytes are read.
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(f"not a regular file ({_file_kind(info.st_mode)}): not read")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Unreadable("not a regular file: not read")
            data = handle.read(limit + 1)
    except OSError as exc:
        raise Unreadable(f"unreadable: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise Unreadable(f"over the parse limit of {limit // 2**20} MiB: not read")
    return data


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))
    kinds += ((stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))
    return next((name for test, name in kinds if test(mode)), "special file")


def source_names(path: Path) -> tuple[set[str], str]:
    """Top-level names a Python file defines (functions, classes, assignments, imports), and why none could be read:
    ``""`` when it parsed, else the reason (``line 3: syntax error: invalid syntax``, over the parse limit, a FIFO)."""
    try:
        tree = ast.parse(read_source(path), filename=str(path))
    except Unreadable as exc:
        return set(), str(exc)
    except SyntaxError as exc:
        return set(), f"line {exc.lineno}: syntax error: {exc.msg}"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes; nesting too deep for the parser
        return set(), f"not parsable: {exc.__class__.__name__}: {str(exc)[:200]}"
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names, ""


def defined_names(path: Path) -> set[str]:
    """Top-level names a Python file defines; empty if it could not be read or parsed (see :func:`source_names`)."""
    return source_names(path)[0]


def python_files(folder: Path, suffix: str = ".py") -> list[Path]:
    """Every ``suffix`` file under ``folder``, relative and sorted, skipping caches, virtual environments and hidden
    folders without entering them, never following a symlinked folder, and stopping at ``MAX_FILES_LISTED``."""
    found: list[Path] = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        rel_top = Path(top).relative_to(folder)
        found += [rel_top / f for f in files if f.endswith(suffix) and not f.startswith(".")]
        if len(found) >= MAX_FILES_LISTED:
            break
    return sorted(found)[:MAX_FILES_LISTED]


def looks_like_test(rel: Path) -> bool:
    name = rel.name
    return (
        name.startswith(("test_", "bench"))
        or name.endswith("_test.py")
        or name == "conftest.py"
        or any(part in ("tests", "test", "benchmarks") for part in rel.parts[:-1])
    )


def resolve(
    folder: Path,
    entry_points: tuple[str, ...],
    challenge_names: tuple[str, ...],
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> Resolution:
    """Choose a file for each entry point of a submission folder (see the module docstring for the rules).

    ``aliases`` lists accepted spellings per entry point (``layernorm_forward`` for ``layer_norm_forward``): a file that
    defines one counts as defining the entry point.
    """
    spellings = {e: {e, *(aliases or {}).get(e, ())} for e in entry_points}

    def provided(names: set[str]) -> set[str]:
        return {e for e in entry_points if spellings[e] & names}

    files = python_files(folder)
    problems: dict[str, str] = {}  # file -> why it was not read, for the report
    if len(files) >= MAX_FILES_LISTED:
        problems["."] = f"more than {MAX_FILES_LISTED} Python files: only the first {MAX_FILES_LISTED} were read"

    def read(rel: Path) -> set[str]:
        names, problem = source_names(folder / rel)
        if problem:
            problems[rel.as_posix()] = problem
        return provided(names)

    if Path(ADAPTER) in files:
        names = read(Path(ADAPTER))
        missing = tuple(e for e in entry_points if e not in names)
        return Resolution({e: ADAPTER for e in entry_points if e in names}, {}, True, missing, problems)
    defines = {rel: read(rel) for rel in files}

    def rank(rel: Path) -> tuple[int, int, int, int, str]:
        covers_all = defines[rel] == set(entry_points)
        named = rel.stem in challenge_names
        return (looks_like_test(rel), not covers_all, len(rel.parts), not named, rel.as_posix())

    chosen: dict[str, str] = {}
    others: dict[str, tuple[str, ...]] = {}
    for entry in entry_points:
        candidates = sorted((rel for rel in files if entry in defines[rel]), key=rank)
        if candidates:
            chosen[entry] = candidates[0].as_posix()
            others[entry] = tuple(c.as_posix() for c in candidates[1:])
    missing = tuple(e for e in entry_points if e not in chosen)
    return Resolution(chosen, others, False, missing, problems, no_code=not files)


CUDA_ADAPTER = "adapter.cu"
C_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def defines_c_function(path: Path, name: str) -> bool:
    """Whether a CUDA/C++ file defines ``name`` with C linkage: it says ``extern "C"`` and has a definition
    ``name(...) {`` (read as text with comments removed; a definition made by a macro is not seen)."""
    try:
        text = C_COMMENT.sub(" ", read_source(path).decode(errors="replace"))
    except Unreadable:
        return False
    definition = re.compile(rf"\b{re.escape(name)}\s*\((?:[^()]|\([^()]*\))*\)\s*(?:noexcept\s*)?\{{")
    return bool(re.search(r'\bextern\s+"C"', text)) and bool(definition.search(text))


def resolve_cuda(folder: Path, entry_points: tuple[str, ...], challenge_names: tuple[str, ...]) -> Resolution:
    """Choose the translation unit the grader compiles for a CUDA submission (the runtime
    ``plugins.isolate.runtimes.CUDA``).

    1. an ``adapter.cu`` at the folder's top wins for every entry point (it ``#include``s the submission's source and
       defines the contract's functions on top of its launcher; the build checks the library exports them);
    2. otherwise the ``.cu`` file that defines each entry point with C linkage (see :func:`defines_c_function`), ranked
       like Python files: the model's tests and benchmarks last, then the shallowest, then the one named after the
       challenge, then alphabetical order;
    3. a folder with no ``.cu`` file ("no CUDA source": ``no_code``), or none that defines an entry point, leaves it
       missing.
    """
    files = python_files(folder, ".cu")
    if Path(CUDA_ADAPTER) in files:
        return Resolution({e: CUDA_ADAPTER for e in entry_points}, {}, True, ())
    problems = {} if files else {".": "no CUDA source (.cu file)"}

    def rank(rel: Path) -> tuple[int, int, int, str]:
        return (looks_like_test(rel), len(rel.parts), rel.stem not in challenge_names, rel.as_posix())

    chosen: dict[str, str] = {}
    others: dict[str, tuple[str, ...]] = {}
    for entry in entry_points:
        candidates = sorted((rel for rel in files if defines_c_function(folder / rel, entry)), key=rank)
        if candidates:
            chosen[entry] = candidates[0].as_posix()
            others[entry] = tuple(c.as_posix() for c in candidates[1:])
    missing = tuple(e for e in entry_points if e not in chosen)
    return Resolution(chosen, others, False, missing, problems, no_code=not files)


class Resolution:
    """Where each entry point was found: ``chosen`` file per name, the ``others`` passed over, what is missing, and the
    ``problems`` of files that could not be read (file -> reason: a syntax error with its line, over the parse limit,
    not a regular file). ``no_code``: the folder holds no source file of the challenge's language at all (no ``.py``,
    or no ``.cu`` for CUDA): nothing was submitted to run, which the report shows as its own status, not as errors."""

    def __init__(
        self,
        chosen: dict[str, str],
        others: dict[str, tuple[str, ...]],
        via_adapter: bool,
        missing: tuple[str, ...],
        problems: dict[str, str] | None = None,
        no_code: bool = False,
    ):
        self.chosen, self.others, self.via_adapter, self.missing = chosen, others, via_adapter, missing
        self.problems = problems or {}
        self.no_code = no_code
