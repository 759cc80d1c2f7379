"""Pytest side of reporting: write the report files after the last test and print the grade matrix.

Everything here runs on the xdist controller only (or the single process), from the summary the grade plugin built, so
reports are identical with and without ``-n``. ``report.html`` is written by pytest-html when it is installed: unless
``--html`` is given, it goes to ``<reports-dir>/report.html`` as one self-contained file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tabulate import tabulate

from plugins.config import grader_config, reports_dir
from plugins.grade.plugin import SUMMARY_KEY
from plugins.report import badges, markdown, tables

WRITTEN_KEY = pytest.StashKey[list[Path]]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Point pytest-html at the reports folder (before pytest-html's own configure reads the option)."""
    if config.pluginmanager.hasplugin("html") and getattr(config.option, "htmlpath", None) is None:
        config.option.htmlpath = str(reports_dir(config) / "report.html")
        config.option.self_contained_html = True


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is None or hasattr(config, "workerinput"):
        return
    folder = grader_config(config).reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    sections = [
        s for group in config.hook.pytest_grader_report_sections(summary=summary, config=config) if group for s in group
    ]
    written = [folder / "grades.md", folder / "results.json"]
    written[0].write_text(markdown.render(summary, sections) + "\n")
    written[1].write_text(json.dumps(json_safe(summary), indent=1, allow_nan=False) + "\n")
    written += badges.write_badges(summary, folder / "badges")
    config.stash[WRITTEN_KEY] = written


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings "nan", "inf" and "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> Iterator[None]:
    """The grade matrix comes last, after pytest's own failure list (hence the outermost wrapper)."""
    yield
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is None:
        return
    terminalreporter.write_sep("=", "kernelgrade: grade matrix")
    headers, rows = tables.grade_matrix(summary)
    terminalreporter.write_line(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    partial = any(
        n.startswith("partial run")
        for m in summary["models"].values()
        for g in m["challenges"].values()
        for n in g["notes"]
    )
    if partial:
        terminalreporter.write_line("partial run: some cases were deselected; grades cover only the cases that ran")
    speed = "" if summary["options"]["measure_speed"] else "; speed not measured (--no-speed)"
    terminalreporter.write_line(f"seed {summary['options']['seed']}{speed}")
    for path in config.stash.get(WRITTEN_KEY, []):
        if path.suffix != ".svg":
            terminalreporter.write_line(f"wrote {path}")
    terminalreporter.write_line(
        f"wrote {len([p for p in config.stash.get(WRITTEN_KEY, []) if p.suffix == '.svg'])} "
        f"badges in {grader_config(config).reports_dir / 'badges'}"
    )
