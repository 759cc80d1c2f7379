"""Speed in words, and each model's time against the fastest peer (``speed_section.py`` adds it to ``grades.md``).

A speed case's record message says what its figures mean ("3.1× slower than the reference (95% interval 2.90–3.30×),
spread 2%": the median of the per-trial ratios of the submission's time to the grader's fast implementation's, each
trial timing both on the same fresh inputs, with its bootstrap interval (``plugins/compare/paired.py``), and the spread
of the submission's timed trials as a share of its median). The section adds, per speed case, each model's ratio
relative to the fastest model that passed it, so a ranking never rests on the reference alone. Timings are never
pass/fail; these are words only."""

from __future__ import annotations

from typing import Any

from plugins.base.wording import interval_words, markdown_table, ratio_words, seconds_words


def peer_rows(summary: dict[str, Any]) -> dict[tuple[str, str], list[list[str]]]:
    """Per (challenge, speed case) that at least one model passed with a timing: one row per model that ran it.

    Columns: model, median, against the reference (words, with the interval), against the fastest peer: the ratio of
    the two credited ratios (``1.00×`` is the fastest).
    A model whose speed case did not pass has no time: its outcome stands in the time columns."""
    cases: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in summary.get("cases", []):
        if record.get("category") == "speed" and record.get("outcome") != "skipped":
            cases.setdefault((record["challenge"], record["case"]), []).append(record)
    tables: dict[tuple[str, str], list[list[str]]] = {}
    for key, records in sorted(cases.items()):
        timed = [r for r in records if _timed(r)]
        if not timed:
            continue
        fastest = min(_ratio(r) for r in timed)
        rows = []
        for record in sorted(records, key=lambda r: (not _timed(r), _ratio(r), r["model"])):
            if _timed(record):
                ratio = _ratio(record)
                rows.append(
                    [
                        record["model"],
                        seconds_words(float(record["speed"]["median_s"])),
                        ratio_words(ratio) + interval_words(record["speed"]),
                        "1.00× (fastest)" if ratio == fastest else f"{ratio / fastest:.2f}×",
                    ]
                )
            else:
                outcome = str(record.get("outcome", "")).replace("_", " ")  # "no_code" reads "no code", as elsewhere
                rows.append([record["model"], outcome, "no time (not passed)", ""])
        tables[key] = rows
    return tables


def _timed(record: dict[str, Any]) -> bool:
    speed = record.get("speed")
    return record.get("outcome") == "passed" and isinstance(speed, dict) and bool(speed.get("median_s"))


def _ratio(record: dict[str, Any]) -> float:
    """The credited ratio: peers are compared through it, each against the reference timed in its own trials (the
    reference's own median moves with the load each pair saw; a ratio of medians across pairs would not)."""
    return float(record["speed"]["ratio"]) if _timed(record) else float("inf")


def render(summary: dict[str, Any]) -> str:
    """The section body: one table per speed case, or an empty string when no speed case was timed."""

    parts = []
    for (challenge, case), rows in peer_rows(summary).items():
        body = markdown_table(["model", "median", "against the reference", "against the fastest peer"], rows)
        parts += [f"`{challenge}` / `{case}`:", "", body, ""]
    if not parts:
        return ""
    intro = (
        "Median time of the timed requests (each on fresh inputs); against the grader's fast implementation as the "
        "median of per-trial ratios (each trial times both on the same inputs) with its bootstrap interval; against "
        "the fastest model that passed the same case in this run as the ratio of those ratios. Speed credit uses the "
        "reference ratio."
    )
    return "\n".join([intro, "", *parts]).rstrip()
