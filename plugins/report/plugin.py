"""Pytest side of reporting: write the report files after the last test and print the grade matrix.

Everything here runs on the xdist controller only (or the single process), from the summary the grade plugin built, so
reports are identical with and without ``-n``. ``report.html`` is written by pytest-html when it is installed: unless
``--html`` is given, it goes to ``<reports-dir>/report.html`` as one self-contained file.

The reports folder's life cycle (the last run's reports moved to ``history/NNNN/``, "run in progress" stubs, recovery
after a kill) is in :mod:`plugins.report.lifecycle` and :mod:`plugins.report.recover`, driven from here: the grade stage
asks for the folder through ``pytest_grader_prepare_reports`` once collection selected a graded case, before it opens
its ``cases.jsonl`` journal (:mod:`plugins.grade.journal`), and a run that stops before its session starts is caught by
:class:`plugins.report.lifecycle.StartGuard`, registered here before discovery configures. Every string from a
submission goes through :mod:`plugins.base.inert` before it is shown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.base import inert
from plugins.config import grader_config, reports_dir
from plugins.grade import journal
from plugins.grade.plugin import SUMMARY_KEY
from plugins.report import failures, files, lifecycle, tables
from plugins.report.sections import report_sections

WRITTEN_KEY = pytest.StashKey[list[Path]]()
WARNINGS_KEY = pytest.StashKey[list[str]]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Point pytest-html at the reports folder (before pytest-html's own configure reads the option); not for
    ``--collect-only``, which grades nothing and must not replace the last run's report. On the controller, from here on
    (tryfirst: before discovery configures), a run that fails before it starts grading leaves no earlier reports
    looking current (:class:`lifecycle.StartGuard`)."""
    if config.option.collectonly:
        return
    if not hasattr(config, "workerinput") and not config.option.help:
        config.pluginmanager.register(lifecycle.StartGuard(config), "kernelgrade-start-guard")
    if config.pluginmanager.hasplugin("html") and getattr(config.option, "htmlpath", None) is None:
        config.option.htmlpath = str(reports_dir(config) / "report.html")
        config.option.self_contained_html = True
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(KeepHtml(config), "kernelgrade-keep-html")


class KeepHtml:
    """pytest-html writes its page at session end whatever happened: in a run that graded nothing (no graded case
    selected), the page it wrote over the last real run's ``report.html`` is undone, so that run's reports stay whole
    (:mod:`plugins.report.lifecycle`)."""

    def __init__(self, config: pytest.Config):
        self.config = config

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Iterator[None]:
        held = self._hold() if not _graded(self.config) else None
        try:
            return (yield)
        finally:
            if held is not None:
                page, copy = held
                if copy.exists():
                    copy.replace(page)
                else:
                    page.unlink(missing_ok=True)

    def _hold(self) -> tuple[Path, Path] | None:
        """Move the folder's report.html aside, when pytest-html writes there; (its path, where it went)."""
        page = reports_dir(self.config) / "report.html"
        if str(getattr(self.config.option, "htmlpath", "") or "") != str(page):
            return None
        copy = page.with_name(f".report.html.{os.getpid()}.kept")
        if page.exists():
            page.replace(copy)
        return page, copy


def _graded(config: pytest.Config) -> bool:
    """Whether this run began grading (and so owns the reports folder)."""
    collector = config.pluginmanager.get_plugin("kernelgrade-records")
    return collector is not None and collector.journal is not None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """A reports folder that another live run writes to is a usage error, said before anything runs."""
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    try:
        lifecycle.check_free(grader_config(config).reports_dir)
    except lifecycle.FolderBusy as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_grader_last_results(config: pytest.Config) -> Path | None:
    """The newest finished run's ``results.json`` (:func:`plugins.report.lifecycle.run_results`)."""
    return lifecycle.run_results(grader_config(config).reports_dir, "last")


def pytest_grader_prepare_reports(folder: Path, config: pytest.Config, header: dict[str, Any]) -> str:
    """Move the last run's reports to the numbered history, give this run its number and stamp "run in progress"
    (:mod:`plugins.report.lifecycle`)."""
    try:
        retired = lifecycle.retire(folder, grader_config(config).keep_runs)
    except lifecycle.FolderBusy as exc:  # a run that took the folder since this session started
        raise pytest.UsageError(str(exc)) from None
    header["run"] = lifecycle.next_run_number(folder)
    lifecycle.stamp_running(folder, html=_html_in(config, folder), number=header["run"])
    return retired


def _html_in(config: pytest.Config, folder: Path) -> bool:
    """Whether pytest-html will write ``report.html`` into the reports folder (then a stub may stand in for it)."""
    path = getattr(config.option, "htmlpath", None)
    return (
        bool(path) and config.pluginmanager.hasplugin("html") and os.path.abspath(path) == str(folder / "report.html")
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is None or hasattr(config, "workerinput"):
        return
    folder = grader_config(config).reports_dir
    written, warnings = files.write_reports(summary, folder, report_sections(config, summary))
    config.stash[WRITTEN_KEY] = written
    config.stash[WARNINGS_KEY] = warnings
    collector = config.pluginmanager.get_plugin("kernelgrade-records")
    if collector is not None:
        collector.end(summary["status"])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """What a submission printed travels in report sections; no control character of it reaches a terminal."""
    report = yield
    report.sections = [(inert.terminal(title), inert.terminal(text)) for title, text in report.sections]
    return report


json_safe = journal.json_safe  # kept here for code that imported it from this module


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> Iterator[None]:
    """The grader's summary comes last (hence the outermost wrapper): one line per failed case in the grader's words,
    then the grade matrix; pytest's long failure reports and its short list of failures are left out of a grading run
    unless ``-v`` or an explicit ``--tb`` asks for them, or a test errored (an error is the grader's own problem: its
    traceback is kept)."""
    if _graded(config) and config.option.verbose <= 0 and not terminalreporter.stats.get("error"):
        if config.option.tbstyle == "auto":
            config.option.tbstyle = "no"
        terminalreporter.reportchars = terminalreporter.reportchars.replace("f", "")
    yield
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is None:
        if not config.option.collectonly and config.pluginmanager.get_plugin("kernelgrade-records") is not None:
            folder = grader_config(config).reports_dir
            terminalreporter.write_sep("=", "kernelgrade: no graded case selected")
            terminalreporter.write_line(f"nothing graded; the reports in {folder} were left as they were")
        return
    if "f" not in terminalreporter.reportchars and (failed := failures.failed_cases(summary)):
        terminalreporter.write_sep("=", f"kernelgrade: {len(failed)} failed cases (-v shows pytest's full reports)")
        for line in failures.terminal_lines(failed):
            terminalreporter.write_line(line)
    terminalreporter.write_sep("=", "kernelgrade: grade matrix")
    headers, rows, legend = tables.compact_matrix(summary)
    terminalreporter.write_line("\n\n".join(tables.terminal_tables(headers, rows)))
    if legend:
        terminalreporter.write_line(inert.terminal(legend))
    for line in failures.verdict_lines(summary):
        terminalreporter.write_line(line)
    for line in terminal_notes(summary, config):
        terminalreporter.write_line(line)
    badges = [p for p in config.stash.get(WRITTEN_KEY, []) if p.suffix == ".svg" and p.parent.name == "badges"]
    for path in config.stash.get(WRITTEN_KEY, []):
        if path not in badges:
            terminalreporter.write_line(f"wrote {path}")
    terminalreporter.write_line(f"wrote {len(badges)} badges in {grader_config(config).reports_dir / 'badges'}")


def terminal_notes(summary: dict[str, Any], config: pytest.Config) -> list[str]:
    """The run's status, deselection, speed and seed, each in its own words; warnings; where the old reports went."""
    lines = []
    if summary["status"] != "complete":
        lines.append(f"{summary['status'].upper()}: {inert.terminal(summary['status_detail'])}")
    notes = {n for m in summary["models"].values() for g in m["challenges"].values() for n in g["notes"]}
    if deselected := tables.deselected_line(summary):
        lines.append(inert.terminal(deselected))
    if any(n.startswith("partial run") for n in notes):
        lines.append("partial run: some cases were deselected (-k/-m); grades cover only the cases that ran")
    lines.append(inert.terminal(tables.ranking_rule(summary)))
    if legend := tables.task_legend(summary):
        lines.append(inert.terminal(legend))
    speed = "" if summary["options"]["measure_speed"] else "; speed not measured (--no-speed)"
    lines.append(f"seed {summary['options']['seed']}{speed}")
    lines += [f"warning: {inert.terminal(w)}" for w in [*tables.warnings(summary), *config.stash.get(WARNINGS_KEY, [])]]
    collector = config.pluginmanager.get_plugin("kernelgrade-records")
    if collector is not None and collector.retired:
        lines.append(collector.retired)
    return lines
