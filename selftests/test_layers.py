"""The package graph follows the data flow: no import cycle, and no arrow from a lower layer to a higher one.

The imports are read with ``ast`` (no grader or challenge code runs), every one of them: at module level, inside
functions and under ``if TYPE_CHECKING``, so a deferred import can no longer hide a cycle. ``LAYERS`` is the order,
lowest first; a module may import its own layer and the ones below it. Every module of ``plugins/`` and
``reference/`` must belong to a layer, so a new package has to be placed here on purpose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("plugins", "reference")

# Lowest first. Data flows discover -> isolate and run -> compare -> grade -> report; each stage imports the stages
# before it for their types, except that the runner (isolate) asks compare for each case's verdict, so compare, a
# library of verdict rules that runs nothing, sits under the runner; and the runtimes (what a language needs, as data)
# sit under discovery, which gives each submission its runtime. The challenge contracts (reference) and the base
# (shared records, escaping, wording, host facts, the hook specs and the plugin list) sit under every stage; the
# ternary challenge's own plugin and the command line use any stage.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("contracts", ("reference",)),
    ("base", ("plugins.base", "plugins.hookspecs")),
    ("config", ("plugins.config",)),
    ("runtimes", ("plugins.isolate.runtimes",)),
    ("discover", ("plugins.discover",)),
    ("compare", ("plugins.compare",)),
    ("isolate", ("plugins.isolate",)),
    ("grade", ("plugins.grade",)),
    ("report", ("plugins.report",)),
    ("top", ("plugins.ternary", "plugins.cli")),
)
ROOT_MODULES = {"plugins": "base"}  # the package module itself: GRADER_PLUGINS, a list of names
# Imports kept out of the cycle check, each with its reason; each must still exist (a stale entry fails).
DEFERRED = {
    ("reference.ternary_training", "reference.ternary_grading"): "the contract defers to its grader-side half only in "
    "the grader's process; the sandbox child imports the contract as its driver and must not load the grader's half",
}


def module_files(repo: Path) -> dict[str, Path]:
    """Every module of the grader's packages by dotted name (a package by its own name)."""
    found = {}
    for root in ROOTS:
        for path in sorted((repo / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The grader modules ``name`` imports anywhere in its file (``from a import b`` counts as ``a.b`` when that is a
    module, else as ``a``)."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(repo: Path) -> dict[str, set[str]]:
    files = module_files(repo)
    return {name: imports(name, path, files) for name, path in files.items()}


def layer_of(module: str) -> str | None:
    if module in ROOT_MODULES:
        return ROOT_MODULES[module]
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; a self-import is ignored."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a module to a module of a higher layer, as ``a (layer) -> b (layer)``."""
    rank = {layer: i for i, (layer, _) in enumerate(LAYERS)}
    return [
        f"{a} ({layer_of(a)}) -> {b} ({layer_of(b)})"
        for a, targets in sorted(edges.items())
        for b in sorted(targets)
        if rank[layer_of(b)] > rank[layer_of(a)]
    ]


def test_every_module_has_a_layer():
    """A new package of plugins/ or reference/ is placed in LAYERS on purpose, not by accident."""
    assert [m for m in module_files(REPO) if layer_of(m) is None] == []


def test_no_import_cycle():
    """No two grader modules import each other, directly or through others (deferred imports included)."""
    edges = graph(REPO)
    assert [pair for pair in DEFERRED if pair[1] not in edges[pair[0]]] == []
    for importer, imported in DEFERRED:
        edges[importer].discard(imported)
    assert cycles(edges) == []


def test_no_upward_import():
    """No module imports a module of a higher layer (configuration imports no report code, compare no runner...)."""
    assert upward(graph(REPO)) == []


def test_checks_catch_what_they_stand_for(tmp_path):
    """The walker sees deferred and relative imports; a cycle and an upward arrow are both reported."""
    (tmp_path / "plugins" / "config").mkdir(parents=True)
    (tmp_path / "plugins" / "report").mkdir()
    (tmp_path / "reference").mkdir()
    for package in ("plugins", "plugins/config", "plugins/report", "reference"):
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "plugins/config/options.py").write_text("def f():\n    from plugins.report import lifecycle  # late\n")
    (tmp_path / "plugins/report/lifecycle.py").write_text("from ..config import options\n")
    edges = graph(tmp_path)
    assert edges["plugins.report.lifecycle"] == {"plugins.config.options"}
    assert cycles(edges) == [["plugins.config.options", "plugins.report.lifecycle"]]
    assert upward(edges) == ["plugins.config.options (config) -> plugins.report.lifecycle (report)"]
