"""Shared wording: speed in words and the table writers of grades.md and report.html, every cell escaped.

Lower packages (compare's verdict messages, isolate's CUDA speed section) and the report writers say things the same
way through this module; it depends on nothing of the grader but :mod:`plugins.base.inert`.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from plugins.base import inert

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
    baseline = seconds_words(float(speed["baseline_median_s"]))
    return (
        f"{ratio_words(float(speed['ratio']))}{interval_words(speed)}, spread {share:.0f}% "
        f"(median {seconds_words(median)} against the reference's {baseline}{trials}{stopped})"
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


def seconds_words(value: float) -> str:
    """``2.31 s`` from one second up, else ``12.0 ms``."""
    return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.1f} ms"


def escape(text: Any) -> str:
    """Cell- and line-safe text: model output and folder names must not break tables or inject markup."""
    return inert.markdown(text)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown (pipe) table with every cell and header escaped: the one table writer of grades.md sections."""
    return tabulate(
        [[escape(c) for c in row] for row in rows],
        headers=[escape(h) for h in headers],
        tablefmt="pipe",
        disable_numparse=True,
    )


def html_table(headers: list[str], rows: list[list[Any]]) -> str:
    """An HTML table (tabulate escapes every cell; ``inert.visible`` first shows control characters)."""
    return tabulate([[inert.visible(c) for c in row] for row in rows], headers=headers, tablefmt="html")
