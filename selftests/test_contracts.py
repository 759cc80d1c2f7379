"""Every challenge's contract module, checked the same way (issue 20's conformance test): found by discovery, never
listed, so a ninth challenge is checked by adding it.

A contract module is ``reference/<id>.py`` with ``CHALLENGE``, ``CASES``, ``make_inputs``, ``expected`` and ``drive``;
its cases name a category, the trap they guard against and the rules beyond the core maths they depend on (each rule
explained in ``RULES``); its tolerances carry reasons; and its truth is a function of the inputs alone.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from reference.challenges import all_challenges, reference_module
from reference.contract import CATEGORIES, Challenge

CONTRACTS = [c for c in all_challenges() if c.entry_points or c.contracts]
CASE_ID = re.compile(r"[a-z0-9][a-z0-9.+\-]*")
REQUIRED = ("CHALLENGE", "CASES", "make_inputs", "expected", "drive")


def by_id(challenge: Challenge) -> str:
    return challenge.id


@pytest.fixture(params=CONTRACTS, ids=by_id)
def module(request: pytest.FixtureRequest) -> Any:
    return reference_module(request.param.id)


def test_every_graded_challenge_is_checked() -> None:
    """Discovery finds the contract modules (no count written down: a ninth is checked by being added); each one has
    the pieces the grader calls."""
    assert CONTRACTS
    for challenge in CONTRACTS:
        missing = [name for name in REQUIRED if not hasattr(reference_module(challenge.id), name)]
        assert not missing, (challenge.id, missing)


def test_case_table_is_well_formed(module: Any) -> None:
    """Unique readable ids; a known category and a named trap for every case; core and edge cases present."""
    ids = [case.id for case in module.CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert all(CASE_ID.fullmatch(i) for i in ids), [i for i in ids if not CASE_ID.fullmatch(i)]
    assert all(case.category in CATEGORIES and case.guards.strip() for case in module.CASES)
    assert {"core", "edge"} <= {case.category for case in module.CASES}


def test_every_rule_a_case_names_is_explained(module: Any) -> None:
    """A case's rules (what it depends on beyond the core maths) are keys of the module's RULES, each with a line that
    says what the rule is; a rule no case uses is not listed."""
    rules = getattr(module, "RULES", {})
    named = {rule for case in module.CASES for rule in case.rules}
    assert named <= set(rules), sorted(named - set(rules))
    assert all(isinstance(text, str) and len(text) > 20 for text in rules.values())
    assert set(rules) <= named, sorted(set(rules) - named)


def test_tolerances_have_reasons(module: Any) -> None:
    """A tolerance is data with its reason (the contract's ``Tolerance``), never a bare number."""
    for name, tolerance in getattr(module, "TOLERANCES", {}).items():
        assert getattr(tolerance, "reason", "").strip(), name


def test_cases_call_entry_points_of_their_contract(module: Any) -> None:
    """The entry points a case calls belong to the contract variant it is written for."""
    challenge = module.CHALLENGE
    for case in module.CASES:
        assert set(case.calls) <= set(challenge.entry_points_of(case.contract)), case.id


def cheapest_case(module: Any) -> Any:
    """The smallest correctness case by input size at a fixed seed (the determinism check stays quick)."""
    cases = [c for c in module.CASES if not c.is_speed and not c.params.get("build")]

    def size(case: Any) -> int:
        inputs = module.make_inputs(case, np.random.default_rng(0))
        return sum(np.asarray(v).size for v in inputs.values() if isinstance(v, np.ndarray))

    return min(cases[:6], key=size)


def test_inputs_and_truth_depend_on_the_seed_alone(module: Any) -> None:
    """The same seed gives the same inputs and the same truth, twice: the truth is a function of the inputs."""
    case = cheapest_case(module)
    first = module.make_inputs(case, np.random.default_rng(7))
    second = module.make_inputs(case, np.random.default_rng(7))
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=f"{case.id}: input {key}")
    truth, again = module.expected(case, first), module.expected(case, second)
    for name, value in truth.values.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(again.values[name]), err_msg=f"{case.id}: {name}")
