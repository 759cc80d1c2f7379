"""The pytest plugin entry point of an installed kernelgrade: ``[project.entry-points.pytest11] kernelgrade =
"kernelgrade_pytest"`` in ``pyproject.toml``.

pytest loads every installed ``pytest11`` entry point at the start of every run in the environment: runs of unrelated
projects, ``pytest selftests`` and the grading run itself, whose ``conftest.py`` registers the grader's plugins. So
this module is built to change nothing there:

- It is a top-level module of its own name (``pyproject.toml`` maps ``kernelgrade_pytest`` to this file), not
  ``plugins.<something>``: loading it imports nothing of the grader, so a project with its own ``plugins`` or
  ``reference`` package still imports its own, and a second checkout's grading run still loads that checkout's
  plugins. It must never be imported as ``plugins.kernelgrade_pytest`` (that would be a second module object).
- It registers no plugin, adds no option, ini key or marker, and defines one hook, which returns nothing unless the
  run is a grading run (the grader's ``plugins.config`` is registered, by ``pytest.ini``).
- In a grading run it says, in the header, when the installed ``kernelgrade`` command belongs to another checkout
  than the one grading (``kernelgrade check`` there would read other contracts than this run grades against).

``pytest -p no:kernelgrade`` leaves it out; ``pytest --trace-config`` lists it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INSTALLED_CHECKOUT = Path(__file__).resolve().parent.parent  # plugins/kernelgrade_pytest.py -> the checkout


def pytest_report_header(config: Any) -> list[str]:
    """One header line in a grading run of another checkout than the installed command's; nothing otherwise."""
    if not config.pluginmanager.has_plugin("plugins.config"):
        return []
    if Path(str(config.rootpath)).resolve() == INSTALLED_CHECKOUT:
        return []
    return [f"kernelgrade: the installed kernelgrade command runs the checkout in {INSTALLED_CHECKOUT}, not this one"]
