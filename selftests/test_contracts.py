"""Every challenge's contract module, checked the same way (issue 20's conformance test): found by discovery, never
listed, so a ninth challenge is checked by adding it.

A contract module is ``reference/<id>.py`` with ``CHALLENGE``, ``CASES``, ``make_inputs``, ``expected`` and ``drive``
(``reference/contract.py`` says what each is). Each check below returns what is wrong with one module (empty: it
conforms), so the same function runs on every real module and on a deliberately broken one:

- the case table: unique readable ids, a known category and a named trap for every case, core and edge cases, every
  case's variant and calls real;
- rules: every rule a case names is defined in ``RULES`` with a line saying what it is, and every one defined is used;
- tolerances: ``Tolerance`` values with reasons, never bare numbers;
- signatures: every entry point of every contract variant has its contract line in ``SIGNATURES`` (or its C
  declaration in ``C_SIGNATURES``), and the module docstring, where it writes the line too, says the same;
- the speed baseline: a module with speed cases names what they are timed against (``SPEED_BASELINE``, functions of
  the module) or times its own baselines in the child (``speed_baselines``);
- the spec's prompt (``docs/challenges/<id>.md`` above its marker) writes every entry point of the default contract as
  the contract does, every folder name and accepted spelling;
- the truth: the same seed gives the same inputs and the same ``expected``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from plugins.cli import scaffold
from plugins.cli.signatures import parse_line
from plugins.isolate import child
from plugins.isolate.plugin import _own_entries
from plugins.isolate.runtimes.cuda import parse_signature
from reference import flash_attention, kv_cache, softmax_topk
from reference.challenges import all_challenges, reference_module
from reference.contract import CATEGORIES, Challenge, Tolerance, undefined_rules

CONTRACTS = [c for c in all_challenges() if c.entry_points or c.contracts]
CASE_ID = re.compile(r"[a-z0-9][a-z0-9.+\-]*")
REQUIRED = ("CHALLENGE", "CASES", "make_inputs", "expected", "drive")
Problems = list[str]


def every_entry_point(challenge: Challenge) -> tuple[str, ...]:
    """The entry points of every contract variant, each once, in order."""
    return tuple(dict.fromkeys((*challenge.entry_points, *(e for v in challenge.contracts.values() for e in v))))


def case_table_problems(module: Any) -> Problems:
    """Unique readable ids; a known category and a named trap for every case; core and edge cases present; a case's
    variant is one of the challenge's and the entry points it calls belong to that variant."""
    challenge, ids = module.CHALLENGE, [case.id for case in module.CASES]
    problems = [f"case id {i!r} twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    problems += [f"case id {i!r} is not lower-case words and sizes" for i in ids if not CASE_ID.fullmatch(i)]
    for case in module.CASES:
        if case.category not in CATEGORIES or not case.guards.strip():
            problems.append(f"{case.id}: category {case.category!r} and guards {case.guards!r}")
        if case.contract and case.contract not in challenge.contracts:
            problems.append(f"{case.id}: no contract variant {case.contract!r}")
        elif foreign := sorted(set(case.calls) - set(challenge.entry_points_of(case.contract))):
            problems.append(f"{case.id}: calls {foreign}, not entry points of its contract")
    missing = {"core", "edge"} - {case.category for case in module.CASES}
    return problems + ([f"no {', '.join(sorted(missing))} case"] if missing else [])


def rule_problems(module: Any) -> Problems:
    """A case's rules (what it depends on beyond the core maths) are keys of the module's RULES, each with a line that
    says what the rule is; a rule no case uses is not listed."""
    rules = getattr(module, "RULES", {})
    named = {rule for case in module.CASES for rule in case.rules}
    problems = [f"{case}: undefined rules {bad}" for case, bad in undefined_rules(module.CASES, rules).items()]
    problems += [
        f"rule {r}: no line saying what it is" for r, t in rules.items() if not (isinstance(t, str) and len(t) > 20)
    ]
    return problems + [f"rule {r}: no case depends on it" for r in sorted(set(rules) - named)]


def tolerance_problems(module: Any) -> Problems:
    """A tolerance is data with its reason (the contract's ``Tolerance``), never a bare number."""
    return [
        f"tolerance {name}: not a Tolerance with a reason"
        for name, tolerance in getattr(module, "TOLERANCES", {}).items()
        if not isinstance(tolerance, Tolerance) or not tolerance.reason.strip()
    ]


def signature_problems(module: Any) -> Problems:
    """Every entry point of every variant has its contract line ``name(args) -> returns`` in ``SIGNATURES`` (a
    Python parameter list), or its C declaration in ``C_SIGNATURES``; ``SIGNATURES`` names no other function."""
    lines, declared = getattr(module, "SIGNATURES", {}), getattr(module, "C_SIGNATURES", {})
    entry_points, problems = every_entry_point(module.CHALLENGE), []
    for name in entry_points:
        if name in lines:
            found = parse_line(lines[name], name)
            if found is None or found.line != " ".join(lines[name].split()) or not found.arg_names():
                problems.append(f"{name}: {lines[name]!r} is not a contract line name(args) -> returns")
        elif name not in declared:
            problems.append(f"{name}: no signature (SIGNATURES, or C_SIGNATURES for CUDA C++)")
    return problems + [f"SIGNATURES names {name}, no entry point" for name in lines if name not in entry_points]


def docstring_problems(module: Any) -> Problems:
    """Where the module docstring writes an entry point's contract line (a line starting ``name(``), it is the line
    ``SIGNATURES`` holds, whitespace aside: one contract, however often it is written down."""
    doc, problems = module.__doc__ or "", []
    for name, line in getattr(module, "SIGNATURES", {}).items():
        want = " ".join(line.split())
        for match in re.finditer(rf"(?m)^[ \t]*{re.escape(name)}\(", doc):
            written = " ".join(doc[match.start() :].split())
            if not re.match(re.escape(want) + r"(\s|$)", written):
                problems.append(f"the docstring writes {written[: len(want) + 10]!r}..., SIGNATURES {want!r}")
    return problems


def speed_baseline_problems(module: Any) -> Problems:
    """A module with speed cases names what they are timed against: ``SPEED_BASELINE`` maps every entry point a speed
    case calls to a function of the module, or the module times its own baselines in the child (``speed_baselines``)."""
    challenge, baseline = module.CHALLENGE, getattr(module, "SPEED_BASELINE", None)
    speed = [case for case in module.CASES if case.is_speed]
    if baseline is None:
        timed_in_child = callable(getattr(module, "speed_baselines", None))
        return [] if timed_in_child or not speed else ["speed cases and neither SPEED_BASELINE nor speed_baselines"]
    problems = [
        f"SPEED_BASELINE {e}: {f!r} is no function of the module"
        for e, f in baseline.items()
        if not callable(getattr(module, f, None))
    ]
    for case in speed:
        calls = case.calls or challenge.entry_points_of(case.contract)
        problems += [f"{case.id}: {name} has no baseline" for name in calls if name not in baseline]
    return problems + [
        f"SPEED_BASELINE names {e}, no entry point" for e in baseline if e not in every_entry_point(challenge)
    ]


def prompt_problems(module: Any, prompt: str) -> Problems:
    """The spec's prompt writes every entry point of the default contract as the contract does (the Python argument
    list of ``SIGNATURES``; for CUDA C++ the exact ``extern "C"`` declaration of ``C_SIGNATURES``), every folder name
    and every accepted spelling."""
    challenge, prompt = module.CHALLENGE, " ".join(prompt.split())
    lines, declared, problems = getattr(module, "SIGNATURES", {}), getattr(module, "C_SIGNATURES", {}), []
    for name in challenge.entry_points_of():
        if name in declared:
            symbol, params = parse_signature(declared[name])
            exact = f'extern "C" int {symbol}(' + ", ".join(f"{kind} {p}" for kind, p in params) + ");"
            problems += [] if symbol == name and exact in prompt else [f"the prompt lacks {exact}"]
        if name in lines and (found := parse_line(lines[name], name)) and f"{name}({found.params})" not in prompt:
            problems.append(f"the prompt does not write {name}({found.params}) as the contract does")
        if f"{name}(" not in prompt:
            problems.append(f"the prompt never names {name}")
    problems += [f"folder name {f} not given" for f in challenge.folder_names if f"`{f}`" not in prompt]
    spellings = [s for names in challenge.aliases.values() for s in names]
    return problems + [f"spelling {s} not given" for s in spellings if not re.search(rf"\b{s}\b", prompt)]


def cheapest_case(module: Any) -> Any:
    """The smallest correctness case by input size at a fixed seed (the determinism check stays quick)."""
    cases = [c for c in module.CASES if not c.is_speed and not c.params.get("build")]

    def size(case: Any) -> int:
        inputs = module.make_inputs(case, np.random.default_rng(0))
        return sum(np.asarray(v).size for v in inputs.values() if isinstance(v, np.ndarray))

    return min(cases[:6], key=size)


def determinism_problems(module: Any) -> Problems:
    """The same seed gives the same inputs and the same truth, twice: the truth is a function of the inputs."""
    case = cheapest_case(module)
    first, second = (module.make_inputs(case, np.random.default_rng(7)) for _ in range(2))
    if first.keys() != second.keys():
        return [f"{case.id}: inputs {sorted(first)} then {sorted(second)}"]
    problems = [f"{case.id}: input {k} differs at one seed" for k in first if not _same(first[k], second[k])]
    truth, again = module.expected(case, first), module.expected(case, second)
    return problems + [
        f"{case.id}: truth {k} differs at one seed" for k, v in truth.values.items() if not _same(v, again.values[k])
    ]


def _same(a: Any, b: Any) -> bool:
    try:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    except AssertionError:
        return False
    return True


def spec_prompt(challenge_id: str) -> str:
    """The prompt part of a challenge's spec, as ``kernelgrade new`` hands it to a model."""
    return scaffold.prompt_of(scaffold.spec_path(challenge_id).read_bytes()).decode()


CHECKS: dict[str, Callable[[Any], Problems]] = {
    "case-table": case_table_problems,
    "rules": rule_problems,
    "tolerances": tolerance_problems,
    "signatures": signature_problems,
    "docstring": docstring_problems,
    "speed-baseline": speed_baseline_problems,
    "prompt": lambda module: prompt_problems(module, spec_prompt(module.CHALLENGE.id)),
    "determinism": determinism_problems,
}


def by_id(challenge: Challenge) -> str:
    return challenge.id


@pytest.fixture(params=CONTRACTS, ids=by_id)
def module(request: pytest.FixtureRequest) -> ModuleType:
    return reference_module(request.param.id)


def test_every_graded_challenge_is_checked() -> None:
    """Discovery finds the contract modules (no count written down: a ninth is checked by being added); each one has
    the pieces the grader calls."""
    assert CONTRACTS
    for challenge in CONTRACTS:
        missing = [name for name in REQUIRED if not hasattr(reference_module(challenge.id), name)]
        assert not missing, (challenge.id, missing)


@pytest.mark.parametrize("check", CHECKS)
def test_the_contract_conforms(module: ModuleType, check: str) -> None:
    """The module passes the check (see the module docstring for what each one holds it to)."""
    assert CHECKS[check](module) == []


def broken(module: ModuleType, **changes: Any) -> SimpleNamespace:
    """A copy of a contract module with some of its pieces replaced: a contract broken on purpose."""
    pieces = {name: getattr(module, name) for name in dir(module) if not name.startswith("__")}
    return SimpleNamespace(**{**pieces, "__doc__": module.__doc__, **changes})


FA, FA_CASE = flash_attention, flash_attention.CASES[0]
FA_LINE = FA.SIGNATURES["flash_attention_fwd"]
TOPK_DECLARATION = softmax_topk.C_SIGNATURES["softmax_topk"]
BROKEN = {
    "case-table": [
        broken(FA, CASES=(*FA.CASES, FA_CASE)),  # one id twice
        broken(FA, CASES=(replace(FA_CASE, id="B2-H8"), *FA.CASES[1:])),  # an id that is not lower case
        broken(FA, CASES=(replace(FA_CASE, guards=" "), *FA.CASES[1:])),  # no trap named
        broken(FA, CASES=(replace(FA_CASE, calls=("flash_attention_bwd",)), *FA.CASES[1:])),  # not this contract's
        broken(FA, CASES=(replace(FA_CASE, contract="own-model"), *FA.CASES[1:])),  # no such variant
        broken(FA, CASES=tuple(c for c in FA.CASES if c.category != "edge")),  # no edge case
    ],
    "rules": [
        broken(FA, CASES=(replace(FA_CASE, rules=("undefined-rule",)), *FA.CASES[1:])),
        broken(FA, RULES={**FA.RULES, "unused-rule": "a rule that no case of the table depends on"}),
        broken(kv_cache, RULES={**kv_cache.RULES, next(iter(kv_cache.RULES)): "short"}),
    ],
    "tolerances": [
        broken(FA, TOLERANCES={**FA.TOLERANCES, "float64": 1e-9}),  # a bare number
        broken(FA, TOLERANCES={**FA.TOLERANCES, "float64": replace(FA.TOLERANCES["float64"], reason=" ")}),
    ],
    "signatures": [
        broken(FA, SIGNATURES={}),  # an entry point without its line
        broken(FA, SIGNATURES={"flash_attention_fwd": "flash_attention(Q, K, V) -> O"}),  # another name
        broken(FA, SIGNATURES={"flash_attention_fwd": "flash_attention_fwd(Q, K, V -> O"}),  # does not close
        broken(FA, SIGNATURES={**FA.SIGNATURES, "helper": "helper(x) -> y"}),  # no entry point
        broken(kv_cache, SIGNATURES={k: v for k, v in kv_cache.SIGNATURES.items() if k != "forward"}),  # a variant's
        broken(softmax_topk, C_SIGNATURES={}),  # CUDA C++ without its declaration
    ],
    "docstring": [broken(FA, SIGNATURES={"flash_attention_fwd": FA_LINE.replace("causal=True", "causal=False")})],
    "speed-baseline": [
        broken(FA, SPEED_BASELINE=None),  # speed cases timed against nothing named
        broken(FA, SPEED_BASELINE={}),  # the entry point the speed case calls has no baseline
        broken(FA, SPEED_BASELINE={"flash_attention_fwd": "no_such_function"}),
        broken(FA, SPEED_BASELINE={"flash_attention_fwd": "TOLERANCES"}),  # not callable
        broken(softmax_topk, speed_baselines=None),  # CUDA speed cases with no baselines timed in the child
    ],
    "prompt": [
        broken(FA, SIGNATURES={"flash_attention_fwd": FA_LINE.replace("tile_size", "tile")}),  # another argument list
        broken(FA, CHALLENGE=replace(FA.CHALLENGE, folder_names=(*FA.CHALLENGE.folder_names, "attention"))),
        broken(FA, CHALLENGE=replace(FA.CHALLENGE, aliases={"flash_attention_fwd": ("attention_forward",)})),
        broken(FA, CHALLENGE=replace(FA.CHALLENGE, entry_points=(*FA.CHALLENGE.entry_points, "attention_lse"))),
        broken(softmax_topk, C_SIGNATURES={"softmax_topk": TOPK_DECLARATION.replace("int k", "int top_k")}),
    ],
    "determinism": [
        broken(FA, make_inputs=lambda case, rng: FA.make_inputs(case, np.random.default_rng())),  # ignores the seed
        broken(FA, expected=lambda case, inputs: FA.expected(case, {**inputs, "Q": inputs["Q"] + np.random.rand()})),
    ],
}


@pytest.mark.parametrize(
    ("check", "contract"),
    [(c, m) for c, ms in BROKEN.items() for m in ms],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_each_check_finds_a_broken_contract(check: str, contract: SimpleNamespace) -> None:
    """Every check says what is wrong with a contract broken on purpose (so a pass on the real modules means
    something)."""
    assert CHECKS[check](contract), f"{check} found nothing wrong"


def test_every_check_is_tried_on_a_broken_contract() -> None:
    """No check goes without a broken contract that it must find."""
    assert set(BROKEN) == set(CHECKS) and all(BROKEN.values())


def test_speed_cases_are_timed_against_the_function_the_module_names() -> None:
    """The baseline child calls the function ``SPEED_BASELINE`` names for an entry point, not the one that happens
    to share its name."""

    def reference_attention() -> str:
        return "the baseline"

    module = SimpleNamespace(
        SPEED_BASELINE={"flash_attention_fwd": "reference_attention"},
        reference_attention=reference_attention,
        flash_attention_fwd=lambda: "a helper of the same name",
    )
    config = {"entries_from_driver": True, "entries": dict(_own_entries(module))}
    assert child._import_entries(config, module) == {"flash_attention_fwd": reference_attention}
