"""Speed that discriminates: the words of a timed case, the credit bands, the peer table, and the slow demo.

Timings are never asserted here: wording and bands are checked on hand-made records, and the slow-but-correct demo
(``submissions/demo-slow``) is checked, in the shared ``--no-speed`` roster run, to keep every point but speed.
"""

from __future__ import annotations

import pytest

from plugins.base import wording
from plugins.base.records import CaseRecord
from plugins.config import RUBRIC_FILE
from plugins.grade import rubric as rb
from plugins.report import speed as sp
from plugins.report.speed_section import pytest_grader_report_sections
from reference import flash_attention, flash_attention_bwd

RUBRIC = rb.load_rubric(RUBRIC_FILE)
SPEED_CASE = next(c.id for c in flash_attention.CASES if c.is_speed)


def timed(ratio: float, median: float = 1.0, spread: float = 0.02) -> dict[str, float]:
    return {"median_s": median, "spread_s": spread, "baseline_median_s": median / ratio, "ratio": ratio, "repeats": 5}


def credit(ratio: float) -> float:
    record = CaseRecord("m", "flash_attention", SPEED_CASE, 0, "speed", "trap", "passed", speed=timed(ratio))
    return rb.case_credit(record, RUBRIC)


@pytest.mark.parametrize(
    ("ratio", "words"),
    [
        (3.1, "3.1× slower than the reference"),
        (0.5, "2.0× faster than the reference"),
        (1.02, "as fast as the reference"),
        (0.97, "as fast as the reference"),
        (10.0, "10.0× slower than the reference"),
    ],
)
def test_ratio_in_words(ratio, words):
    """A ratio reads as slower, faster, or as fast as (within 5%) the reference."""
    assert wording.ratio_words(ratio) == words


def test_speed_sentence_has_ratio_spread_and_medians():
    """The record message: ratio in words, spread as a share of the median, both medians and the trial count."""
    sentence = wording.speed_words(timed(3.1, median=3.1, spread=0.062))
    want = "3.1× slower than the reference, spread 2% (median 3.10 s against the reference's 1.00 s, 5 trials)"
    assert sentence == want
    assert "(median 12.0 ms against the reference's 24.0 ms" in wording.speed_words(timed(0.5, median=0.012))


def test_an_order_of_magnitude_costs_most_of_the_speed_points():
    """10x earns at most a quarter of the credit; within 1.5x (noise) earns all of it; credit never rises with time."""
    assert credit(10.0) <= 0.25 and credit(30.0) == 0.0
    assert credit(1.0) == credit(1.49) == 1.0
    ratios = [0.5, 1.0, 1.49, 1.5, 2.0, 2.5, 3.6, 5.0, 7.0, 9.99, 10.0, 100.0]
    credits = [credit(r) for r in ratios]
    assert credits == sorted(credits, reverse=True)


def test_a_per_row_loop_loses_most_speed_points():
    """demo-slow measured 3.4-3.6x the fast reference here: it keeps at most half the speed credit, never all."""
    assert credit(3.4) <= 0.5 and credit(3.6) <= 0.5
    slow = CaseRecord("m", "flash_attention", SPEED_CASE, 0, "speed", "trap", "passed", speed=timed(3.6))
    grade = rb.score("m", "flash_attention", [slow], RUBRIC)
    assert grade.categories["speed"]["score"] <= 0.5


def peer_summary() -> dict:
    """Three models on one speed case (fast, slow, wrong) and one skipped case that must not show."""

    def case(model: str, outcome: str, speed: dict | None, case_id: str = SPEED_CASE) -> dict:
        fields = {"model": model, "challenge": "flash_attention", "case": case_id, "category": "speed"}
        return {**fields, "outcome": outcome, "speed": speed}

    return {
        "cases": [
            case("slow", "passed", timed(3.6, median=7.2)),
            case("fast", "passed", timed(1.0, median=2.0)),
            case("<b>wrong</b>", "wrong", None),
            case("fast", "skipped", None, "other-speed"),
            {"model": "fast", "challenge": "flash_attention", "case": "c", "category": "core", "outcome": "passed"},
        ]
    }


def test_peer_table_relates_each_model_to_the_fastest():
    """The fastest passed model is 1.00×, the others their multiple of it; a failed one has no time."""
    rows = sp.peer_rows(peer_summary())
    assert list(rows) == [("flash_attention", SPEED_CASE)]
    table = rows[("flash_attention", SPEED_CASE)]
    assert table[0] == ["fast", "2.00 s", "as fast as the reference", "1.00× (fastest)"]
    assert table[1] == ["slow", "7.20 s", "3.6× slower than the reference", "3.60×"]
    assert table[2][:3] == ["<b>wrong</b>", "wrong", "no time (not passed)"]


def test_peer_section_is_inert_and_absent_without_timings():
    """Model names are escaped in the section; a run with no timed speed case adds no section."""
    [(title, body)] = pytest_grader_report_sections(peer_summary(), None)
    assert title == "Speed against peers" and "&lt;b&gt;wrong&lt;/b&gt;" in body and "<b>" not in body
    assert pytest_grader_report_sections({"cases": []}, None) == []


def test_speed_cases_are_at_the_task_scale():
    """Both speed cases at the task's N=4096 and D=64 (where a per-row loop pays for streaming K and V); B*H is cut
    from the task's 16 to 4 (forward) and 2 (backward) so the default run fits a 2-core machine."""
    [fwd] = [c for c in flash_attention.CASES if c.is_speed]
    [bwd] = [c for c in flash_attention_bwd.CASES if c.is_speed]
    assert (fwd.params["B"] * fwd.params["H"], fwd.params["N"], fwd.params["D"]) == (4, 4096, 64)
    assert (bwd.params["B"] * bwd.params["H"], bwd.params["N"], bwd.params["D"]) == (2, 4096, 64)


def test_fast_reference_matches_the_oracle():
    """The timed entry points (blocked) agree with the direct float64 oracle on uneven, causal and full inputs."""
    import numpy as np

    rng = np.random.default_rng(7)
    for shape, causal in (((2, 3, 300, 59), True), ((1, 2, 200, 16), False)):
        q, k, v, do = (rng.standard_normal(shape) * 3 for _ in range(4))
        want = flash_attention_bwd.gradients(q, k, v, do, causal)
        out = flash_attention.flash_attention_fwd(q, k, v, 97, causal)
        _, cache = flash_attention_bwd.flash_attention_fwd(q, k, v, 97, causal)
        grads = flash_attention_bwd.flash_attention_bwd(do, cache, 97, causal)
        got = dict(zip(("dQ", "dK", "dV"), grads, strict=True))
        assert np.abs(out - want["O"]).max() < 1e-12
        assert all(np.abs(got[n] - want[n]).max() < 1e-11 for n in got)


def test_slow_demo_keeps_every_point_but_speed(roster):
    """Graded without speed, the per-row-loop demo passes every case (A+): only speed can cost it."""
    grade = roster.summary["models"]["demo-slow"]["challenges"]["flash_attention"]
    assert grade["letter"] == "A+" and grade["failed"] == [] and grade["points"] == 100.0
    ran = {case: r for (model, _, case), r in roster.records().items() if model == "demo-slow"}
    ran = {case: r for case, r in ran.items() if r["outcome"] != "skipped"}
    assert len(ran) == sum(not c.is_speed for c in flash_attention.CASES)
    assert all(r["outcome"] == "passed" for r in ran.values()) and SPEED_CASE not in ran
