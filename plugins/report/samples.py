"""The "Samples and pass@k" section: in ``grades.md`` and ``report.html`` (a report-sections hook: report.html renders
its Markdown, :mod:`plugins.report.markup`) and the terminal, after the grade matrix; built from ``summary["samples"]``
(:mod:`plugins.grade.samples`).

Registered in ``conftest.py`` after ``plugins.report.plugin``, so that its terminal lines follow the grade matrix.
Every model name goes through :mod:`plugins.base.inert` in the format it is shown in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from plugins.base import inert
from plugins.base.wording import markdown_table as table
from plugins.grade.plugin import SUMMARY_KEY
from plugins.report import tables

TITLE = "Samples and pass@k"
INTRO = (
    "Models with several samples of a challenge (`<model>/<challenge>/sample-<N>/`): each sample is graded on its own"
    " and has its own row in the grade matrix (`<model>/sample-<N>`); the ranking has one row per model, which counts"
    " the mean of its samples, never the best one, so that one lucky sample does not decide a ranking. A sample passes"
    " when none"
    " of its core or edge cases failed; c of n samples pass; pass@k = 1 − C(n−c, k) / C(n, k) (the unbiased estimator"
    " of Chen et al., 2021) is the chance that at least one of k samples drawn from the n passes. sd is the sample"
    " standard deviation of the points (n − 1)."
)
PASS_WORDS = {True: "pass", False: "fail", None: "unknown"}


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def group_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per (model, challenge) with several samples: n, c, mean, sd, min–max and pass@1..pass@n (the widest n sets the
    columns; a blank where k > n)."""
    groups = summary.get("samples") or []
    widest = max((g["n"] for g in groups), default=0)
    headers = [
        "model",
        "challenge",
        "n",
        "passed (c)",
        "mean",
        "sd",
        "min–max",
        *(f"pass@{k}" for k in range(1, widest + 1)),
    ]
    rows = []
    for g in groups:
        spread = "—" if g["min_points"] is None else f"{g['min_points']:.1f}–{g['max_points']:.1f}"
        passed = "—" if g["passed"] is None else str(g["passed"])
        at_k = [_number(g["pass_at_k"].get(f"pass@{k}"), 2) if k <= g["n"] else "" for k in range(1, widest + 1)]
        mean, sd = _number(g["mean_points"], 2), _number(g["sd_points"], 2)
        rows.append([g["model"], g["challenge"], str(g["n"]), passed, mean, sd, spread, *at_k])
    return headers, rows


def sample_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per sample: its grade (as the grade matrix shows it), pass or fail, failed core and edge cases."""
    headers = ["model", "challenge", "sample", "grade", "pass", "failed core/edge cases"]
    rows = []
    for g in summary.get("samples") or []:
        for s in g["samples"]:
            grade = tables.shown_grade(s) + ("" if s["complete"] else f" {tables.INCOMPLETE}")
            rows.append(
                [g["model"], g["challenge"], s["sample"], grade, PASS_WORDS[s["passes"]], str(s["failed_core_edge"])]
            )
    return headers, rows


def notes(summary: dict[str, Any]) -> list[str]:
    return [f"{g['model']} on {g['challenge']}: {note}" for g in summary.get("samples") or [] for note in g["notes"]]


def render(summary: dict[str, Any]) -> str:
    """The Markdown body, or an empty string when no model has several samples of a challenge."""
    if not summary.get("samples"):
        return ""
    parts = [INTRO, "", table(*group_rows(summary)), "", "Each sample:", "", table(*sample_rows(summary))]
    parts += ["", *(f"- {inert.markdown(line)}" for line in notes(summary))] if notes(summary) else []
    return "\n".join(parts)


@pytest.hookimpl
def pytest_grader_report_sections(summary: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]]:
    body = render(summary)
    return [(TITLE, body)] if body else []


# A tryfirst wrapper registered after plugins.report.plugin's (the order of plugins.GRADER_PLUGINS): outside it, so
# these lines come right after the grade matrix (and before --baseline's, registered later still).
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> Iterator[None]:
    yield
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is None or not summary.get("samples"):
        return
    terminalreporter.write_sep("-", "kernelgrade: samples and pass@k (rank models by mean or pass@k, not one sample)")
    headers, rows = group_rows(summary)
    terminalreporter.write_line(tables.terminal_table(headers, rows))
    for line in notes(summary):
        terminalreporter.write_line(inert.terminal(line))
