"""The scoring module on hand-made records: points, letters, gates, head-to-head and ranking."""

from __future__ import annotations

import pytest

from plugins.base.records import CaseRecord
from plugins.config import RUBRIC_FILE
from plugins.grade import rubric as rb
from plugins.report import tables

RUBRIC = rb.load_rubric(RUBRIC_FILE)


def record(category: str, outcome: str = "passed", speed_ratio: float | None = None, case: str = "") -> CaseRecord:
    speed = {"ratio": speed_ratio, "median_s": 1.0} if speed_ratio is not None else None
    return CaseRecord("m", "flash_attention", case or category, 0, category, "trap", outcome, speed=speed)


def full_set(**overrides: str) -> list[CaseRecord]:
    """One passing case per category (speed 1x the reference), with outcomes overridden by category."""
    cats = ("core", "edge", "precision", "memory", "speed", "robustness")
    return [record(c, overrides.get(c, "passed"), speed_ratio=1.0 if c == "speed" else None) for c in cats]


def graded(records: list[CaseRecord]) -> rb.ChallengeGrade:
    grade = rb.score("m", "flash_attention", records, RUBRIC)
    grade.letter = rb.letter_for(grade, RUBRIC)
    return grade


def test_everything_passed_is_a_plus():
    """All categories full: 100 points, A+."""
    grade = graded(full_set())
    assert grade.points == 100.0 and grade.letter == "A+"


def test_failed_memory_costs_its_weight():
    """Memory is 10 of 100 points: losing it gives 90, an A-."""
    grade = graded(full_set(memory="wrong"))
    assert grade.points == 90.0 and grade.letter == "A-"
    assert grade.failed[0]["category"] == "memory"


def test_skipped_speed_drops_out_and_rescales():
    """Speed not measured: the other 90 points are scaled to 100, and failing memory then gives 80/90."""
    records = [r for r in full_set(memory="wrong") if r.category != "speed"]
    grade = graded(records)
    assert "speed" not in grade.categories
    assert grade.points == pytest.approx(100 * 80 / 90, abs=0.01) and grade.letter == "B+"


def test_an_empty_category_says_why():
    """Robustness cases that ran but all depend on a rule the task does not state: the category is not scored, and
    the per-challenge table says that (it said "not run"). A category the challenge has no case in says "no cases";
    one whose cases did not run here (skipped, deselected, a run cut short) "not run", as do all absent categories of
    a run written before the header counted the cases."""
    records = [r for r in full_set() if r.category not in ("robustness", "speed", "memory")]
    records += [record("robustness", case=f"strided-{i}") for i in range(2)]
    records[-1].outcome = "wrong"
    for r in records[-2:]:
        r.beyond = ["strides"]
    grade = graded(records)
    assert "robustness" not in grade.categories and grade.unscored == {"robustness": 2} and grade.points == 100.0
    counts = {"core": 1, "edge": 1, "precision": 1, "speed": 1, "robustness": 2}  # no memory case
    challenge = {"id": "flash_attention", "title": "t", "graded": True, "cases_by_category": counts}
    summary = {
        "models": {"m": {"challenges": {"flash_attention": grade.to_dict()}}},
        "ranking": [{"model": "m"}],
        "challenges": [challenge],
    }

    def cells() -> dict[str, str]:
        headers, rows = tables.breakdown(summary, "flash_attention")
        return dict(zip(headers, rows[0], strict=True))

    assert cells()["robustness"] == "not scored (2 beyond the task)"
    assert (cells()["speed"], cells()["memory"]) == ("not run", "no cases")
    del challenge["cases_by_category"]
    assert (cells()["speed"], cells()["memory"]) == ("not run", "not run")


@pytest.mark.parametrize(
    ("ratio", "credit"), [(0.3, 1.0), (1.49, 1.0), (2.0, 0.5), (3.6, 0.25), (9.9, 0.1), (10.0, 0), (99, 0)]
)
def test_speed_bands(ratio, credit):
    """A passed speed case earns the credit of the band its ratio falls in."""
    assert rb.case_credit(record("speed", speed_ratio=ratio), RUBRIC) == credit


def test_wrong_speed_case_earns_nothing():
    """Speed is credited only for correct output, however fast."""
    assert rb.case_credit(record("speed", "wrong", speed_ratio=0.1), RUBRIC) == 0.0


def test_core_failure_caps_the_letter():
    """Failing a core case caps at D even when the points would earn more."""
    records = [*full_set(), *(record("core", case=f"c{i}") for i in range(9)), record("core", "wrong", case="bad")]
    grade = graded(records)
    assert grade.points > 90 and grade.letter == "D"
    assert any("core" in note for note in grade.notes)


def test_letter_thresholds_are_inclusive():
    """Points exactly on a threshold earn that letter; just below earns the next."""
    assert rb.letter_for(rb.ChallengeGrade("m", "c", 93.0), RUBRIC) == "A"
    assert rb.letter_for(rb.ChallengeGrade("m", "c", 92.99), RUBRIC) == "A-"
    assert rb.letter_for(rb.ChallengeGrade("m", "c", 59.9), RUBRIC) == "F"


def test_head_to_head_counts_only_shared_challenges():
    """Wins, losses and ties by grade points over challenges both models attempted."""
    letters = {"a": {"x": "A", "y": "B", "z": "C"}, "b": {"x": "B", "y": "B"}}
    table = rb.head_to_head(letters, RUBRIC)
    assert table["a"]["b"] == [1, 0, 1] and table["b"]["a"] == [0, 1, 1]


def test_ranking_counts_not_attempted_challenges_as_zero():
    """Ranked on the run's challenges with a challenge not attempted counting 0 (score = mean x coverage): one A+ of
    two does not rank above an A and a B (before, "narrow" ranked first on its mean alone); the mean stays beside."""
    letters = {"wide": {"x": "A", "y": "B"}, "narrow": {"x": "A+"}, "weak": {"x": "F", "y": "F"}}
    rows = rb.ranking(letters, RUBRIC, ["x", "y"])
    assert [r["model"] for r in rows] == ["wide", "narrow", "weak"]
    assert [r["score"] for r in rows] == [3.5, 2.15, 0.0] and [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[1]["coverage"] == "1 of 2" and rows[1]["mean_grade_points"] == 4.3


def test_the_oddity_of_main_two_of_eight_no_longer_outranks_eight_of_eight():
    """demo-f64-out (A+ on 2 of 8 challenges) ranked above demo-tiled (8 of 8, one of them an A once speed counts) on
    the mean alone; ranked by score the full roster comes first, and the mean stays beside it."""
    run = [f"c{i}" for i in range(8)]
    letters = {"demo-f64-out": {"c0": "A+", "c1": "A+"}, "demo-tiled": dict.fromkeys(run, "A+") | {"c7": "A"}}
    rows = rb.ranking(letters, RUBRIC, run)
    assert [r["model"] for r in rows] == ["demo-tiled", "demo-f64-out"]
    assert [(r["score"], r["mean_grade_points"]) for r in rows] == [(4.26, 4.26), (1.07, 4.3)]


def test_samples_are_one_ranked_row_with_a_spread():
    """A model with sample folders is one row: each challenge at the mean of its samples, the score's range from its
    worst samples to its best (before: three ranked rows, m, m/sample-1 and m/sample-2)."""
    letters = {"m": {"x": "A"}, "m/sample-1": {"y": "A+"}, "m/sample-2": {"y": "F"}, "other": {"x": "B+", "y": "B+"}}
    rows = rb.ranking(letters, RUBRIC, ["x", "y"])
    assert [r["model"] for r in rows] == ["other", "m"]
    (m,) = [r for r in rows if r["model"] == "m"]
    assert m["units"] == ["m", "m/sample-1", "m/sample-2"] and m["coverage"] == "2 of 2" and m["samples"] == 2
    assert m["score"] == round((4.0 + 4.3 / 2) / 2, 2) and m["spread"] == [2.0, round((4.0 + 4.3) / 2, 2)]


def test_run_challenges_leave_out_what_nobody_was_graded_on():
    """A challenge deselected for everyone, or only built here (no GPU), is no challenge of the run's ranking."""
    letters = {"a": {"x": "A", "cuda": rb.BUILT_ONLY}, "b": {"x": "F"}}
    assert rb.run_challenges(letters, ["x", "y", "cuda"], RUBRIC) == ["x"]


def test_overall_letter_from_mean():
    """The badge letter is the best letter the mean grade points reach."""
    assert rb.overall_letter(4.3, RUBRIC) == "A+"
    assert rb.overall_letter(3.5, RUBRIC) == "B+"
    assert rb.overall_letter(0.5, RUBRIC) == "F"


def test_a_challenge_only_built_here_is_not_held_against_a_model():
    """On a machine without a GPU a CUDA kernel is only built: when another model's failed build puts that challenge
    in the run (an F), the built model's score leaves it out instead of counting 0 (the full roster's demo-tiled)."""
    letters = {"tiled": {"x": "A+", "cuda": rb.BUILT_ONLY}, "nobuild": {"cuda": "F"}}
    rows = {r["model"]: r for r in rb.ranking(letters, RUBRIC, ["x", "cuda"])}
    assert rows["tiled"]["score"] == 4.3 and rows["tiled"]["coverage"] == "1 of 1" and rows["tiled"]["built_only"] == 1
    assert rows["nobuild"]["score"] == 0.0 and rows["nobuild"]["rank"] == 2
    assert tables.coverage(rows["tiled"]) == "1 of 1 (+1 only built here)"


def test_a_challenge_only_built_by_every_model_still_shows_in_coverage():
    """A challenge whose every submission was only built here is not one of the run's challenges (nobody was graded
    on it), yet each model's coverage says it was built: "0 of 1 (+1 only built here)", not a bare "0 of 1"."""
    letters = {"race": {"paged": rb.BUILT_ONLY}, "other": {"x": "B"}}
    challenges = rb.run_challenges(letters, ["x", "paged"], RUBRIC)
    rows = {r["model"]: r for r in rb.ranking(letters, RUBRIC, challenges)}
    assert challenges == ["x"] and rows["race"]["rank"] is None
    assert tables.coverage(rows["race"]) == "0 of 1 (+1 only built here)"
    assert tables.coverage(rows["other"]) == "1 of 1"


def test_a_challenge_built_for_one_sample_and_skipped_for_another_is_counted_once():
    """Samples of one model, one only built here and one skipped here: the challenge leaves the coverage's count and
    is named after it once (before, it left the count yet appeared under neither status)."""
    letters = {"m/sample-1": {"x": rb.BUILT_ONLY, "y": "A"}, "m/sample-2": {"x": rb.SKIPPED_HERE, "y": "A"}}
    row = rb.ranking(letters, RUBRIC, ["x", "y"])[0]
    assert row["coverage"] == "1 of 1" and (row["built_only"], row["skipped_here"]) == (0, 1)
    assert tables.coverage(row) == "1 of 1 (+1 skipped here)"
