"""Hook specifications of the grader, registered through ``pytest_addhooks``.

Implement any of these in a ``conftest.py`` or a plugin to change how grades are made or reported. The defaults live in
``plugins/grade/plugin.py`` and run last, so an implementation of a ``firstresult`` hook that returns a value replaces
them. All hooks run on the xdist controller (or the only process without ``-n``), after the last test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_grader_score(model: str, challenge: str, records: list[Any], rubric: Any) -> Any | None:
    """Score one model on one challenge from its case records.

    :param model: the model's folder name.
    :param challenge: the challenge id.
    :param records: the :class:`plugins.base.records.CaseRecord` of every case run, in case-table order.
    :param rubric: the loaded :class:`plugins.grade.rubric.Rubric`.
    :returns: a :class:`plugins.grade.rubric.ChallengeGrade` whose ``letter`` may be left empty.

    Stops at first non-None result.

    Example in a ``conftest.py``, grading on core correctness alone::

        from plugins.grade.rubric import score

        def pytest_grader_score(model, challenge, records, rubric):
            return score(model, challenge, [r for r in records if r.category == "core"], rubric)
    """


@pytest.hookspec(firstresult=True)
def pytest_grader_letter(grade: Any, rubric: Any) -> str | None:
    """Turn a :class:`plugins.grade.rubric.ChallengeGrade` into a letter.

    :param grade: the scored grade; an implementation may append to ``grade.notes`` to explain itself.
    :param rubric: the loaded rubric.

    Stops at first non-None result.

    Example, pass/fail letters::

        def pytest_grader_letter(grade, rubric):
            return "P" if grade.points == 100 else "F"

    (Letters used this way need grade points in the rubric file for rankings and head-to-head tables.)
    """


@pytest.hookspec
def pytest_grader_update_summary(summary: dict[str, Any], config: pytest.Config) -> None:
    """Amend the run's summary (plain JSON values) before any report is written.

    :param summary: the dict that ``results.json`` is written from; ``summary["models"][model]["challenges"][id]``
        holds each grade, ``summary["ranking"]`` and ``summary["head_to_head"]`` the comparisons.
    :param config: the pytest config.

    Every implementation is called. Example, add a field::

        def pytest_grader_update_summary(summary, config):
            summary["run_label"] = "nightly"
    """


@pytest.hookspec
def pytest_grader_report_sections(summary: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]] | None:
    """Extra sections for ``grades.md`` and ``report.html``, appended after the built-in ones (asked once per run).

    :returns: ``(title, markdown body)`` pairs. report.html shows the same Markdown (``plugins.report.markup``:
        paragraphs, ``-`` lists, pipe tables, ``>`` quotes, bold and code; no links, images or raw HTML).

    Every implementation is called and all sections are kept. Example::

        def pytest_grader_report_sections(summary, config):
            return [("Notes", "Graded on the nightly machine.")]
    """


@pytest.hookspec(firstresult=True)
def pytest_grader_prepare_reports(folder: Path, config: pytest.Config, header: dict[str, Any]) -> str | None:
    """Make the reports folder ready for a run that starts grading, before its ``cases.jsonl`` journal opens there.

    Called once, on the controller, when collection has selected a graded case (a run that selects nothing never
    touches the folder). The report plugin (``plugins/report/plugin.py``) moves the last run's reports to its numbered
    history, sets ``header["run"]`` to this run's number and writes the "run in progress" stubs; the grade stage needs
    nothing of the report stage but this call.

    :param folder: the reports folder (it exists).
    :param config: the pytest config.
    :param header: the run's header (``results.json``'s top fields), to which the run's number is added.
    :returns: a line for the terminal saying what happened to the previous run's reports ("" when nothing); raise
        ``pytest.UsageError`` when the folder must not be used (another live run writes to it).

    Stops at first non-None result.
    """


@pytest.hookspec(firstresult=True)
def pytest_grader_last_results(config: pytest.Config) -> Path | None:
    """The ``results.json`` of the reports folder's newest finished run, whose case times order this run's work
    (``plugins/isolate/schedule.py``): the report plugin knows where runs are kept; the isolate stage asks it here.

    :param config: the pytest config.
    :returns: the file, or None when the folder holds no finished run.

    Stops at first non-None result.
    """
