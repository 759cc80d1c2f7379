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
from collections.abc import Mapping
from pathlib import Path

ADAPTER = "adapter.py"
MAX_SOURCE_BYTES = 2 * 2**20
SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", "site-packages"}


def defined_names(path: Path) -> set[str]:
    """Top-level names a Python file defines (functions, classes, assignments, imports); empty if unparsable."""
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            return set()
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def python_files(folder: Path) -> list[Path]:
    """Every .py file under ``folder``, relative, skipping caches and virtual environments."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder)
        if not SKIP_DIRS.intersection(rel.parts[:-1]) and not any(p.startswith(".") for p in rel.parts):
            found.append(rel)
    return found


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
    if Path(ADAPTER) in files:
        names = provided(defined_names(folder / ADAPTER))
        missing = tuple(e for e in entry_points if e not in names)
        return Resolution({e: ADAPTER for e in entry_points if e in names}, {}, True, missing)
    defines = {rel: provided(defined_names(folder / rel)) for rel in files}

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
    return Resolution(chosen, others, False, missing)


class Resolution:
    """Where each entry point was found: ``chosen`` file per name, the ``others`` passed over, and what is missing."""

    def __init__(
        self, chosen: dict[str, str], others: dict[str, tuple[str, ...]], via_adapter: bool, missing: tuple[str, ...]
    ):
        self.chosen, self.others, self.via_adapter, self.missing = chosen, others, via_adapter, missing
