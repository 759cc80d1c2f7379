"""An external judge's grades against the execution grades (``--judge-grades=FILE``).

The file is CSV with a header row naming at least the columns ``model``, ``challenge`` and ``grade`` (others, such as a
comment, are ignored)::

    model,challenge,grade
    demo-tiled,flash_attention,A
    demo-online-softmax,flash_attention,91

``grade`` is a letter of the rubric (``A+`` … ``D``, ``F``) or a score from 0 to 100, which becomes the best letter
whose threshold it reaches (``rubric.toml``'s ``[letters]``; no core gate, the judge has no cases). A judge and the
execution grade disagree when their letters lie more than ``MAX_AGREEING_STEPS`` apart on the rubric's ladder
(A+, A, A-, B+, …, D, F): A against A+ or A- agrees, A against B+ does not. Each disagreement comes with the cases
that explain it: the failed cases when the judge rated higher, the passed hard cases (edge, precision) when it rated
lower.

Rows naming a model or challenge this run did not grade are listed, not fatal (a judge may have seen more). A file that
cannot be read this way (no such header, a bad grade, a row of the wrong length, one pair graded twice) is a usage
error. Pure: nothing here touches pytest.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from plugins.grade.rubric import Rubric
from plugins.report.markdown import escape, table

COLUMNS = ("model", "challenge", "grade")
MAX_AGREEING_STEPS = 1  # one step apart agrees (A and A-): a judge's plus or minus is within its own noise
HARD_CATEGORIES = ("edge", "precision")  # a passed case of these explains a grade the judge rated too low
MAX_CASES_SHOWN = 6  # per disagreement; results.json has every case


class JudgeFileError(ValueError):
    """The judge file cannot be read as documented (a usage error)."""


def ladder(rubric: Rubric) -> list[str]:
    """The rubric's letters, best first, ending in F."""
    letters = [name for name, _ in rubric.letters]
    return letters if "F" in letters else [*letters, "F"]


def letter_of_score(score: float, rubric: Rubric) -> str:
    return next((name for name, minimum in rubric.letters if score >= minimum), "F")


def read_judge_file(path: Path, rubric: Rubric) -> list[dict[str, Any]]:
    """Rows ``{model, challenge, given, letter, line}``; :class:`JudgeFileError` naming the line that breaks the
    format."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is no error
    except FileNotFoundError:
        raise JudgeFileError("no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgeFileError(f"not readable as UTF-8 text ({exc.__class__.__name__})") from None
    return parse(text, rubric)


def parse(text: str, rubric: Rubric) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text), strict=True)
    try:  # (line number in the file, fields); blank lines are no rows
        lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise JudgeFileError(f"not CSV ({exc})") from None
    if not lines:
        raise JudgeFileError("empty: expected a header model,challenge,grade")
    header = [cell.strip().lower() for cell in lines[0][1]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise JudgeFileError(f"the header lacks {', '.join(missing)} (expected model,challenge,grade)")
    where = {c: header.index(c) for c in COLUMNS}
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for number, raw in lines[1:]:
        if len(raw) != len(header):
            raise JudgeFileError(f"line {number}: {len(raw)} fields, the header has {len(header)}")
        model, challenge, given = (raw[where[c]].strip() for c in COLUMNS)
        if not model or not challenge:
            raise JudgeFileError(f"line {number}: empty model or challenge")
        letter = to_letter(given, rubric)
        if letter is None:
            raise JudgeFileError(f"line {number}: grade {given!r} is neither a rubric letter nor a score in 0–100")
        if (model, challenge) in seen and seen[model, challenge] != letter:
            raise JudgeFileError(f"line {number}: {model} on {challenge} graded twice, differently")
        seen[model, challenge] = letter
        rows.append({"model": model, "challenge": challenge, "given": given, "letter": letter, "line": number})
    if not rows:
        raise JudgeFileError("no grades under the header")
    return rows


def to_letter(given: str, rubric: Rubric) -> str | None:
    """A rubric letter as written (case as in the rubric), or a 0–100 score mapped by the thresholds; None otherwise."""
    by_upper = {name.upper(): name for name in ladder(rubric)}
    if given.upper() in by_upper:
        return by_upper[given.upper()]
    try:
        score = float(given)
    except ValueError:
        return None
    return letter_of_score(score, rubric) if 0 <= score <= 100 else None


def disagreements(summary: dict[str, Any], rows: list[dict[str, Any]], rubric: Rubric) -> dict[str, Any]:
    """Pairs where judge and execution disagree by more than one step, with explaining cases; rows not comparable."""
    steps = {name: i for i, name in enumerate(ladder(rubric))}
    challenges = {c["id"] for c in summary.get("challenges", [])}
    found, unknown, compared = [], [], 0
    for row in rows:
        grade = summary["models"].get(row["model"], {}).get("challenges", {}).get(row["challenge"])
        why = _not_comparable(row, summary, challenges, grade, steps)
        if why:
            unknown.append(row | {"why": why})
            continue
        compared += 1
        gap = steps[grade["letter"]] - steps[row["letter"]]  # > 0: the judge rated higher (a better letter)
        if abs(gap) > MAX_AGREEING_STEPS:
            found.append(row | {"execution": grade["letter"], "points": grade["points"], "gap": gap}
                         | {"cases": explaining_cases(summary, row["model"], row["challenge"], gap > 0)})  # fmt: skip
    return {"disagreements": found, "not_compared": unknown, "compared": compared}


def _not_comparable(
    row: dict[str, Any], summary: dict[str, Any], challenges: set[str], grade: Any, steps: dict[str, int]
) -> str:
    if row["challenge"] not in challenges:
        return "unknown challenge"
    if row["model"] not in summary["models"]:
        return "model not graded in this run"
    if grade is None:
        return "challenge not graded for this model in this run"
    if grade["letter"] not in steps:
        return f"execution grade {grade['letter']!r} is not a letter"  # e.g. 'built': compiled, never ran
    return ""


def explaining_cases(summary: dict[str, Any], model: str, challenge: str, judge_higher: bool) -> list[dict[str, Any]]:
    """The failed cases (judge higher) or the passed edge and precision cases (judge lower) of one grade."""
    mine = [c for c in summary["cases"] if c["model"] == model and c["challenge"] == challenge]
    if judge_higher:
        chosen = [c for c in mine if c["outcome"] not in ("passed", "skipped")]
    else:
        chosen = [c for c in mine if c["outcome"] == "passed" and c.get("category") in HARD_CATEGORIES]
    keys = ("case", "category", "outcome", "guards", "origin")
    return [{k: c.get(k, "") for k in keys} for c in chosen]


def describe_cases(entry: dict[str, Any]) -> str:
    cases = entry["cases"]
    if not cases:
        return "no failed case ran" if entry["gap"] > 0 else "no edge or precision case passed"
    word = "failed" if entry["gap"] > 0 else "passed"
    shown = [f"{c['case']} ({_how(c, entry['gap'] > 0)}: {c['guards']})" for c in cases[:MAX_CASES_SHOWN]]
    more = f"; and {len(cases) - MAX_CASES_SHOWN} more" if len(cases) > MAX_CASES_SHOWN else ""
    return f"{len(cases)} {word}: " + "; ".join(shown) + more


def _how(case: dict[str, Any], failed: bool) -> str:
    """Category, and for a failed case its outcome and whether it is beyond the model's task (origin ``added``)."""
    parts = [case["category"], case["outcome"] if failed else ""]
    parts.append("beyond the task" if failed and case.get("origin") == "added" else "")
    return ", ".join(p for p in parts if p)


def _judge_cell(entry: dict[str, Any]) -> str:
    return entry["given"] if entry["given"] == entry["letter"] else f"{entry['given']} → {entry['letter']}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for d in result["disagreements"]:
        side = f"judge {abs(d['gap'])} steps {'higher' if d['gap'] > 0 else 'lower'}"
        rows.append([d["model"], d["challenge"], _judge_cell(d), f"{d['execution']} ({d['points']:.1f})", side,
                     describe_cases(d)])  # fmt: skip
    return ["model", "challenge", "judge", "execution", "gap", "explained by"], rows


def markdown_section(result: dict[str, Any], label: str) -> str:
    """The ``Judge against execution`` section of grades.md."""
    intro = (
        f"Judge grades from `{escape(label)}`: {result['compared']} compared, {len(result['disagreements'])} "
        f"disagree by more than {MAX_AGREEING_STEPS} step on the rubric's letter ladder (a score is mapped to a "
        "letter with the rubric's thresholds). *Explained by*: the failed cases when the judge rated higher, the "
        "passed edge and precision cases when it rated lower."
    )
    parts = [intro, table(*table_rows(result)) if result["disagreements"] else "No disagreement."]
    if result["not_compared"]:
        listed = [f"- line {u['line']}: {escape(u['model'])} on {escape(u['challenge'])}: {u['why']}"
                  for u in result["not_compared"]]  # fmt: skip
        parts.append(f"**Not compared** ({len(listed)})\n\n" + "\n".join(listed))
    return "\n\n".join(parts)


def terminal_lines(result: dict[str, Any], label: str) -> list[str]:
    """Plain lines (the caller passes them through ``inert.terminal``)."""
    lines = [f"judge {label}: {result['compared']} compared, {len(result['disagreements'])} disagree by more than "
             f"{MAX_AGREEING_STEPS} step"]  # fmt: skip
    for d in result["disagreements"]:
        lines.append(f"{d['model']} {d['challenge']}: judge {_judge_cell(d)}, execution {d['execution']} "
                     f"({d['points']:.1f}); {describe_cases(d)}")  # fmt: skip
    lines += [f"not compared: line {u['line']} {u['model']} on {u['challenge']}: {u['why']}"
              for u in result["not_compared"]]  # fmt: skip
    return lines
