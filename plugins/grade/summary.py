"""The run's summary (what ``results.json`` holds) from a run header, case records and what was selected.

Pure: nothing here touches pytest, so the same code builds the summary at the end of a run (through the overridable
scoring hooks) and after a killed run, offline, from ``cases.jsonl`` (``python -m plugins.report.recover``).

A run says how far it got, in its own words:

- ``status``: ``complete`` (every selected case ran or was skipped: by choice, or for the machine's reason),
  ``interrupted`` (Ctrl-C, SIGTERM, or xdist giving up, before every selected case ran), ``incomplete`` (stopped early
  otherwise, or recovered after the grading process died), ``empty`` (no graded case selected);
- per model and challenge, ``complete`` and notes: ``partial run: 1 of 16 cases`` when cases were deselected (``-k``,
  ``-m``), ``speed not measured (--no-speed)``, and ``interrupted: 10 of 15 selected cases ran; not run: memory``;
- ``not_run``: selected submissions that never got a case (the run stopped before them), so none drops out unseen.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugins.base import records as r
from plugins.discover.submissions import problem_line
from plugins.grade import rubric as rubric_module
from plugins.grade import samples as samples_module
from reference import tasks
from reference.challenges import reference_module

COMPLETE, INTERRUPTED, INCOMPLETE, EMPTY = "complete", "interrupted", "incomplete", "empty"
Key = tuple[str, str, int]  # (model, challenge, case index)


@dataclass
class Selection:
    """Which cases the run selected (after ``-k``/``-m``), and which it skipped by choice (``--no-speed``).
    ``known`` is False when the run died before collection finished."""

    selected: set[Key] = field(default_factory=set)
    skipped: set[Key] = field(default_factory=set)
    known: bool = False


def summarise(
    header: dict[str, Any],
    records: list[r.CaseRecord],
    selection: Selection,
    status: str,
    detail: str,
    rubric: rubric_module.Rubric,
    score: Callable[..., Any] | None = None,
    letter: Callable[..., str] | None = None,
) -> dict[str, Any]:
    """Grades, ranking and head-to-head from ``records``, with the header's provenance and the run's status."""
    measure_speed = bool(header["options"].get("measure_speed", True))
    selection = effective(selection, measure_speed)
    score = score or (lambda **kw: rubric_module.score(kw["model"], kw["challenge"], kw["records"], kw["rubric"]))
    letter = letter or (lambda **kw: rubric_module.letter_for(kw["grade"], kw["rubric"]))
    order = [c["id"] for c in header["challenges"]]
    records = sorted(records, key=lambda rec: (rec.model, order.index(rec.challenge), rec.case_index))
    models: dict[str, dict[str, Any]] = {}
    letters: dict[str, dict[str, str]] = {}
    for model in dict.fromkeys(rec.model for rec in records):
        models[model], letters[model] = {"challenges": {}}, {}
        for challenge in order:
            mine = [rec for rec in records if rec.model == model and rec.challenge == challenge]
            if not mine:
                continue
            grade = score(model=model, challenge=challenge, records=mine, rubric=rubric)
            grade.letter = grade.letter or letter(grade=grade, rubric=rubric)
            if build_only(challenge, mine) and not grade.failed:
                grade.letter = rubric_module.BUILT_ONLY
                grade.notes.append("build only: no GPU here, so no kernel ran; graded where a GPU is present")
            if no_code(mine):
                mark_no_code(grade, mine, rubric)
            if all(rec.outcome == r.SKIPPED for rec in mine):
                grade.letter = rubric_module.SKIPPED_HERE
                reasons = collections.Counter(rec.message for rec in mine).most_common()  # the run cases' first
                grade.notes += [f"skipped here: {reason}" for reason, _ in reasons]
            contract = _entry(header, model, challenge).get("contract", "")
            notes, complete = coverage(model, challenge, mine, selection, status, measure_speed, contract)
            unread = [] if grade.letter == rubric_module.NO_CODE else unread_notes(header, model, challenge)
            grade.notes += unread + notes
            models[model]["challenges"][challenge] = grade.to_dict() | {"complete": complete}
            letters[model][challenge] = grade.letter
    for model in models:
        models[model]["task"] = task_of(header, model)
        models[model]["beyond_failed"] = beyond_failed(models[model]["challenges"])
    graded = rubric_module.run_challenges(letters, order, rubric)
    ranking = rubric_module.ranking(letters, rubric, graded)
    for row in ranking:
        row["overall"] = rubric_module.overall_letter(row["mean_grade_points"], rubric)
        for unit in row["units"]:  # a sample's own mean and letter (the matrix's cells); its model's rank
            mean = rubric_module.unit_mean(letters[unit], rubric)
            models[unit].update(
                mean_grade_points=mean,
                coverage=row["coverage"],
                rank=row["rank"],
                overall=rubric_module.overall_letter(mean, rubric),
                complete=all(g["complete"] for g in models[unit]["challenges"].values()),
            )
    return header | {
        "status": status,
        "status_detail": detail,
        "selection": selection_counts(records, selection),
        "cases": [rec.to_dict() for rec in records],
        "models": models,
        "not_run": not_run(records, selection),
        "ranking": ranking,
        "run_challenges": graded,  # the challenges ranked on
        "deselected": deselected(header, records, selection),
        "head_to_head": rubric_module.head_to_head(letters, rubric),
        # per (model, challenge) graded from several samples: each sample's grade, mean, spread, pass@k
        "samples": samples_module.sample_groups(records, models, order, rubric),
    }


def deselected(header: dict[str, Any], records: list[r.CaseRecord], selection: Selection) -> list[str]:
    """Challenges that a selected submission has a folder for but of which no case was selected (``-k``, ``-m``): the
    run is partial, and its reports say so in their header. Empty when the selection is not known."""
    if not selection.known:
        return []
    chosen = {(k[0], k[1]) for k in selection.selected} | {(rec.model, rec.challenge) for rec in records}
    folders = {(s["model"], s["challenge"]) for s in header.get("submissions", [])}
    order = [c["id"] for c in header["challenges"] if c.get("graded", True)]
    left_out = {c for m, c in folders - chosen}
    return [c for c in order if c in left_out and not any(c == k[1] for k in chosen)]


def task_of(header: dict[str, Any], model: str) -> dict[str, str]:
    """The task profile that graded a model (``name``, ``source``: "built in" or its file), from the run header; a
    run written before task profiles existed was graded by our own prompts' rules."""
    entry = next((s for s in header.get("submissions", []) if s["model"] == model and s.get("task")), None)
    if entry is None:
        return {"name": tasks.DEFAULT, "source": tasks.BUILT_IN_SOURCE}
    return {"name": entry["task"], "source": entry.get("task_source", "")}


def beyond_failed(challenges: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """``{challenge: {rule: [failed case ids]}}``: the rules beyond the task that a model's failed cases depend on."""
    out: dict[str, dict[str, list[str]]] = {}
    for challenge, grade in challenges.items():
        for failure in grade["failed"]:
            for rule in failure.get("beyond", []):
                out.setdefault(challenge, {}).setdefault(rule, []).append(failure["case"])
    return out


def unread_notes(header: dict[str, Any], model: str, challenge: str) -> list[str]:
    """One note per file of the folder that could not be read (a syntax error, a FIFO, over the parse limit), said
    once here rather than in every case's message (those say ``not provided: <entry point>``)."""
    entry = _entry(header, model, challenge)
    return [f"not read: {problem_line(file, why)}" for file, why in entry.get("problems", [])]


def _entry(header: dict[str, Any], model: str, challenge: str) -> dict[str, Any]:
    """The run header's entry of one submission (empty for a run written before it had one)."""
    return next((s for s in header.get("submissions", []) if (s["model"], s["challenge"]) == (model, challenge)), {})


def build_only(challenge: str, records: list[r.CaseRecord]) -> bool:
    """Every scored case is a build check (``params["build"]``): the run cases were skipped (no GPU here)."""
    cases = reference_module(challenge).CASES
    scored = [rec for rec in records if rec.outcome != r.SKIPPED]
    return bool(scored) and all(cases[rec.case_index].params.get("build") for rec in scored)


def no_code(records: list[r.CaseRecord]) -> bool:
    """Every scored case is ``no_code``: the folder holds no source file of the challenge's language."""
    scored = [rec for rec in records if rec.outcome != r.SKIPPED]
    return bool(scored) and all(rec.outcome == r.NO_CODE for rec in scored)


def mark_no_code(grade: Any, records: list[r.CaseRecord], rubric: rubric_module.Rubric) -> None:
    """The status NO_CODE in place of a letter, with one line saying what the folder holds: no failure list (the
    records keep the outcome of every case, so counts stay right), and how the rubric counts it."""
    grade.letter = rubric_module.NO_CODE
    grade.no_code = next(rec.message for rec in records if rec.outcome == r.NO_CODE)
    grade.failed = []
    if rubric.no_code == "zero":
        grade.notes.append("no code: 0 points, an F in the ranking and head-to-head (the task was given)")
    else:
        grade.notes.append("no code: counted as not attempted (not ranked, not compared, not in coverage)")


def effective(selection: Selection, measure_speed: bool) -> Selection:
    """Under ``--no-speed`` every selected speed case counts as skipped by choice, reached or not."""
    if measure_speed:
        return selection
    speed = {k for k in selection.selected if reference_module(k[1]).CASES[k[2]].is_speed}
    return Selection(selection.selected, selection.skipped | speed, selection.known)


def coverage(
    model: str,
    challenge: str,
    mine: list[r.CaseRecord],
    selection: Selection,
    status: str,
    measure_speed: bool,
    contract: str = "",
) -> tuple[list[str], bool]:
    """Notes on how much of the challenge's case table ran, and whether every selected case did. Only the cases of
    the submission's contract variant (``contract``, the default one when empty) count: the others are never
    collected for it."""
    module = reference_module(challenge)
    contract = contract or module.CHALLENGE.default_contract
    cases = {i: c for i, c in enumerate(module.CASES) if not c.contract or c.contract == contract}
    ran = {rec.case_index for rec in mine if rec.outcome != r.SKIPPED}
    skipped = {k[2] for k in selection.skipped if k[:2] == (model, challenge)}
    skipped |= {rec.case_index for rec in mine if rec.outcome == r.SKIPPED}
    if selection.known:
        selected = {k[2] for k in selection.selected if k[:2] == (model, challenge)} | ran
    else:  # the run died before it knew: assume the whole table (less speed under --no-speed) was meant to run
        selected = {i for i, c in cases.items() if measure_speed or not c.is_speed}
        skipped |= {i for i, c in cases.items() if c.is_speed and not measure_speed}
    notes = []
    if len(selected | skipped) < len(cases):
        notes.append(f"partial run: {len(ran)} of {len(cases)} cases")
    if not measure_speed and any(c.is_speed for c in cases.values()):
        notes.append("speed not measured (--no-speed)")
    missing = selected - ran - skipped
    if missing:
        word = INTERRUPTED if status == INTERRUPTED else INCOMPLETE
        categories = sorted({cases[i].category for i in missing})
        notes.append(
            f"{word}: {len(ran)} of {len(selected - skipped)} selected cases ran; not run: {', '.join(categories)}"
        )
    return notes, not missing


def not_run(records: list[r.CaseRecord], selection: Selection) -> list[dict[str, Any]]:
    """Selected (model, challenge) pairs with no case record at all: the run stopped before them."""
    seen = {(rec.model, rec.challenge) for rec in records}
    pending: dict[tuple[str, str], int] = {}
    for model, challenge, _ in selection.selected - selection.skipped:
        if (model, challenge) not in seen:
            pending[model, challenge] = pending.get((model, challenge), 0) + 1
    return [{"model": m, "challenge": c, "selected_cases": n} for (m, c), n in sorted(pending.items())]


def selection_counts(records: list[r.CaseRecord], selection: Selection) -> dict[str, Any]:
    ran = {(rec.model, rec.challenge, rec.case_index) for rec in records if rec.outcome != r.SKIPPED}
    # Skipped by the user's choice (--no-speed: no record) or for the machine's reason (no GPU: a SKIPPED record).
    skipped = selection.skipped | {
        (rec.model, rec.challenge, rec.case_index) for rec in records if rec.outcome == r.SKIPPED
    }
    return {
        "known": selection.known,
        "selected": len(selection.selected | ran),
        "ran": len(ran),
        "skipped": len(skipped),  # by choice or for the machine's reason
        "not_run": len(selection.selected - ran - skipped),
    }


def cases_ran(counts: dict[str, Any]) -> str:
    """How far a run got, in one wording for a run's status live, merged or recovered: "N of M selected cases ran"
    from :func:`selection_counts` (M leaves out the skipped cases, by choice or for the machine), or "N of an unknown
    number of cases ran" when the run died before collection finished."""
    if not counts["known"]:
        return f"{counts['ran']} of an unknown number of cases ran"
    return f"{counts['ran']} of {counts['selected'] - counts['skipped']} selected cases ran"


def run_status(
    selection: Selection, records: list[r.CaseRecord], interrupted: bool, reason: str, measure_speed: bool
) -> tuple[str, str]:
    """(status, a sentence saying it) for a run that ended; ``reason`` names why it stopped when it stopped early."""
    counts = selection_counts(records, effective(selection, measure_speed))
    if not records and not counts["not_run"] and not interrupted:
        return EMPTY, "no graded case was selected"
    ran = cases_ran(counts)
    if counts["not_run"] or (interrupted and not selection.known):
        status = INTERRUPTED if interrupted else INCOMPLETE
        return status, f"{ran} (stopped: {reason}); grades cover only those and are marked incomplete"
    return COMPLETE, f"complete: {ran}"
