"""Rules as data and task profiles: every case's rules are defined beside its table, profiles are checked strictly,
and a profile decides which cases are the task's and which are beyond it."""

from __future__ import annotations

import pytest

from reference.challenges import all_challenges, reference_module
from reference.contract import Case, Challenge, undefined_rules

GRADED = [c for c in all_challenges() if c.entry_points]


@pytest.mark.parametrize("challenge", GRADED, ids=lambda c: c.id)
def test_every_rule_a_case_names_is_defined_in_its_module(challenge):
    """A case names only rules of its module's RULES, each with its one line; every RULES entry is used or stated."""
    module = reference_module(challenge.id)
    assert isinstance(module.RULES, dict) and all(isinstance(v, str) and v for v in module.RULES.values())
    assert undefined_rules(module.CASES, module.RULES) == {}


@pytest.mark.parametrize("challenge", GRADED, ids=lambda c: c.id)
def test_calls_and_contracts_name_real_entry_points(challenge):
    """``Case.calls`` names entry points of the case's variant; ``Case.contract`` a variant of the challenge."""
    for case in reference_module(challenge.id).CASES:
        assert not case.contract or case.contract in challenge.contracts, case.id
        assert set(case.calls) <= set(challenge.entry_points_of(case.contract)), case.id


def test_undefined_rules_are_found():
    """The check the test above relies on does find a rule the module never defined."""
    cases = [Case("a", "edge", "t", {}, rules=("tie-order",)), Case("b", "edge", "t", {}, rules=("typo",))]
    assert undefined_rules(cases, {"tie-order": "..."}) == {"b": ["typo"]}


def test_contract_variants():
    """A challenge with variants uses the first by default; without, its entry points are the one contract."""
    one = Challenge("x", "X", ("x",), ("f",))
    two = Challenge("y", "Y", ("y",), ("f",), contracts={"ours": ("f",), "theirs": ("g", "f")})
    assert (one.default_contract, one.entry_points_of()) == ("", ("f",))
    assert (two.default_contract, two.entry_points_of(), two.entry_points_of("theirs")) == ("ours", ("f",), ("g", "f"))
