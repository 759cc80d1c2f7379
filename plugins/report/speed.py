"""Speed in words, and each model's time against the fastest peer (``speed_section.py`` adds it to ``grades.md``).

A speed case's record message says what its figures mean ("3.1× slower than the reference (95% interval 2.90–3.30×),
spread 2%": the median of the per-trial ratios of the submission's time to the grader's fast implementation's, each
trial timing both on the same fresh inputs, with its bootstrap interval (``plugins/isolate/paired.py``), and the spread
of the submission's timed trials as a share of its median). The section adds, per speed case, each model's ratio
relative to the fastest model that passed it, so a ranking never rests on the reference alone. Timings are never
pass/fail; these are words only."""

from __future__ import annotations

from typing import Any

SAME_WITHIN = 1.05  # ratios closer to 1 than this read "as fast as": 5% is under a loaded machine's noise


def ratio_words(ratio: float, against: str = "the reference") -> str:
    """``3.1× slower than the reference``, ``1.3× faster than ...``, or ``as fast as ...`` within 5%."""
    if ratio >= SAME_WITHIN:
        return f"{ratio:.1f}× slower than {against}"
    if ratio <= 1 / SAME_WITHIN:
        return f"{1 / ratio:.1f}× faster than {against}"
    return f"as fast as {against}"


def speed_words(speed: dict[str, Any]) -> str:
    """The sentence of a timed case: ratio in words with its interval, the spread of the trials, the two medians, the
    trial count and what ended the trials."""
    median, spread = float(speed["median_s"]), float(speed.get("spread_s") or 0.0)
    share = 100.0 * spread / median if median > 0 else 0.0
    repeats = speed.get("repeats")
    trials = f", {repeats} trials" if repeats else ""
    stopped = f"; {speed['stopped']}" if speed.get("stopped") else ""
    return (
        f"{ratio_words(float(speed['ratio']))}{interval_words(speed)}, spread {share:.0f}% "
        f"(median {_seconds(median)} against the reference's {_seconds(float(speed['baseline_median_s']))}{trials}"
        f"{stopped})"
    )


def interval_words(speed: dict[str, Any]) -> str:
    """`` (95% interval 2.90–3.30×)`` for a paired figure, in the sense of its words: for a faster submission the
    interval of how many times faster; empty for a record that has none (older runs)."""
    ratio, low, high = speed.get("ratio"), speed.get("ratio_low"), speed.get("ratio_high")
    numbers = (ratio, low, high)
    if not all(isinstance(x, (int, float)) and x == x and x > 0 for x in numbers):  # x == x: not NaN
        return ""
    if float(ratio) <= 1 / SAME_WITHIN:
        low, high = 1 / float(high), 1 / float(low)
    confidence = float(speed.get("confidence") or 0.95)
    return f" ({confidence:.0%} interval {low:.2f}–{high:.2f}×)"


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.1f} ms"


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
                        _seconds(float(record["speed"]["median_s"])),
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
    from plugins.report.markdown import table as markdown_table  # late: markdown imports tables, which imports this

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
