"""The ``kernelgrade`` command: ``new`` scaffolds a model's prompt folders, ``check`` reports how a submission meets the
contracts (entry points, near misses, import side effects in the sandbox, an adapter skeleton), ``grade`` runs the
grading suite. Installed by ``pip install -e .`` (``pyproject.toml``); ``python -m plugins.cli.main`` is the same."""

import os
from pathlib import Path

# The checkout the command runs from (or an editable install of it): specs, contracts and the suite are read there.
REPO = Path(__file__).resolve().parents[2]


def shown_path(path: Path) -> str:
    """A path as the command prints it: relative to the working folder, unless that climbs two levels or more (or no
    relative path exists, as across Windows drives), where the absolute path reads better."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("../..") else rel
