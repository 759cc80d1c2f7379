"""``grades.md``: ranking, grade matrix, per-challenge breakdown naming the failed cases, head-to-head, provenance."""

from __future__ import annotations

from typing import Any

from plugins.base.wording import escape
from plugins.base.wording import markdown_table as table
from plugins.grade import rubric
from plugins.report import pictures, tables
from plugins.report.failures import FailedCase, failed_cases

MAX_FAILURES_LISTED = 12  # per model and challenge; results.json and report.html keep them all
_TITLE_NOTE = {"complete": "", "empty": " (no case ran)"}  # anything else: the run did not finish
MAX_MESSAGE_CHARS = 320  # per failure line; the full message is in results.json


def render(summary: dict[str, Any], extra_sections: list[tuple[str, str]]) -> str:
    opts = summary["options"]
    speed = "measured" if opts["measure_speed"] else "not measured (--no-speed): grades leave speed out"
    lines = [
        "# kernelgrade: grades" + _TITLE_NOTE.get(summary.get("status", "complete"), " (INCOMPLETE RUN)"),
        "",
        *status_lines(summary),
        f"Run {summary['created']} on {escape(summary['machine']['platform'])}, device {opts['device']}"
        f"{' (' + escape(', '.join(summary['machine']['gpu'])) + ')' if summary['machine']['gpu'] else ''}; "
        f"commit {summary['commit']['sha'] or 'unknown'}{' (with local changes)' if summary['commit']['dirty'] else ''}"
        ";"
        f" seed {opts['seed']}; {len(summary['cases'])} cases; speed {speed}.",
        "",
        "## Ranking",
        "",
        table(*tables.ranking(summary)),
        "",
        escape(tables.ranking_rule(summary)[0].upper() + tables.ranking_rule(summary)[1:]) + ".",
        "",
        "## Task profiles",
        "",
        "The rules each model was graded by (`reference/tasks/`): a case that depends on a rule its profile does not"
        " state is beyond the task: it runs and is listed, but is not scored.",
        "",
        table(*tables.task_profiles(summary)),
        "",
        "## Grade matrix",
        "",
        f"Letter (points out of 100); {tables.NOT_ATTEMPTED} means the model has no folder for the challenge;"
        f" `{tables.INCOMPLETE}` marks a grade whose selected cases did not all run; `{rubric.BUILT_ONLY}` is a CUDA"
        " source that compiled on a machine with no GPU, where no kernel ran (no grade, not ranked);"
        f" `{rubric.SKIPPED_HERE}` is a submission none of whose cases could run on this machine (no GPU, a package"
        " missing: its section says why; likewise)"
        f"{_no_code_legend(summary)}.",
        "",
        table(*tables.grade_matrix(summary)),
        "",
        *pictures.pictures_markdown(),
    ]
    for challenge in tables.graded_challenges(summary):
        lines += _challenge_section(summary, challenge)
    if summary.get("not_run"):
        lines += ["## Not run", "", "Selected, but the run stopped before any of their cases ran:", ""]
        lines += [
            f"- **{escape(e['model'])}** on `{e['challenge']}`: {e['selected_cases']} selected cases"
            for e in summary["not_run"]
        ]
        lines.append("")
    lines += [
        "## Head-to-head",
        "",
        "Wins-losses-ties of the row model against the column model, one per challenge"
        f" both attempted, compared by grade points.{_no_code_head_to_head(summary)}",
        "",
        table(*tables.head_to_head(summary)),
        "",
    ]
    for title, body in extra_sections:
        lines += [f"## {title}", "", body, ""]
    return "\n".join(lines)


def status_lines(summary: dict[str, Any]) -> list[str]:
    """Warnings that come before any grade: a run that did not finish, and isolation weaker than intended."""
    lines = []
    status = summary.get("status", "complete")
    if status != "complete":
        lines += [f"> **{status.upper()}**: {escape(summary.get('status_detail', ''))}", ""]
    for warning in tables.warnings(summary):
        lines += [f"> **warning**: {escape(warning)}", ""]
    if deselected := tables.deselected_line(summary):
        lines += [f"> **{escape(deselected)}**", ""]
    return lines


def _challenge_section(summary: dict[str, Any], challenge: dict[str, Any]) -> list[str]:
    lines = [
        f"## {challenge['title']} (`{challenge['id']}`)",
        "",
        table(*tables.breakdown(summary, challenge["id"])),
        "",
    ]
    if traps := pictures.traps_markdown(summary, challenge["id"]):
        legend = "✗ fell in (a case of it failed), ✗ non-finite (NaN/Inf) (a case of it gave NaN or Inf where the"
        legend += " truth is finite), ✓ avoided, · not reached."
        lines += [f"Traps (rows) by model: {legend}", "", traps, ""]
    failures = failed_cases(summary, challenge["id"])
    # One line per model whose folder holds no code, never a failure per case.
    no_code = tables.no_code_lines(summary, challenge["id"])
    lines += [f"- **{escape(model)}** ∅ {escape(_shorten(why))}" for model, why in no_code] + ([""] if no_code else [])
    if not failures:
        # Only models whose cases ran can be said to have passed: not a folder without code, nor one skipped here.
        skipped = tables.skipped_here_units(summary, challenge["id"])
        if len(tables.breakdown(summary, challenge["id"])[1]) == len(no_code) + len(skipped):
            return lines
        qualified = " with code" if no_code else ""
        qualified += f" (not {len(skipped)} skipped here: nothing of theirs ran)" if skipped else ""
        return lines + [f"Every case that ran passed for every model{qualified}.", ""]
    lines += [
        "Failed cases (the trap each case guards against, the outcome, whether the model's task states the property"
        " or it is beyond the task, and the worst error against its bound):",
        "",
    ]
    shown: dict[str, int] = {}
    unrunnable = _not_provided(failures)
    for model, why in unrunnable.items():
        lines.append(f"- **{escape(model)}**: {why[1]} cases not run: {escape(why[0])}")
    for failure in failures:
        model = failure.unit
        if model in unrunnable:
            continue
        shown[model] = shown.get(model, 0) + 1
        if shown[model] > MAX_FAILURES_LISTED:
            continue
        lines.append(
            f"- **{escape(model)}** `{failure.case}` ({escape(failure.guards)}): {failure.outcome} [{failure.tag}]"
            f" — {escape(_shorten(failure.message))}"
        )
    for model, count in shown.items():
        if count > MAX_FAILURES_LISTED:
            lines.append(f"- **{escape(model)}**: {count - MAX_FAILURES_LISTED} more failed cases in results.json")
    lines.append("")
    return lines


def _not_provided(failures: list[FailedCase]) -> dict[str, tuple[str, int]]:
    """Models all of whose failed cases of the challenge failed because an entry point was missing (``not provided:
    ...``, a file that did not parse): one line for them, ``not provided: a, b`` over all those cases, not one each."""
    prefix = "not provided: "
    tails: dict[str, dict[str, None]] = {}
    counts: dict[str, int] = {}
    others = set()
    for failure in failures:
        model = failure.unit
        if failure.message.startswith(prefix):
            tails.setdefault(model, {})[failure.message[len(prefix) :]] = None
            counts[model] = counts.get(model, 0) + 1
        else:
            others.add(model)
    return {m: (prefix + ", ".join(t), counts[m]) for m, t in tails.items() if m not in others and counts[m] > 1}


def _no_code_legend(summary: dict[str, Any]) -> str:
    """The grade matrix's words for ``∅ no code``, when the run has one."""
    counts_as = tables.no_code_counts_as(summary)
    if counts_as is None:
        return ""
    how = "0 points, an F in the ranking" if counts_as == "F" else "counted as not attempted"
    return f"; `{tables.NO_CODE_SYMBOL}`: the folder holds no source file for the challenge's language ({how})"


def _no_code_head_to_head(summary: dict[str, Any]) -> str:
    counts_as = tables.no_code_counts_as(summary)
    if counts_as is None:
        return ""
    return f" {tables.NO_CODE_SYMBOL} counts as " + ("an F." if counts_as == "F" else "not attempted: it is left out.")


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"
