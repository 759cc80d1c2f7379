"""This run against an earlier one (``--baseline=last|N|PATH``: the reports folder's newest finished run, its run N,
or a ``results.json``): grade deltas, newly failing and newly passing cases, speed changes beyond the noise, and the
regressions ``--fail-on-regression`` exits on.

Pure: two summaries in, plain rows and text out; nothing here touches pytest (``plugins/report/comparisons.py`` is the
pytest side). The baseline is read when the run starts, since it may be the very ``results.json`` this run moves to
``history/NNNN/``.

What is compared, and why that way:

- Grades: every (model, challenge) graded in either run; a row where the letter or the points changed, and a count of
  the unchanged ones. A pair graded in one run only says so ("not graded" on the other side).
- Cases: a case counts as newly failing (newly passing) only when both runs ran it and it passed before and not now
  (or the reverse); a skipped case is neither. Cases run in one run only are counted, not judged: a case table or a
  ``-k`` selection that changed is no regression.
- Regressions (:func:`regressions`): a pair graded with a letter in both runs whose letter dropped by more than one
  step of the rubric's ladder (A+ to A is one step, and noise; A+ to A- is two), and every newly failing case.
- Speed: a case's time ratio (submission / reference, both medians on the same machine) moved beyond the noise when it
  changed by a factor ``f`` (either way) with ``f - 1 > max(NOISE_SPREADS * s, NOISE_FLOOR)``, ``s`` the larger of the
  two runs' relative spreads of that ratio (see :func:`relative_spread`). The spread is the range (max - min) of the
  timed repeats over their median, so a median rarely moves by more than one range between runs from the scatter
  already seen; twice the larger range leaves room for the other run's scatter too. The 10 % floor is there because a
  handful of repeats (5 by default) under-states drift between runs (clock frequency, other load), which timings of a
  few milliseconds show at that size even when both ranges look tight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plugins.report import lifecycle, tables
from plugins.report.markdown import escape, table

SCHEMA_VERSION = 1  # the results.json layout this module reads (plugins/grade/plugin.py writes it)
NOISE_SPREADS = 2.0  # a move beyond noise is more than this many of the larger relative spread ...
NOISE_FLOOR = 0.10  # ... and more than 10 % (see the module docstring)
UNGRADED = "not graded"
# stubs of plugins/report/lifecycle.py: no grades in them
_NOT_RESULTS = ("running", "usage-error", "failed-to-start", "unreadable")


class BaselineError(ValueError):
    """The baseline file is missing, unreadable, or not a finished run's results.json (a usage error)."""


def load_baseline(path: Path) -> dict[str, Any]:
    """The baseline summary, checked for the fields the comparison reads; :class:`BaselineError` otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError("no such file") from None
    except IsADirectoryError:
        raise BaselineError("a folder, not a results.json") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BaselineError(f"not readable as JSON ({exc.__class__.__name__})") from None
    check_schema(data)
    return data


def baseline_input(value: str, reports: Path, given: bool = True) -> tuple[str, dict[str, Any]] | None:
    """(label, summary) of ``--baseline``: ``last``, a run number of ``reports``' history, or a path. When ``given`` is
    False (``--fail-on-regression`` without ``--baseline``), a folder with no earlier run gives None instead of an
    error: a first run has nothing to regress from."""
    if value != "last" and not value.isdigit():
        return value, load_baseline(Path(value).expanduser())
    path = lifecycle.run_results(reports, value)
    if path is None:
        if not given:
            return None
        kept = ", ".join(map(str, lifecycle.run_folders(reports))) or "none"
        what = "no finished run" if value == "last" else f"no run {int(value)}"
        raise BaselineError(f"{what} in {reports} (runs kept in {lifecycle.HISTORY}/: {kept})")
    data = load_baseline(path)
    number = lifecycle.run_number(data)
    # the folder's own reports move to history/ when this run starts: their path would be stale, their number is not
    where = "" if path.parent == reports else f", {path}"
    return f"{value} (run {number or 'unnumbered'}{where})", data


def check_schema(data: Any) -> None:
    """Raise :class:`BaselineError` naming the first thing that makes ``data`` no finished run's summary."""
    if not isinstance(data, dict):
        raise BaselineError("not a results.json: the top level is not an object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BaselineError(f"schema_version {data.get('schema_version')!r}, this grader reads {SCHEMA_VERSION}")
    if data.get("status") in _NOT_RESULTS:
        raise BaselineError(f"a report stub, not a finished run (status {data.get('status')!r})")
    models, cases = data.get("models"), data.get("cases")
    if not isinstance(models, dict) or not isinstance(cases, list):
        raise BaselineError("not a results.json: no 'models' object or 'cases' list")
    for model, entry in models.items():
        grades = entry.get("challenges") if isinstance(entry, dict) else None
        if not isinstance(grades, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("letter"), str) and isinstance(g.get("points"), int | float)
            for g in grades.values()
        ):
            raise BaselineError(f"not a results.json: model {model!r} has no letter and points per challenge")
    keys = ("model", "challenge", "case", "outcome")
    if not all(isinstance(c, dict) and all(isinstance(c.get(k), str) for k in keys) for c in cases):
        raise BaselineError("not a results.json: a case record lacks model, challenge, case or outcome")


# --- grades -----------------------------------------------------------------------------------------------------------


def _grades(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m, c): g for m, entry in summary["models"].items() for c, g in entry["challenges"].items()}


def _order(summary: dict[str, Any], baseline: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Models in this run's ranking order then the baseline's; challenges in this run's table order."""
    models = [u for row in summary.get("ranking", []) for u in row.get("units", [row["model"]])] + list(
        summary["models"]
    )
    models += [u for row in baseline.get("ranking", []) for u in row.get("units", [row["model"]])]
    models += list(baseline["models"])
    challenges = [c["id"] for c in summary.get("challenges", [])] + [c["id"] for c in baseline.get("challenges", [])]
    return list(dict.fromkeys(models)), list(dict.fromkeys(challenges))


def grade_deltas(baseline: dict[str, Any], summary: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """(rows whose letter or points changed, or that one run did not grade; how many pairs are unchanged)."""
    before, after = _grades(baseline), _grades(summary)
    models, challenges = _order(summary, baseline)
    position = {c: i for i, c in enumerate(challenges)}
    keys = sorted(before.keys() | after.keys(), key=lambda k: (models.index(k[0]), position.get(k[1], len(position))))
    rows, unchanged = [], 0
    for key in keys:
        old, new = before.get(key), after.get(key)
        if old and new and old["letter"] == new["letter"] and old["points"] == new["points"]:
            unchanged += 1
            continue
        rows.append(
            {
                "model": key[0],
                "challenge": key[1],
                "before": _shown(old),
                "after": _shown(new),
                "points_delta": round(new["points"] - old["points"], 2) if old and new else None,
                "letters": [old["letter"] if old else None, new["letter"] if new else None],
            }
        )
    return rows, unchanged


def _shown(grade: dict[str, Any] | None) -> str:
    if grade is None:
        return UNGRADED
    return tables.shown_grade(grade)  # statuses without points (built, no code) as in every other table


# --- cases ------------------------------------------------------------------------------------------------------------


def _cases(summary: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(c["model"], c["challenge"], c["case"]): c for c in summary["cases"] if c["outcome"] != "skipped"}


def case_changes(baseline: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Newly failing and newly passing cases among those both runs ran, and how many ran in one run only."""
    before, after = _cases(baseline), _cases(summary)
    both = [k for k in after if k in before]
    failing = [_case_row(before[k], after[k]) for k in both if before[k]["outcome"] == "passed" != after[k]["outcome"]]
    passing = [_case_row(before[k], after[k]) for k in both if after[k]["outcome"] == "passed" != before[k]["outcome"]]
    return {
        "newly_failing": failing,
        "newly_passing": passing,
        "compared": len(both),
        "only_now": len(after.keys() - before.keys()),
        "only_before": len(before.keys() - after.keys()),
    }


def _case_row(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    failed = new if new["outcome"] != "passed" else old
    return {
        "model": new["model"],
        "challenge": new["challenge"],
        "case": new["case"],
        "category": new.get("category", ""),
        "before": old["outcome"],
        "after": new["outcome"],
        "message": failed.get("message", ""),
    }


# --- regressions ------------------------------------------------------------------------------------------------------

MAX_STEPS_DROPPED = 1  # one step (A+ to A) is within a run's noise; more is a regression


def regressions(comparison: dict[str, Any], ladder: list[str]) -> list[str]:
    """One line per regression of ``comparison`` (:func:`compare`): a letter that dropped by more than one step of
    ``ladder`` (the rubric's letters, best first), and a newly failing case. Statuses that are no letter (built, no
    code) and pairs graded in one run only are not compared."""
    step = {letter: i for i, letter in enumerate(ladder)}
    lines = []
    for row in comparison["grades"]:
        old, new = row.get("letters") or (None, None)
        if old in step and new in step and step[new] - step[old] > MAX_STEPS_DROPPED:
            lines.append(f"{row['model']} {row['challenge']}: {old} → {new} ({step[new] - step[old]} steps down)")
    for case in comparison["cases"]["newly_failing"]:
        lines.append(f"{case['model']} {case['challenge']}/{case['case']}: newly {case['after']}")
    return lines


# --- speed ------------------------------------------------------------------------------------------------------------


def relative_spread(speed: dict[str, Any]) -> float:
    """The ratio's relative spread in one run: the submission's range over its median, plus the reference's when it
    was recorded (a ratio of two noisy medians is as noisy as both)."""
    spread = speed.get("spread_s", 0.0) / speed["median_s"] if speed.get("median_s") else 0.0
    ref_spread, ref_median = speed.get("baseline_spread_s"), speed.get("baseline_median_s")
    if ref_spread is not None and ref_median:
        spread += ref_spread / ref_median
    return spread


def speed_changes(baseline: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Speed cases both runs timed (passed, with a ratio) whose ratio moved beyond the noise; how many were compared."""
    before, after = _cases(baseline), _cases(summary)
    moved, compared = [], 0
    for key, new in after.items():
        old = before.get(key)
        if not old or not _timed(old) or not _timed(new):
            continue
        compared += 1
        row = speed_move(old["speed"], new["speed"])
        if row["beyond_noise"]:
            moved.append({"model": key[0], "challenge": key[1], "case": key[2]} | row)
    return {"moved": moved, "compared": compared}


def _timed(record: dict[str, Any]) -> bool:
    speed = record.get("speed")
    return record["outcome"] == "passed" and isinstance(speed, dict) and bool(speed.get("ratio"))


def speed_move(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """How far one speed case's ratio moved between runs, the threshold it is held to, and whether it crossed it."""
    factor = new["ratio"] / old["ratio"]
    spread_before, spread_after = relative_spread(old), relative_spread(new)
    threshold = max(NOISE_SPREADS * max(spread_before, spread_after), NOISE_FLOOR)
    move = max(factor, 1 / factor) - 1
    return {
        "ratio_before": old["ratio"],
        "ratio_after": new["ratio"],
        "factor": factor,
        "spread_before": spread_before,
        "spread_after": spread_after,
        "threshold": threshold,
        "beyond_noise": move > threshold,
    }


def describe_move(row: dict[str, Any]) -> str:
    """``2.10× → 3.50× the reference: 1.67× slower (spread 4% / 6%, noise threshold 12%)``."""
    factor = row["factor"]
    way = f"{factor:.2f}× slower" if factor > 1 else f"{1 / factor:.2f}× faster"
    return (
        f"{row['ratio_before']:.2f}× → {row['ratio_after']:.2f}× the reference: {way} "
        f"(spread {row['spread_before']:.0%} / {row['spread_after']:.0%}, noise threshold {row['threshold']:.0%})"
    )


# --- the whole comparison ---------------------------------------------------------------------------------------------


def compare(baseline: dict[str, Any], summary: dict[str, Any], label: str) -> dict[str, Any]:
    """Everything the reports show about ``summary`` against ``baseline`` (``label``: where the baseline came from)."""
    deltas, unchanged = grade_deltas(baseline, summary)
    return {
        "label": label,
        "about": provenance(baseline, summary),
        "grades": deltas,
        "unchanged": unchanged,
        "cases": case_changes(baseline, summary),
        "speed": speed_changes(baseline, summary),
    }


def provenance(baseline: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """When and how the baseline ran, and anything that makes the two runs less comparable."""
    opts, old_opts = summary.get("options", {}), baseline.get("options", {})
    commit = (baseline.get("commit") or {}).get("sha") or "unknown"
    lines = [f"baseline run {baseline.get('created', 'at an unknown time')}, commit {commit[:12]}, "
             f"seed {old_opts.get('seed', 'unknown')}, status {baseline.get('status', 'unknown')}"]  # fmt: skip
    if old_opts.get("seed") != opts.get("seed"):
        lines.append("the seeds differ: hidden inputs were drawn afresh, so a case may pass or fail on other inputs")
    if not (old_opts.get("measure_speed", True) and opts.get("measure_speed", True)):
        lines.append("speed not compared: one of the runs did not measure it (--no-speed)")
    if old_opts.get("device") != opts.get("device"):
        lines.append(f"devices differ ({old_opts.get('device')} before, {opts.get('device')} now)")
    return lines


# --- rendering --------------------------------------------------------------------------------------------------------

MAX_CASES_LISTED = 20  # per list in grades.md; the terminal shows fewer


def grade_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [
            d["model"],
            d["challenge"],
            d["before"],
            d["after"],
            "—" if d["points_delta"] is None else f"{d['points_delta']:+.1f}",
        ]
        for d in comparison["grades"]
    ]
    return ["model", "challenge", "before", "after", "points"], rows


def case_lines(rows: list[dict[str, Any]], limit: int) -> list[str]:
    """One plain line per case (the caller makes it safe for its medium); the rest counted."""
    lines = [
        f"{r['model']} {r['challenge']}/{r['case']} ({r['category']}): {r['before']} → {r['after']}"
        + (f" — {_short(r['message'])}" if r["message"] else "")
        for r in rows[:limit]
    ]
    return lines + ([f"… and {len(rows) - limit} more"] if len(rows) > limit else [])


def speed_lines(comparison: dict[str, Any], limit: int) -> list[str]:
    moved = comparison["speed"]["moved"]
    lines = [f"{r['model']} {r['challenge']}/{r['case']}: {describe_move(r)}" for r in moved[:limit]]
    return lines + ([f"… and {len(moved) - limit} more"] if len(moved) > limit else [])


def counts_line(comparison: dict[str, Any]) -> str:
    cases, speed = comparison["cases"], comparison["speed"]
    return (
        f"{len(comparison['grades'])} grades changed, {comparison['unchanged']} unchanged; "
        f"{cases['compared']} cases run in both: {len(cases['newly_failing'])} newly failing, "
        f"{len(cases['newly_passing'])} newly passing ({cases['only_now']} run only now, {cases['only_before']} only "
        f"in the baseline); {speed['compared']} speed cases timed in both: {len(speed['moved'])} moved beyond the noise"
    )


def markdown_section(comparison: dict[str, Any]) -> str:
    """The ``Against the baseline`` section of grades.md."""
    cases = comparison["cases"]
    parts = [
        f"Baseline `{escape(comparison['label'])}`: " + "; ".join(escape(line) for line in comparison["about"]) + ".",
        escape(counts_line(comparison)) + ".",
        "**Grade changes**\n\n" + (table(*grade_rows(comparison)) if comparison["grades"] else "None."),
    ]
    for title, rows in (("Newly failing", cases["newly_failing"]), ("Newly passing", cases["newly_passing"])):
        listed = case_lines(rows, MAX_CASES_LISTED)
        parts.append(f"**{title}** ({len(rows)})\n\n" + ("\n".join(f"- {escape(x)}" for x in listed) or "None."))
    rule = (
        f"a ratio that moved by a factor f with f − 1 above {NOISE_SPREADS:g}× the larger relative spread of the two "
        f"runs and above {NOISE_FLOOR:.0%}"
    )
    moved = speed_lines(comparison, MAX_CASES_LISTED)
    parts.append(f"**Speed beyond the noise** ({rule})\n\n" + ("\n".join(f"- {escape(x)}" for x in moved) or "None."))
    return "\n\n".join(parts)


def terminal_lines(comparison: dict[str, Any], limit: int = 8) -> list[str]:
    """Plain lines for the terminal (the caller passes them through ``inert.terminal``)."""
    lines = [f"baseline {comparison['label']}: {comparison['about'][0]}", *comparison["about"][1:]]
    lines.append(counts_line(comparison))
    if comparison["grades"]:
        headers, rows = grade_rows(comparison)
        lines += tables.terminal_table(headers, rows).splitlines()
    cases = comparison["cases"]
    for title, rows in (("newly failing", cases["newly_failing"]), ("newly passing", cases["newly_passing"])):
        lines += [f"{title}: {line}" for line in case_lines(rows, limit)]
    lines += [f"speed beyond the noise: {line}" for line in speed_lines(comparison, limit)]
    return lines


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
