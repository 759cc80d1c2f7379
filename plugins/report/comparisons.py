"""Pytest side of ``--baseline``, ``--fail-on-regression`` and ``--judge-grades``: sections of ``grades.md``, lines
after the grade matrix, and the exit status.

Both files are read and checked when the run is configured, before the run moves its reports folder aside (the baseline
may be the results.json it replaces); one that cannot be read as documented is a usage error (exit 4, one line). Once
the summary exists, they are compared with it (:mod:`plugins.report.compare_runs`, :mod:`plugins.report.judge_grades`)
through the ``pytest_grader_report_sections`` hook, and the same comparison is printed in the terminal summary.

Under ``--fail-on-regression`` the exit status says whether the run regressed against the baseline (1) or not (0),
instead of whether any submission failed a case (most rosters always have one). A run that did not finish (or that
pytest ended with a status other than 0 or 1: interrupted, internal error) keeps pytest's status.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.base import inert
from plugins.config import grader_config, reports_dir
from plugins.grade.plugin import SUMMARY_KEY
from plugins.grade.rubric import load_rubric
from plugins.report import compare_runs, judge_grades

COMPARISON_INPUTS_KEY = pytest.StashKey[dict[str, Any]]()  # "baseline", "judge": (path as given, what it holds)
TERMINAL_KEY = pytest.StashKey[list[tuple[str, list[str]]]]()
REGRESSIONS_KEY = pytest.StashKey[list[str]]()
BASELINE_TITLE = "Against the baseline"
JUDGE_TITLE = "Judge against execution"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        config.stash[COMPARISON_INPUTS_KEY] = checked_comparison_inputs(config)


def checked_comparison_inputs(config: pytest.Config) -> dict[str, Any]:
    """``--baseline`` and ``--judge-grades`` as read from their files; raises ``pytest.UsageError`` for one that cannot
    be read as documented."""
    option, inputs = config.option, {}
    wanted = option.baseline or ("last" if option.fail_on_regression else None)
    if wanted:
        try:
            found = compare_runs.baseline_input(wanted, reports_dir(config), given=bool(option.baseline))
        except compare_runs.BaselineError as exc:
            raise pytest.UsageError(inert.one_line(f"--baseline={wanted}: {exc}")) from None
        if found is not None:
            inputs["baseline"] = found
    if option.judge_grades:
        try:
            rubric = load_rubric(grader_config(config).rubric)
        except (OSError, ValueError, KeyError, TypeError):
            return inputs  # the grade plugin reports the unreadable rubric as the usage error
        try:
            rows = judge_grades.read_judge_file(Path(option.judge_grades).expanduser(), rubric)
        except judge_grades.JudgeFileError as exc:
            # the file's own text (a model name) is in the message: shown, never sent to the terminal as is
            raise pytest.UsageError(inert.one_line(f"--judge-grades={option.judge_grades}: {exc}")) from None
        inputs["judge"] = (option.judge_grades, rows)
    return inputs


def pytest_grader_report_sections(summary: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]] | None:
    inputs = config.stash.get(COMPARISON_INPUTS_KEY, {})
    sections, terminal = [], []
    if "baseline" in inputs:
        label, baseline = inputs["baseline"]
        comparison = compare_runs.compare(baseline, summary, label)
        sections.append((BASELINE_TITLE, compare_runs.markdown_section(comparison)))
        terminal.append(("kernelgrade: against the baseline", compare_runs.terminal_lines(comparison)))
        if grader_config(config).fail_on_regression:
            ladder = judge_grades.ladder(load_rubric(grader_config(config).rubric))
            found = compare_runs.regressions(comparison, ladder)
            config.stash[REGRESSIONS_KEY] = found
            lines = [f"regression: {line}" for line in found] or ["no regression against the baseline"]
            terminal.append(("kernelgrade: --fail-on-regression", lines))
    elif grader_config(config).fail_on_regression:
        config.stash[REGRESSIONS_KEY] = []
        terminal.append(("kernelgrade: --fail-on-regression", ["no earlier run in the reports folder: no baseline"]))
    if "judge" in inputs:
        label, rows = inputs["judge"]
        result = judge_grades.disagreements(summary, rows, load_rubric(grader_config(config).rubric))
        sections.append((JUDGE_TITLE, judge_grades.markdown_section(result, label)))
        terminal.append(("kernelgrade: judge against execution", judge_grades.terminal_lines(result, label)))
    config.stash[TERMINAL_KEY] = terminal
    return sections or None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``--fail-on-regression``: 1 if the run regressed against the baseline, else 0 (module docstring)."""
    config = session.config
    summary = config.stash.get(SUMMARY_KEY, None)
    found = config.stash.get(REGRESSIONS_KEY, None)
    if summary is None or found is None or session.exitstatus not in (0, 1) or summary["status"] != "complete":
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED if found else pytest.ExitCode.OK


# tryfirst wrapper registered after plugins.report.plugin (the order of plugins.GRADER_PLUGINS): the outermost one,
# so these lines come after the grade matrix, which that plugin prints in its own tryfirst wrapper. A self-test checks
# the order.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> Iterator[None]:
    yield
    if config.stash.get(SUMMARY_KEY, None) is None:
        return
    for title, lines in config.stash.get(TERMINAL_KEY, []):
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(inert.terminal(line))
