"""Rankings that mean what they say, through the summary and the report tables: one row per model (its samples
together), the score over the run's challenges beside the mean, and a header that names challenges ``-k`` deselected.
The scoring rules themselves are in ``test_rubric.py``."""

from __future__ import annotations

from plugins.base.records import PASSED, WRONG, CaseRecord
from plugins.config import RUBRIC_FILE
from plugins.grade import rubric as rb
from plugins.grade import summary as sm
from plugins.report import markdown, tables
from reference import flash_attention, layer_norm_bwd

RUBRIC = rb.load_rubric(RUBRIC_FILE)
CHALLENGES = [
    {"id": "flash_attention", "title": "Flash", "graded": True},
    {"id": "layer_norm_bwd", "title": "LN", "graded": True},
]


def records(unit: str, module, outcome: str = PASSED) -> list[CaseRecord]:
    challenge = module.CHALLENGE.id
    return [CaseRecord.for_case(unit, challenge, c, i, outcome) for i, c in enumerate(module.CASES) if not c.is_speed]


def summarise(recs: list[CaseRecord], folders: list[tuple[str, str]], selected: set | None = None) -> dict:
    """A run of ``recs``; ``folders``: the (model, challenge) folders the run's submissions hold."""
    header = {
        "options": {"measure_speed": False, "seed": 1, "device": "cpu"},
        "challenges": CHALLENGES,
        "submissions": [{"model": m, "challenge": c} for m, c in folders],
        "created": "now",
        "machine": {"platform": "p", "gpu": None},
        "commit": {"sha": None, "dirty": False},
        "warnings": [],
    }
    keys = selected if selected is not None else {(r.model, r.challenge, r.case_index) for r in recs}
    return sm.summarise(header, recs, sm.Selection(keys, set(), True), "complete", "", RUBRIC)


def test_samples_are_one_ranked_row_and_still_each_a_matrix_row():
    """demo-samples-like: sample-1 passes, sample-2 fails; the ranking has two rows (not three), the sampled model's
    row says 2 samples with its range, and the grade matrix still shows each sample's own grade."""
    recs = records("s/sample-1", flash_attention) + records("s/sample-2", flash_attention, WRONG)
    recs += records("solo", flash_attention)
    summary = summarise(recs, [("s", "flash_attention"), ("solo", "flash_attention")])
    assert [row["model"] for row in summary["ranking"]] == ["solo", "s"]
    headers, rows = tables.ranking(summary)
    assert [r[1] for r in rows] == ["solo", "s"] and rows[1][headers.index("samples")] == "2 (0.00–4.30)"
    assert rows[1][headers.index("score")] == "2.15" and rows[1][headers.index("rank")] == 2
    assert [r[0] for r in tables.grade_matrix(summary)[1]] == ["solo", "s/sample-1", "s/sample-2"]
    assert summary["models"]["s/sample-2"]["rank"] == 2 and summary["models"]["s/sample-2"]["overall"] == "F"


def test_partial_selection_names_the_deselected_challenges():
    """-k that deselects every case of layer_norm_bwd: the header says so, and coverage is over the run's one
    challenge (before: "1 of 8" and nothing in the header)."""
    recs = records("m", flash_attention)
    summary = summarise(recs, [("m", "flash_attention"), ("m", "layer_norm_bwd")])
    assert summary["deselected"] == ["layer_norm_bwd"] and summary["run_challenges"] == ["flash_attention"]
    assert summary["ranking"][0]["coverage"] == "1 of 1"
    text = markdown.render(summary, [])
    line = "> **partial selection: -k/-m deselected every case of layer_norm_bwd;"
    assert line in text and text.index(line) < text.index("## Ranking")
    assert "averaged over the run's 1 challenge, a challenge not attempted counting 0" in text


def test_a_full_selection_says_nothing_about_deselection():
    """Every folder's challenge had a case selected: no deselection line."""
    recs = records("m", flash_attention) + records("m", layer_norm_bwd)
    summary = summarise(recs, [("m", "flash_attention"), ("m", "layer_norm_bwd")])
    assert summary["deselected"] == [] and tables.deselected_line(summary) == ""
    assert summary["ranking"][0]["coverage"] == "2 of 2"


def test_not_attempted_challenges_cost_their_share_of_the_score():
    """A model with one of the run's two challenges at A+ scores half of one with both at A+, same mean."""
    recs = records("both", flash_attention) + records("both", layer_norm_bwd) + records("one", flash_attention)
    summary = summarise(recs, [("both", "flash_attention"), ("both", "layer_norm_bwd"), ("one", "flash_attention")])
    rows = {row["model"]: row for row in summary["ranking"]}
    assert (rows["both"]["rank"], rows["both"]["score"], rows["both"]["mean_grade_points"]) == (1, 4.3, 4.3)
    assert (rows["one"]["rank"], rows["one"]["score"], rows["one"]["mean_grade_points"]) == (2, 2.15, 4.3)
