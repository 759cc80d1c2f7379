"""Rows for every table the reports show, built once from the summary and rendered by each writer in its format."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from plugins.base import inert, wording
from plugins.grade.rubric import NO_CODE, NOT_HERE, SKIPPED_HERE
from reference.contract import CATEGORIES

NOT_ATTEMPTED = "—"
NOT_RUN = "not run"
NO_CASES = "no cases"  # a category the challenge has no case in
NO_CODE_SYMBOL = f"∅ {NO_CODE}"  # the folder holds no source file of the challenge's language: nothing ran
INCOMPLETE = "incomplete"  # follows a letter whose selected cases did not all run


def units(summary: dict[str, Any]) -> list[str]:
    """Every graded unit (a model, or ``model/sample-N``) in ranking order: a ranking row names a model, whose units
    (its samples) follow one another; a summary written before rows had ``units`` has one unit per row."""
    return [unit for row in summary["ranking"] for unit in row.get("units", [row["model"]])]


def warnings(summary: dict[str, Any]) -> list[str]:
    """Warnings shown before any grade: the run's own, and the sandbox's when containment is weaker than intended
    (``summary["sandbox"]``, filled by ``plugins/isolate/sandbox_report.py``)."""
    sandbox = summary.get("sandbox") or {}
    prefix = "isolation: "
    if sandbox.get("level") == "process-group":
        prefix += "fallback to rlimits and process groups: "
    return [*summary.get("warnings", []), *(prefix + w for w in sandbox.get("warnings", []))]


def graded_challenges(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Challenges with a contract that at least one model in the run attempted, in report order."""
    attempted = {cid for m in summary["models"].values() for cid in m["challenges"]}
    attempted |= {entry["challenge"] for entry in summary.get("not_run", [])}
    return [c for c in summary["challenges"] if c["graded"] and c["id"] in attempted]


def _mark(text: str, complete: bool) -> str:
    return text if complete else f"{text} {INCOMPLETE}"


def grade_matrix(summary: dict[str, Any], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Models (ranked) by challenges: ``letter (points)``, marked ``incomplete`` when not every selected case ran;
    ``not run`` where the run stopped before a model's challenge; a dash where the model has no folder. ``compact``
    (the terminal): ``letter points`` with ``*`` for incomplete, challenge ids abbreviated (:func:`compact_matrix`)."""
    columns = graded_challenges(summary)
    short = short_ids([c["id"] for c in columns]) if compact else {c["id"]: c["id"] for c in columns}
    headers = ["model", "overall", *[short[c["id"]] for c in columns]]
    pending = {(e["model"], e["challenge"]) for e in summary.get("not_run", [])}
    mark = _star if compact else _mark
    rows = []
    for unit in units(summary):
        model = summary["models"][unit]
        complete = model.get("complete", True) and not any(m == unit for m, _ in pending)
        mean = model["mean_grade_points"]
        overall = (
            model["overall"]
            if mean is None
            else f"{model['overall']} {mean:.2f}"
            if compact
            else (f"{model['overall']} ({mean:.2f})")
        )
        cells = [_cut(unit) if compact else unit, mark(overall, complete)]
        for c in columns:
            grade = model["challenges"].get(c["id"])
            if grade:
                cells.append(mark(shown_grade(grade, compact), grade.get("complete", True)))
            else:
                cells.append(NOT_RUN if (unit, c["id"]) in pending else NOT_ATTEMPTED)
        rows.append(cells)
    for name in dict.fromkeys(m for m, _ in sorted(pending) if m not in summary["models"]):
        cells = [name, NOT_RUN, *(NOT_RUN if (name, c["id"]) in pending else NOT_ATTEMPTED for c in columns)]
        rows.append(cells)
    return headers, rows


TERMINAL_MODEL_CHARS = 28  # a longer model name is cut in the terminal's matrix (grades.md has it whole)
SHORT_ID_CHARS = 7


def compact_matrix(summary: dict[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """The grade matrix for the terminal (challenge ids abbreviated, names cut at 28 characters; written through
    :func:`terminal_tables`, so within 120 columns however many challenges there are), and its legend: the abbreviated
    challenge ids spelled out, and what ``*`` means."""
    headers, rows = grade_matrix(summary, compact=True)
    ids = [c["id"] for c in graded_challenges(summary)]
    short = short_ids(ids)
    spelled = [f"{short[i]} = {i}" for i in ids if short[i] != i]
    incomplete = any("*" in cell for row in rows for cell in row[1:])
    parts = spelled + ([f"* {INCOMPLETE}: not every selected case ran"] if incomplete else [])
    return headers, rows, ("legend: " + "; ".join(parts)) if parts else ""


def short_ids(ids: list[str]) -> dict[str, str]:
    """An abbreviation of each challenge id of at most about :data:`SHORT_ID_CHARS` characters: the id itself when it
    is short, else its first word's first five letters and the other words' initials (``flash_attention_bwd`` ->
    ``flashab``), a digit added where two would read the same."""
    out: dict[str, str] = {}
    for cid in ids:
        words = cid.split("_")
        short = cid if len(cid) <= SHORT_ID_CHARS else words[0][:5] + "".join(w[:1] for w in words[1:])
        base, n = short, 2
        while short in out.values():
            short, n = f"{base}{n}", n + 1
        out[cid] = short
    return out


def _cut(name: str) -> str:
    return name if len(name) <= TERMINAL_MODEL_CHARS else name[: TERMINAL_MODEL_CHARS - 1] + "…"


def _star(text: str, complete: bool) -> str:
    return text if complete else f"{text}*"


def shown_grade(grade: dict[str, Any], compact: bool = False) -> str:
    """A grade cell: ``letter (points)`` (``compact``: ``letter points``, whole points), or a status without points
    (``built``, ``skipped here``, ``∅ no code``; ``compact``: ``∅``)."""
    if grade["letter"] == NO_CODE:
        return NO_CODE_SYMBOL[0] if compact else NO_CODE_SYMBOL
    if grade["letter"] in NOT_HERE:
        return grade["letter"]
    return f"{grade['letter']} {grade['points']:.0f}" if compact else f"{grade['letter']} ({grade['points']:.1f})"


RANKING_RULE = (
    "ranked by score: grade points (A+ = 4.3 … F = 0) averaged over the run's {n} challenge{s}, a challenge not"
    " attempted counting 0 (= mean × coverage) and one only built or skipped here (no GPU, a package missing) left"
    " out; the mean is over the challenges attempted; a model graded from several samples counts each challenge at the"
    " mean of its samples, with the score's range from worst to best samples"
)


def ranking(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per model (its samples together); a model that is not ranked (nothing gradable here) shows a dash for
    its rank. A summary written before scores existed shows a dash for the score."""
    headers = ["rank", "model", "overall", "score", "mean grade points", "coverage", "samples"]
    rows = []
    for row in summary["ranking"]:
        unit_rows = [summary["models"][u] for u in row.get("units", [row["model"]])]
        complete = all(m.get("complete", True) for m in unit_rows)
        overall = row.get("overall") or unit_rows[0]["overall"]
        spread = row.get("spread")
        samples = f"{row['samples']} ({spread[0]:.2f}–{spread[1]:.2f})" if row.get("samples") and spread else ""
        rows.append(
            [
                NOT_ATTEMPTED if row["rank"] is None else row["rank"],
                row["model"],
                _mark(overall, complete),
                _points(row.get("score")),
                _points(row["mean_grade_points"]),
                coverage(row),
                samples,
            ]
        )
    return headers, rows


def ranking_rule(summary: dict[str, Any]) -> str:
    """How the ranking was made, in one sentence (shown under the ranking table)."""
    n = len(summary.get("run_challenges", [])) or len(graded_challenges(summary))
    return RANKING_RULE.format(n=n, s="" if n == 1 else "s")


def deselected_line(summary: dict[str, Any]) -> str:
    """``partial selection: -k/-m deselected every case of beam_search, kv_cache; …`` or "" for a full selection."""
    left_out = summary.get("deselected") or []
    if not left_out:
        return ""
    return (
        f"partial selection: -k/-m deselected every case of {', '.join(left_out)}; the ranking covers only the"
        f" {len(summary.get('run_challenges', []))} challenge(s) this run graded"
    )


def coverage(row: dict[str, Any]) -> str:
    """A ranking row's coverage (``7 of 8``: the run's challenges it attempted, of those it could be graded on here)
    with what else it has: folders without code, and challenges only built here (no GPU) or not run here at all
    (no GPU, a package missing), which count neither way."""
    extra = [(row.get("built_only", 0), "only built here"), (row.get("skipped_here", 0), SKIPPED_HERE)]
    return row["coverage"] + _no_code_coverage(row) + "".join(f" (+{n} {words})" for n, words in extra if n)


def _no_code_coverage(row: dict[str, Any]) -> str:
    """``(1 ∅ no code, as F)`` or ``(+1 ∅ no code, not counted)`` after the coverage, as the rubric counts it."""
    count = row.get("no_code", 0)
    if not count:
        return ""
    if row.get("no_code_counts_as") == "not attempted":
        return f" (+{count} {NO_CODE_SYMBOL}, not counted)"
    return f" ({count} {NO_CODE_SYMBOL}, as F)"


def no_code_counts_as(summary: dict[str, Any]) -> str | None:
    """How this run's rubric counted folders without code ("F" or "not attempted"); None when there were none."""
    return next((row.get("no_code_counts_as") for row in summary["ranking"] if row.get("no_code")), None)


def no_code_lines(summary: dict[str, Any], challenge: str) -> list[tuple[str, str]]:
    """(model, what its folder holds) for each model with no code for ``challenge``, in ranking order."""
    out = []
    for unit in units(summary):
        grade = summary["models"][unit]["challenges"].get(challenge)
        if grade and grade["letter"] == NO_CODE:
            out.append((unit, grade.get("no_code") or "no code submitted"))
    return out


def breakdown(summary: dict[str, Any], challenge: str) -> tuple[list[str], list[list[str]]]:
    """Per model on one challenge: letter, points, passed/run per category, speed ratio, how it was loaded, notes
    (a capped letter, a partial run)."""
    headers = ["model", "grade", "points", *CATEGORIES, "interface", "loaded", "notes"]
    # the challenge's cases per category (runs before that header field: None, every absent category "not run")
    counts = next((c.get("cases_by_category") for c in summary["challenges"] if c["id"] == challenge), None)
    rows = []
    for unit in units(summary):
        grade = summary["models"][unit]["challenges"].get(challenge)
        if grade is None:
            continue
        no_code = grade["letter"] == NO_CODE  # nothing ran: no category figures; points where the rubric counts them
        nothing_ran = grade["letter"] == SKIPPED_HERE or (no_code and no_code_counts_as(summary) == "not attempted")
        points = "—" if nothing_ran else f"{grade['points']:.1f}"  # no points where none are counted
        letter = NO_CODE_SYMBOL if no_code else grade["letter"]
        cells = [unit, _mark(letter, grade.get("complete", True)), points]
        for name in CATEGORIES:
            cat = grade["categories"].get(name)
            if no_code:
                cells.append("—")
            elif cat is None and grade.get("unscored", {}).get(name):
                cells.append(f"not scored ({grade['unscored'][name]} beyond the task)")  # ran, none of them scored
            elif cat is None and counts is not None and not counts.get(name):
                cells.append(NO_CASES)
            elif cat is None:
                cells.append(NOT_RUN)  # skipped here, deselected, or the run ended before them
            elif name == "speed" and grade["speed_ratio"] is not None:
                cells.append(wording.ratio_words(grade["speed_ratio"], "ref"))  # the slowest speed case, in words
            else:
                cells.append(f"{cat['passed']}/{cat['cases']}")
        cells += [interface(summary, unit, challenge), grade["loaded"], "; ".join(grade["notes"])]
        rows.append(cells)
    return headers, rows


def skipped_here_units(summary: dict[str, Any], challenge: str) -> list[str]:
    """The graded units none of whose cases of ``challenge`` could run on this machine (``skipped here``)."""
    return [
        u for u in units(summary) if summary["models"][u]["challenges"].get(challenge, {}).get("letter") == SKIPPED_HERE
    ]


def interface(summary: dict[str, Any], model: str, challenge: str) -> str:
    """How the submission meets the contract: ``native``, or ``adapter (N lines)`` with N the adapter's code lines
    (from the run header's submissions; graded the same either way). A dash where the folder holds no code (there is
    no interface to meet) or the header does not say."""
    if summary["models"].get(model, {}).get("challenges", {}).get(challenge, {}).get("no_code"):
        return NOT_ATTEMPTED
    for sub in summary.get("submissions", []):
        if sub["model"] == model and sub["challenge"] == challenge:
            if sub.get("runtime") != "adapter":
                return "native"
            lines = sub.get("adapter_lines")
            return "adapter" if lines is None else f"adapter ({lines} line{'' if lines == 1 else 's'})"
    return NOT_ATTEMPTED


def head_to_head(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Wins-losses-ties of the row model against the column model over challenges both attempted."""
    models = units(summary)
    table = summary["head_to_head"]
    rows = [[a, *(NOT_ATTEMPTED if a == b else "-".join(map(str, table[a][b])) for b in models)] for a in models]
    return ["W-L-T", *models], rows


# The tag shown beside a failed case: is the property the task's, or beyond it (shown, not scored)?
ORIGIN_TAGS = {"task": "task", "added": "added: not scored"}


def origin_tag(failure: dict[str, Any]) -> str:
    """The origin tag of a failed case or record: ``task``, or ``beyond the task (tie-order): not scored`` naming the
    rules the model's task profile does not state (a record written before task profiles, ``added: ...``; one written
    before origins existed is the task's)."""
    if failure.get("beyond"):
        return f"beyond the task ({', '.join(failure['beyond'])}): not scored"
    origin = failure.get("origin", "task")
    return ORIGIN_TAGS.get(origin, origin)


def task_profiles(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per model (ranking order): the task profile that graded it, where it came from, and the rules beyond that task
    its failed cases depend on (``beam_search: tie-order (2 cases)``)."""
    rows = []
    for unit in units(summary):
        model = summary["models"][unit]
        task = model.get("task") or {"name": "kernelgrade", "source": "built in"}
        beyond = [
            f"{challenge}: {rule} ({len(cases)} case{'' if len(cases) == 1 else 's'})"
            for challenge, rules in model.get("beyond_failed", {}).items()
            for rule, cases in rules.items()
        ]
        rows.append([unit, task["name"], task["source"], "; ".join(beyond) or "none"])
    return ["model", "task profile", "from", "failed cases beyond the task, by rule"], rows


def task_legend(summary: dict[str, Any]) -> str:
    """One line for the terminal: ``task profiles: kernelgrade (3 models); scaffold from repo/kernelgrade-task.toml:
    kimi``; models named when few."""
    groups: dict[str, list[str]] = {}
    for unit in units(summary):
        task = summary["models"][unit].get("task") or {"name": "kernelgrade", "source": "built in"}
        shown = task["name"] if task["source"] == "built in" else f"{task['name']} from {task['source']}"
        groups.setdefault(shown, []).append(unit)
    parts = [f"{name}: {', '.join(m)}" if len(m) <= 4 else f"{name} ({len(m)} models)" for name, m in groups.items()]
    return "task profiles: " + "; ".join(parts) if parts else ""


def failed_cases(summary: dict[str, Any], challenge: str) -> list[tuple[str, dict[str, Any]]]:
    """(model, failure) pairs for one challenge, models in ranking order."""
    out = []
    for unit in units(summary):
        grade = summary["models"][unit]["challenges"].get(challenge)
        for failure in grade["failed"] if grade else []:
            out.append((unit, failure))
    return out


def _points(mean: float | None) -> str:
    """Mean grade points, or a dash for a model none of whose challenges could be graded on this machine."""
    return "—" if mean is None else f"{mean:.2f}"


def terminal_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain table for the terminal, every cell made inert (no control characters from model names or output): the
    one table writer of the terminal summary, as ``markdown.table`` is of grades.md."""
    cells = [[inert.terminal(cell) for cell in row] for row in rows]
    return tabulate(cells, headers=[inert.terminal(h) for h in headers], tablefmt="simple", disable_numparse=True)


TERMINAL_WIDTH = 120


def terminal_tables(headers: list[str], rows: list[list[Any]], keep: int = 2, width: int = TERMINAL_WIDTH) -> list[str]:
    """:func:`terminal_table`, split by columns into as few tables as fit ``width`` characters, each repeating the
    first ``keep`` columns (the model and its overall grade): one table while every column fits, and as many as it
    takes when challenges are added, none cut off or wrapped by the terminal."""
    if len(headers) <= keep:
        return [terminal_table(headers, rows)]
    tables, start = [], keep
    while True:
        end = start + 1  # one column at least, however wide
        while end < len(headers) and _columns_width(headers, rows, [*range(keep), *range(start, end + 1)]) <= width:
            end += 1
        tables.append(_columns_table(headers, rows, [*range(keep), *range(start, end)]))
        if end >= len(headers):
            return tables
        start = end


def _columns_table(headers: list[str], rows: list[list[Any]], columns: list[int]) -> str:
    return terminal_table([headers[i] for i in columns], [[row[i] for i in columns] for row in rows])


def _columns_width(headers: list[str], rows: list[list[Any]], columns: list[int]) -> int:
    return max(map(len, _columns_table(headers, rows, columns).splitlines()))
