"""Requirements tagged by origin: a rule the task never stated is shown, never scored, and reports say so."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.base.records import PASSED, CaseRecord
from reference import flash_attention as fwd
from reference import flash_attention_bwd as bwd
from reference import tasks
from reference.challenges import all_challenges, reference_module
from reference.contract import Case

# Every property of ours, per challenge: dtype preservation, strided inputs, the KV cache's optional requirements.
ADDED = {
    "flash_attention": {"b1-h2-n256-d64-t64-causal-strided", "b1-h2-n300-d64-t97-causal-f32-keep"},
    "flash_attention_bwd": {"b1-h2-n256-d64-t64-causal-strided", "b1-h2-n300-d64-t97-causal-f32-keep"},
    "layer_norm_bwd": {"b2-t64-d1023-eps1e-5-f32-keep", "b2-t64-d256-eps1e-5-strided"},
    "kv_cache": {"b4-p11.6.9.14-s6-h4-d64-l2-split", "b2-p9.14-s6-h4kv2-d64-l2"},
}
F32_KEEP = "b1-h2-n300-d64-t97-causal-f32-keep"  # the robustness case asking float32 outputs for float32 inputs


@pytest.mark.parametrize("rules", [("Tie-Order",), ("tie order",), "tie-order", ("",)], ids=repr)
def test_rule_names_are_validated(rules):
    """Rules are a tuple of lower-case hyphenated names (a bare string would be read letter by letter)."""
    with pytest.raises(ValueError, match="rule"):
        Case("x", "edge", "trap", {}, rules=rules)


def test_each_reference_tags_exactly_its_added_properties():
    """Across all contracts, the cases beyond our own prompts (the default profile) are these and only these,
    all robustness cases in their tables (none of them is ever scored under our own prompts)."""
    default = tasks.built_in()
    found = {}
    for challenge in all_challenges():
        cases = reference_module(challenge.id).CASES
        beyond = [c for c in cases if default.of(challenge.id).beyond(c)]
        assert all(c.category == "robustness" for c in beyond)
        if beyond:
            found[challenge.id] = {c.id for c in beyond}
    assert found == ADDED


@pytest.mark.parametrize("reference", [fwd, bwd], ids=lambda m: m.CHALLENGE.id)
def test_float32_precision_case_judges_values_whatever_dtype(reference):
    """The float32 precision case bounds values by float32 rounding and accepts any float dtype; only the added
    robustness case asks for float32 (the backward's L stays free there too)."""
    cases = {c.id: c for c in reference.CASES}
    precision, keep = cases["b1-h2-n300-d64-t97-causal-f32"], cases[F32_KEEP]
    assert (precision.category, precision.rules) == ("precision", ())
    assert (keep.category, keep.rules) == ("robustness", ("float32-stays-float32",))
    inputs = reference.make_inputs(precision, np.random.default_rng(0))
    loose, strict = reference.expected(precision, inputs).bounds, reference.expected(keep, inputs).bounds
    assert all(b.dtype is None for b in loose.values())
    assert {n: b.dtype for n, b in strict.items()} == {n: None if n == "L" else "float32" for n in strict}
    # The same float32 tolerance in both: only the dtype requirement differs.
    assert all((loose[n].atol, loose[n].rtol) == (strict[n].atol, strict[n].rtol) for n in loose)
    assert loose[next(iter(loose))].rtol == reference.TOLERANCES["float32"].rtol


def test_case_record_carries_the_origin():
    """for_case tags a case beyond the default task "added", with its rules; an older record without the fields
    loads as the task's."""
    case = next(c for c in fwd.CASES if c.id == F32_KEEP)
    record = CaseRecord.for_case("m", "flash_attention", case, 0, PASSED)
    assert record.origin == "added" and record.to_dict()["origin"] == "added"
    assert (record.beyond, record.task, record.category) == (["float32-stays-float32"], "kernelgrade", "robustness")
    new_fields = {"origin", "rules", "beyond", "task"}
    old = {k: v for k, v in record.to_dict().items() if k not in new_fields}
    assert CaseRecord.from_dict(old).origin == "task"
    dropped = record.to_dict() | {"table_category": "core"}  # a field of an older version, no longer written
    assert CaseRecord.from_dict(dropped) == record


@pytest.mark.grading_run
def test_float64_outputs_lose_only_the_added_dtype_cases(roster):
    """demo-f64-out (float64 back for float32 inputs) keeps every core, edge and precision point: it fails exactly the
    two robustness cases that ask float32 to stay float32, each tagged "added" and not scored, and stays A+."""
    grades = roster.summary["models"]["demo-f64-out"]["challenges"]
    failed = {(ch, f["case"], f["origin"]) for ch, g in grades.items() for f in g["failed"]}
    assert failed == {("flash_attention", F32_KEEP, "added"), ("flash_attention_bwd", F32_KEEP, "added")}
    for grade in grades.values():
        assert grade["letter"] == "A+" and grade["points"] == 100.0
        assert all(c["passed"] == c["cases"] for c in grade["categories"].values())  # what is scored all passed
        kept = [grade["categories"][c] for c in ("core", "edge", "precision")]
        assert all(c["passed"] == c["cases"] for c in kept)
    record = roster.records()[("demo-f64-out", "flash_attention", F32_KEEP)]
    assert record["origin"] == "added" and "dtype float64, expected float32" in record["message"]


@pytest.mark.grading_run
def test_reports_show_the_origin_beside_failed_cases(roster):
    """grades.md and report.html tag each failed case: a task case as the task's, one beyond the task (a rule the
    default profile does not state) with its rule, as not scored."""
    text = (roster.reports / "grades.md").read_text()
    beyond = "wrong [beyond the task (float32-stays-float32): not scored]"
    assert f"**demo-f64-out** `{F32_KEEP}` (float32 stays float32 (never stated by the task)): {beyond}" in text
    assert "**demo-buggy** `b1-h2-n300-d64-t97-causal` (uneven final tile): wrong [task]" in text
    pytest.importorskip("pytest_html")
    html = (roster.reports / "report.html").read_text()
    assert beyond in html and "wrong [task]" in html
