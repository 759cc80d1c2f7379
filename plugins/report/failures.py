"""Why a case failed, built once from the summary for every writer: grades.md lists these cases per challenge,
report.html opens them per model and challenge, the terminal prints one line each.

A failed case carries the trap it guards against, its outcome and origin tag (the task's, or beyond the task: not
scored), the grader's message (which states the worst error against its bound; cut to its first mismatch for
one-line views), and a command that runs that one case again with the run's seed (and the options that change what
it grades).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from plugins.base import inert
from plugins.grade.rubric import BUILT_ONLY, NO_CODE, NOT_HERE
from plugins.report import tables

FIRST_LINE_CHARS = 160  # one-line views (the terminal): the message's first clause, cut
VERDICT_CHARS = 200  # a model's one-line verdict in the terminal
# Options of the run that change what a reproduced case grades; the defaults are left out of the command.
REPRODUCED_OPTIONS = (("submissions_dir", "--submissions-dir"), ("task", "--task"), ("device", "--device"))


@dataclass(frozen=True)
class FailedCase:
    unit: str  # the model, or model/sample-N
    challenge: str
    case: str
    guards: str
    outcome: str
    tag: str  # tables.origin_tag: "task", or "beyond the task (rule): not scored"
    message: str
    reproduce: str  # a shell command that runs this one case again ("" when the run kept no node id)

    @property
    def first_line(self) -> str:
        """The message's first clause (the first mismatch), cut for one-line views."""
        head = self.message.strip().splitlines()[0] if self.message.strip() else ""
        head = head.split("; at ")[0]  # "...; at (0, 0) got x want y" repeats what the bound already says
        return head if len(head) <= FIRST_LINE_CHARS else head[: FIRST_LINE_CHARS - 1] + "…"

    @property
    def scored(self) -> bool:
        return not self.tag.startswith("beyond")


def failed_cases(summary: dict[str, Any], challenge: str | None = None) -> list[FailedCase]:
    """Every failed case of the run (of one ``challenge``), models in ranking order, cases in case-table order."""
    nodeids = {(c["model"], c["challenge"], c["case"]): c.get("nodeid", "") for c in summary.get("cases", [])}
    challenges = [challenge] if challenge else [c["id"] for c in tables.graded_challenges(summary)]
    out = []
    for cid in challenges:
        for unit, failure in tables.failed_cases(summary, cid):
            nodeid = nodeids.get((unit, cid, failure["case"]), "")
            out.append(
                FailedCase(
                    unit=unit,
                    challenge=cid,
                    case=failure["case"],
                    guards=failure.get("guards", ""),
                    outcome=failure["outcome"],
                    tag=tables.origin_tag(failure),
                    message=failure.get("message", ""),
                    reproduce=reproduce_command(summary, nodeid) if nodeid else "",
                )
            )
    return out


def reproduce_command(summary: dict[str, Any], nodeid: str) -> str:
    """``python -m pytest '<node id>' --seed=S`` plus the options of the run that change what the case grades (quoted
    for a POSIX shell: a model's folder name is the submission's choice)."""
    options = summary.get("options", {})
    words = ["python", "-m", "pytest", nodeid, f"--seed={options.get('seed')}"]
    defaults = {"submissions_dir": _default_submissions(options), "task": None, "device": None}  # device: always said
    for key, flag in REPRODUCED_OPTIONS:
        value = options.get(key)
        if value not in (None, "", defaults[key]):
            words.append(f"{flag}={value}")
    return shlex.join(words)


def _default_submissions(options: dict[str, Any]) -> str:
    repo = options.get("repo") or ""
    return f"{repo}/submissions" if repo else ""


def terminal_lines(cases: list[FailedCase]) -> list[str]:
    """One line per failed case for the terminal: model, challenge/case, outcome and origin, the first mismatch."""
    return [inert.one_line(f"{c.unit}  {c.challenge}/{c.case}  {c.outcome} [{c.tag}]: {c.first_line}") for c in cases]


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """One line per ranked model: its overall letter and score, and what it failed (by challenge: scored failed cases
    and the first one's mismatch), or that every case it ran passed."""
    by_unit: dict[str, list[FailedCase]] = {}
    for case in failed_cases(summary):
        if case.scored:
            by_unit.setdefault(case.unit, []).append(case)
    lines = []
    for row in summary["ranking"]:
        units = row.get("units", [row["model"]])
        failed = [c for u in units for c in by_unit.get(u, [])]
        score = "" if row.get("score") is None else f", score {row['score']:.2f}"
        overall = row.get("overall") or summary["models"][units[0]]["overall"]
        head = f"{row['model']}: {overall}{score}, {tables.coverage(row)}"
        if not failed:
            lines.append(inert.one_line(f"{head}; {_nothing_failed(summary, units)}"))
            continue
        counts: dict[str, int] = {}
        for case in failed:
            counts[case.challenge] = counts.get(case.challenge, 0) + 1
        where = ", ".join(f"{challenge} {n}" for challenge, n in counts.items())
        first = failed[0]
        text = f"{head}; failed {where}; first: {first.challenge}/{first.case}: {first.first_line}"
        lines.append(inert.one_line(text if len(text) <= VERDICT_CHARS else text[: VERDICT_CHARS - 1] + "…"))
    return lines


def _nothing_failed(summary: dict[str, Any], units: list[str]) -> str:
    """Why a model with no failed scored case has no failure: its folders hold no code, its CUDA sources were only
    built (no GPU here), or every scored case it ran passed."""
    letters = {g["letter"] for u in units for g in summary["models"][u]["challenges"].values()}
    if letters == {NO_CODE}:
        return "no code in its folders: nothing ran"
    if letters == {BUILT_ONLY}:
        return "only built here (no GPU): no case ran, not graded"
    if letters <= set(NOT_HERE):
        return "skipped here (no GPU or a package missing; its grades' notes say which): not graded"
    return "every scored case it ran passed"
