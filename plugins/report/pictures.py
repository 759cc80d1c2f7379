"""Pictures of a run, drawn from its summary: a grade heatmap, a speed chart and per-challenge trap tables.

The pictures are plain SVG strings and HTML/Markdown tables made here (no plotting library, no script, nothing fetched),
so ``report.html`` stays one self-contained file and ``heatmap.svg`` / ``speed.svg`` open anywhere beside ``grades.md``.
Every text that can come from a submission (model names above all) goes through :mod:`plugins.base.inert`; the rest
(challenge ids, case ids, traps) is escaped the same way, so no string can open an element.

- Heatmap: models (ranked) by challenges, the letter in each cell, coloured by its letter band; a status that is no
  letter ("built", "—", "not run", "no code", anything added later) gets a neutral grey rather than a guessed colour.
- Speed chart: one row per model and challenge, one dot per speed case at its time ratio (submission / reference,
  medians) on a log axis, with a bar over the spread of the submission's timed trials: (max - min) / median, the
  issue's "spread 2%", drawn as the factor ``1 + spread / 2`` either side of the dot (only the median and the range are
  recorded, so the bar is centred on the dot; in log space it never reaches zero, however noisy the trials were).
- Trap tables: the traps a challenge's cases guard against as rows, the models that attempted it as columns: "fell in"
  (a case of the trap did not pass), "non-finite (NaN/Inf)" (one did not pass because it returned NaN or infinity where
  the truth is finite: named apart from an error over the bound), "avoided" (every case of it that ran passed), "not
  reached" (none of its cases ran for that model: deselected, skipped, no code submitted, or the run stopped first).
"""

from __future__ import annotations

import math
import re
from typing import Any

from plugins.base import inert
from plugins.base.records import NO_CODE, PASSED, SKIPPED
from plugins.report import tables

# Letter bands, a diverging green-to-red scale (ColorBrewer RdYlGn), readable with black text except at the ends.
BAND_COLOURS = {"A": "#1a9850", "B": "#91cf60", "C": "#d9ef8b", "D": "#fdae61", "F": "#d73027"}
NEUTRAL = "#d9d9d9"  # any status that is not a letter: it must not read as good or bad
_LIGHT_TEXT = {"A", "F"}  # bands dark enough to need white text
_LETTER = re.compile(r"[A-DF][+-]?")
FELL, AVOIDED, NOT_REACHED = "fell in", "avoided", "not reached"
NONFINITE = "non-finite (NaN/Inf)"  # fell in, with NaN or infinity where the truth is finite
TRAP_SYMBOLS = {FELL: "✗", NONFINITE: "✗", AVOIDED: "✓", NOT_REACHED: "·"}
TRAP_COLOURS = {FELL: "#f4a582", NONFINITE: "#d6604d", AVOIDED: "#b8e186", NOT_REACHED: "#eeeeee"}
CHAR_PX = 7.2  # average glyph width of 12 px sans-serif, to size label columns without measuring text
MAX_LABEL = 40  # characters of a model name shown in a picture; the tables keep the full name
FONT = 'font-family="DejaVu Sans, Arial, sans-serif" font-size="12"'


def _text(value: object, limit: int = MAX_LABEL) -> str:
    """Escaped, visible and cut to ``limit`` characters: safe inside SVG/HTML text and attributes."""
    shown = inert.visible(value)
    return inert.html(shown if len(shown) <= limit else shown[: limit - 1] + "…")


def grade_colour(status: str) -> str:
    """The fill of a heatmap cell: the letter's band, or the neutral grey for any status that is not a letter."""
    return BAND_COLOURS[status[0]] if _LETTER.fullmatch(status) else NEUTRAL


def _text_colour(status: str) -> str:
    return "#ffffff" if _LETTER.fullmatch(status) and status[0] in _LIGHT_TEXT else "#111111"


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" {FONT}><title>{_text(title, 200)}</title>'
        f'<rect width="100%" height="100%" fill="#ffffff"/>{"".join(body)}</svg>'
    )


# ----------------------------------------------------------------------------------------------------------- heatmap
def heatmap_cells(summary: dict[str, Any]) -> tuple[list[str], list[str], list[list[dict[str, Any]]]]:
    """(models in ranking order, challenge ids, one cell per model and challenge: status, points, complete)."""
    challenges = [c["id"] for c in tables.graded_challenges(summary)]
    pending = {(e["model"], e["challenge"]) for e in summary.get("not_run", [])}
    models = tables.units(summary)
    models += [m for m, _ in sorted(pending) if m not in summary["models"] and m not in models]
    cells = []
    for model in models:
        graded = summary["models"].get(model, {}).get("challenges", {})
        row = []
        for cid in challenges:
            grade = graded.get(cid)
            if grade is None:
                status = tables.NOT_RUN if (model, cid) in pending else tables.NOT_ATTEMPTED
                row.append({"status": status, "points": None, "complete": True})
            else:
                row.append({"status": grade["letter"], "points": grade["points"], "complete": grade["complete"]})
        cells.append(row)
    return models, challenges, cells


def heatmap_svg(summary: dict[str, Any]) -> str:
    """Models by challenges, the letter in each cell; ``*`` marks a grade whose selected cases did not all run."""
    models, challenges, cells = heatmap_cells(summary)
    note = "* not every selected case ran. Grey: a status, not a letter (built: compiled, no GPU ran it; —: no folder)."
    cell_w, cell_h = 76, 26
    longest = CHAR_PX * max([len(_cut(c)) for c in challenges] + [1])
    top = 16 + longest / 2  # the ids are slanted by 30 degrees: sin(30°) of their length rises above the cells
    left = 12 + CHAR_PX * max([len(_cut(m)) for m in models] + [5])
    # the last slanted id reaches cos(30°) of its length right of its column's centre; the note must fit too
    width = max(left + cell_w * (max(len(challenges), 1) - 0.5) + 0.87 * longest + 12, 24 + 6.2 * len(note))
    height = top + cell_h * max(len(models), 1) + 40
    body = []
    for j, cid in enumerate(challenges):  # challenge ids slanted so long ids fit over narrow columns
        x = left + cell_w * j + cell_w / 2
        body.append(f'<text transform="translate({x:.1f},{top - 6:.1f}) rotate(-30)">{_text(cid)}</text>')
    for i, model in enumerate(models):
        y = top + cell_h * i
        body.append(f'<text x="{left - 6:.1f}" y="{y + 17:.1f}" text-anchor="end">{_text(model)}</text>')
        for j, cell in enumerate(cells[i]):
            status, x = cell["status"], left + cell_w * j
            shown = status if cell["complete"] else f"{status}*"
            points = "" if cell["points"] is None else f": {cell['points']:.1f} points"
            tip = f"{inert.visible(model)} on {challenges[j]}: {status}{points}"
            body.append(
                f'<g><title>{_text(tip, 200)}</title><rect x="{x:.1f}" y="{y:.1f}" width="{cell_w}" height="{cell_h}" '
                f'fill="{grade_colour(status)}" stroke="#ffffff" stroke-width="2"/>'
                f'<text x="{x + cell_w / 2:.1f}" y="{y + 17:.1f}" text-anchor="middle" font-weight="bold" '
                f'fill="{_text_colour(status)}">{_text(shown, 12)}</text></g>'
            )
    body.append(f'<text x="12" y="{height - 14:.1f}" font-size="11" fill="#555555">{_text(note, 200)}</text>')
    return _svg(width, height, "kernelgrade: grade heatmap", body)


def _cut(name: str) -> str:
    shown = inert.visible(name)
    return shown if len(shown) <= MAX_LABEL else shown[: MAX_LABEL - 1] + "…"


# ------------------------------------------------------------------------------------------------------------- speed
def speed_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per challenge and model (report order), the timed speed cases: case id, ratio, and the spread bar's ends."""
    order = {unit: i for i, unit in enumerate(tables.units(summary))}
    challenges = [c["id"] for c in summary["challenges"]]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for case in summary["cases"]:
        speed = case.get("speed")
        if not speed or not speed.get("ratio") or speed["ratio"] <= 0 or case["challenge"] not in challenges:
            continue
        ratio, median, spread = float(speed["ratio"]), speed.get("median_s"), speed.get("spread_s") or 0.0
        share = spread / median if median else 0.0  # the trials' range as a share of their median
        key = (case["model"], case["challenge"])
        rows.setdefault(key, {"model": key[0], "challenge": key[1], "cases": []})["cases"].append(
            {
                "case": case["case"],
                "ratio": ratio,
                "low": ratio / (1 + share / 2),
                "high": ratio * (1 + share / 2),
                "spread": share,
            }
        )
    return sorted(rows.values(), key=lambda r: (challenges.index(r["challenge"]), order.get(r["model"], len(order))))


def log_range(values: list[float]) -> tuple[float, float]:
    """Whole decades around ``values`` and 1 (the reference), at least one decade wide."""
    lo = 10.0 ** math.floor(math.log10(min([*values, 1.0])))
    hi = 10.0 ** math.ceil(math.log10(max([*values, 1.0])))
    return (lo, hi * 10) if hi <= lo else (lo, hi)


def log_x(value: float, lo: float, hi: float, x0: float, width: float) -> float:
    """The horizontal position of ``value`` on a log axis from ``lo`` (at ``x0``) to ``hi`` (at ``x0 + width``)."""
    return x0 + width * (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


def speed_svg(summary: dict[str, Any]) -> str:
    """Time ratio per model and challenge on a log axis, with each case's spread; a note when nothing was timed."""
    rows = speed_rows(summary)
    if not rows:
        why = (
            "speed not measured (--no-speed)" if not summary["options"].get("measure_speed", True) else "no speed case"
        )
        return _svg(420, 40, "kernelgrade: speed", [f'<text x="12" y="24">No timed case: {_text(why, 80)}.</text>'])
    labels = [f"{_cut(r['model'])} · {r['challenge']}" for r in rows]
    left = 16 + CHAR_PX * max(len(s) for s in labels)
    plot_w, row_h, top = 520.0, 24, 40
    lo, hi = log_range([v for r in rows for c in r["cases"] for v in (c["low"], c["high"])])
    height = top + row_h * len(rows) + 56
    width = left + plot_w + 150
    body = [
        f'<text x="{left:.1f}" y="18" font-weight="bold">Time / reference time (log scale; 1× = as fast as the'
        " reference, left is faster)</text>"
    ]
    decade = lo
    while decade <= hi * 1.0001:
        x = log_x(decade, lo, hi, left, plot_w)
        colour = "#333333" if decade == 1.0 else "#cccccc"
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 44}" stroke="{colour}"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 30}" text-anchor="middle">{decade:g}×</text>')
        decade *= 10
    previous = None
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = top + row_h * i + row_h / 2
        if previous is not None and row["challenge"] != previous:  # a rule between challenges
            body.append(
                f'<line x1="8" y1="{y - row_h / 2:.1f}" x2="{width - 8:.1f}" y2="{y - row_h / 2:.1f}" '
                'stroke="#999999" stroke-dasharray="4 3"/>'
            )
        previous = row["challenge"]
        body.append(f'<text x="{left - 8:.1f}" y="{y + 4:.1f}" text-anchor="end">{_text(label, 80)}</text>')
        for case in row["cases"]:
            x, x1, x2 = (log_x(case[k], lo, hi, left, plot_w) for k in ("ratio", "low", "high"))
            tip = f"{inert.visible(row['model'])} {case['case']}: {_words(case)}"
            body.append(
                f'<g><title>{_text(tip, 200)}</title><line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" '
                f'stroke="#2b6cb0" stroke-width="2"/><line x1="{x1:.1f}" y1="{y - 5:.1f}" x2="{x1:.1f}" '
                f'y2="{y + 5:.1f}" stroke="#2b6cb0"/><line x1="{x2:.1f}" y1="{y - 5:.1f}" x2="{x2:.1f}" '
                f'y2="{y + 5:.1f}" stroke="#2b6cb0"/><circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="#2b6cb0"/></g>'
            )
        figures = ", ".join(f"{c['ratio']:.2f}×, spread {100 * c['spread']:.0f}%" for c in row["cases"])
        body.append(f'<text x="{left + plot_w + 10:.1f}" y="{y + 4:.1f}">{_text(figures, 60)}</text>')
    note = "Dot: median time ratio of a speed case; bar: the spread (max − min over median) of the submission's trials."
    body.append(f'<text x="12" y="{height - 8}" font-size="11" fill="#555555">{_text(note, 200)}</text>')
    return _svg(width, height, "kernelgrade: speed against the reference", body)


def _words(case: dict[str, Any]) -> str:
    ratio = case["ratio"]
    how = f"{ratio:.2f}× slower than" if ratio >= 1 else f"{1 / ratio:.2f}× faster than"
    return f"{how} the reference, spread {100 * case['spread']:.0f}%"


# ------------------------------------------------------------------------------------------------------------- traps
def trap_table(summary: dict[str, Any], challenge: str) -> tuple[list[str], list[str], list[list[str]]]:
    """(models, traps, states): the traps of ``challenge``'s cases that ran in this run (case order), the models that
    attempted it (ranking order, then those the run stopped before), and one state per trap and model."""
    models = [unit for unit in tables.units(summary) if challenge in summary["models"][unit]["challenges"]]
    models += [
        e["model"] for e in summary.get("not_run", []) if e["challenge"] == challenge and e["model"] not in models
    ]
    outcomes: dict[str, dict[str, list[str]]] = {}  # trap -> model -> outcomes
    for case in sorted(summary["cases"], key=lambda c: c["case_index"]):
        if case["challenge"] == challenge:
            outcome = NONFINITE if _nonfinite(case) else case["outcome"]
            outcomes.setdefault(case["guards"], {}).setdefault(case["model"], []).append(outcome)
    traps = list(outcomes)
    states = [[trap_state(outcomes[trap].get(model, [])) for model in models] for trap in traps]
    return models, traps, states


def _nonfinite(case: dict[str, Any]) -> bool:
    """A failed case whose output held NaN or infinity where the truth is finite (the comparator's ``nonfinite``)."""
    return case["outcome"] != PASSED and any(not c["passed"] and c.get("nonfinite") for c in case.get("checks", []))


def trap_state(outcomes: list[str]) -> str:
    """One model's state on one trap from the outcomes of the trap's cases (NONFINITE for a non-finite failure)."""
    ran = [o for o in outcomes if o not in (SKIPPED, NO_CODE)]  # a folder with no code never met the trap
    if NONFINITE in ran:
        return NONFINITE
    if any(o != PASSED for o in ran):
        return FELL
    return AVOIDED if ran else NOT_REACHED


def traps_markdown(summary: dict[str, Any], challenge: str) -> str:
    """The trap table of one challenge as a Markdown table (empty when no case of it ran)."""
    models, traps, states = trap_table(summary, challenge)
    if not traps:
        return ""
    header = "| trap | " + " | ".join(inert.markdown(m) for m in models) + " |"
    lines = [header, "|" + " --- |" * (len(models) + 1)]
    for trap, row in zip(traps, states, strict=True):
        lines.append(f"| {inert.markdown(trap)} | " + " | ".join(f"{TRAP_SYMBOLS[s]} {s}" for s in row) + " |")
    return "\n".join(lines)


def traps_html(summary: dict[str, Any], challenge: str) -> str:
    """The trap table of one challenge as an HTML table with coloured cells (empty when no case of it ran)."""
    models, traps, states = trap_table(summary, challenge)
    if not traps:
        return ""
    head = "".join(f"<th>{inert.html(m)}</th>" for m in models)
    rows = []
    for trap, row in zip(traps, states, strict=True):
        cells = "".join(
            f'<td class="kg-trap" style="background:{TRAP_COLOURS[s]}">{TRAP_SYMBOLS[s]} {s}</td>' for s in row
        )
        rows.append(f"<tr><td>{inert.html(trap)}</td>{cells}</tr>")
    return f'<table class="kg-traps"><tr><th>trap</th>{head}</tr>{"".join(rows)}</table>'


# ------------------------------------------------------------------------------------------------------ report hooks
PICTURE_FILES = ("heatmap.svg", "speed.svg")


def picture_files(summary: dict[str, Any]) -> dict[str, str]:
    """File name -> content of the pictures written beside ``grades.md`` (the caller writes them atomically)."""
    svgs = (heatmap_svg(summary), speed_svg(summary))
    return {
        name: '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n"
        for name, svg in zip(PICTURE_FILES, svgs, strict=True)
    }


def pictures_markdown() -> list[str]:
    """The lines of ``grades.md`` that name the two pictures written beside it. Plain text, not image links: grades.md
    holds no link syntax at all, so a reader can trust that none in it came from a submission."""
    return [
        "Pictures beside this file: `heatmap.svg` (grades by model and challenge) and `speed.svg` (time ratios).",
        "",
    ]
