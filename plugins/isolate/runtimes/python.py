"""The Python runtime: import a submission's entry points from its (copied) folder, in the sandbox child.

Loaded by ``child.py`` by path, so it imports only the standard library; it runs after the limits are set and the
grader's own modules are dropped from ``sys.modules``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any


def load(config: dict[str, Any], driver: Any) -> dict[str, Any]:
    """``{entry point: function}`` from the files discovery chose (``config["entries"]``: name -> relative path)."""
    del driver  # the Python runtime needs nothing from the contract beyond the file map
    workdir = Path(config["workdir"])
    sys.path.insert(0, str(workdir))
    modules: dict[str, Any] = {}
    entries = {}
    for name, relpath in config["entries"].items():
        if relpath not in modules:
            modules[relpath] = _import_file(workdir, relpath)
        entries[name] = getattr(modules[relpath], _attribute(config, name, modules[relpath]))
    return entries


def _attribute(config: dict[str, Any], name: str, module: Any) -> str:
    """The name the module defines for an entry point: the contract's own, else an accepted alias (``aliases``)."""
    for candidate in (name, *config.get("aliases", {}).get(name, ())):
        if hasattr(module, candidate):
            return candidate
    return name  # getattr then raises the AttributeError a report should show


def _import_file(workdir: Path, relpath: str) -> Any:
    """Import a submission file by its dotted path when its folders are packages, else by its plain module name."""
    path = workdir / relpath
    parts = list(Path(relpath).with_suffix("").parts)
    package_depth = 0
    for depth in range(len(parts) - 1, 0, -1):
        if (workdir.joinpath(*parts[:depth]) / "__init__.py").exists():
            package_depth = depth
        else:
            break
    root = workdir.joinpath(*parts[: len(parts) - 1 - package_depth]) if package_depth else path.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    dotted = ".".join(parts[len(parts) - 1 - package_depth :])
    return importlib.import_module(dotted)
