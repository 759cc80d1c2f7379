"""The KV cache's own-model contract (reference/kv_cache_own.py): each metamorphic check fails on a model broken in
its way and only there, the memory figure comes from the grader's samples, and the demos grade as designed (the
correct one gets full marks; each broken copy is caught by the check meant for it, with its message)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from conftest import REPO, run_grader
from reference import kv_cache as kc
from reference import kv_cache_own as own
from reference.contract import ContractError

KV_TESTS = "tests/test_kvcache"
SEED = "20261130"
CORRECT = "demo-kv-own"
BROKEN = ("demo-kv-own-noncausal-prefill", "demo-kv-own-overwrite", "demo-kv-own-pos-off-by-one")
DECODE_MESSAGE = "decode_vs_forward: prefill and decode logits against the model's forward of each sequence alone"
SINGLE_TOKEN = "prompts of a single token"  # nothing to look ahead at: a non-causal prefill is right there
POSITIONS = "absolute positions after a prefill of p tokens (one token repeated)"
# Cases up to a few hundred tokens: the 2048-token and memory cases take no path of the judge the others miss.
SMALL = [c for c in own.CASES if max(c.params["lengths"]) + c.params["S"] <= 512 and not c.params.get("mem")]


def _load(path: Path) -> ModuleType:
    name = f"kvown_{path.parent.parent.name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


DEMO = _load(REPO / "submissions" / CORRECT / "kv_cache" / "model.py")


class InProcessRun:
    """The child's ``run`` in this process, for the judge's own tests (the grading runs below use the sandbox)."""

    contract_error = ContractError

    def __init__(self, entries: dict[str, Callable[..., Any]], services: dict[str, Any]):
        self.entries, self.services, self.checkpoints = entries, services, []

    def call(self, name: str, *args: Any, measure: bool = False) -> Any:
        return self.entries[name](*args)

    def unpack(self, value: Any, count: int, what: str) -> tuple[Any, ...]:
        return tuple(value)

    def service(self, name: str, arrays: dict[str, Any]) -> dict[str, Any]:
        return self.services[name](arrays)

    def checkpoint(self, label: str) -> None:
        self.checkpoints.append(label)


def figures(entries: dict[str, Callable[..., Any]], case: Any, seed: int = 0) -> tuple[dict[str, float], dict]:
    """Drive ``entries`` through one case in this process and judge the outputs as the grader does."""
    inputs = kc.make_inputs(case, np.random.default_rng(seed))
    services = kc.services(case, inputs)
    outputs = kc.drive(InProcessRun(entries, services), kc.child_inputs(case, inputs), dict(case.params))
    outputs.update(services["feed"].recorded())
    got, details = kc.expected(case, inputs).derive(outputs)
    return {k: float(v) for k, v in got.items()}, details


def entries(module: ModuleType = DEMO, **replaced: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    return {name: replaced.get(name, getattr(module, name)) for name in own.ENTRY_POINTS}


def _peeking_forward(model: Any, tokens: np.ndarray) -> np.ndarray:
    """Each position also sees the next token's logits (a forward without its causal mask, in effect)."""
    logits = DEMO.forward(model, tokens)
    return logits + 0.1 * np.concatenate([logits[:, 1:], logits[:, -1:]], axis=1)


def _mixing_forward(model: Any, tokens: np.ndarray) -> np.ndarray:
    """Rows leak into each other: a batch statistic taken over the batch axis."""
    logits = DEMO.forward(model, tokens)
    return logits + 0.1 * logits.mean(axis=0, keepdims=True)


def test_case_table_is_own_model_and_well_formed():
    """Unique ids, all of the own-model variant with its four entry points, the traps the issue names present."""
    ids = [c.id for c in own.CASES]
    assert len(ids) == len(set(ids)) and all(i.startswith("own-") for i in ids)
    assert all(c.contract == own.CONTRACT and c.calls == own.ENTRY_POINTS for c in own.CASES)
    assert kc.CHALLENGE.entry_points_of(own.CONTRACT) == own.ENTRY_POINTS and all(c in kc.CASES for c in own.CASES)
    assert any(1 in c.params["lengths"] and len(set(c.params["lengths"])) == 1 for c in own.CASES)  # 1-token prompts
    assert any(len(set(c.params["lengths"])) > 2 and c.params.get("w") for c in own.CASES)  # variable, padded
    assert max(c.params["S"] for c in own.CASES) >= 96 and any(c.params.get("mem") for c in own.CASES)


@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.id)
def test_correct_model_is_within_every_bound(case):
    """demo-kv-own's float32 model: every figure well inside its bound (under 0.1 of the allowed error)."""
    got, details = figures(entries(), case)
    assert set(got) == set(own.CHECKS) and max(got.values()) < 0.1, (got, details)
    assert details["logits dtype"] == "float32"


@pytest.mark.parametrize(
    ("check", "replaced"),
    [
        (
            "decode_vs_forward",
            {"decode_step": lambda m, t, c: (lambda r: (r[0] * 1.01, r[1]))(DEMO.decode_step(m, t, c))},
        ),
        ("forward_causality", {"forward": _peeking_forward}),
        ("forward_batch_vs_alone", {"forward": _mixing_forward}),
    ],
    ids=["decode-1pct-off", "forward-peeks-ahead", "forward-mixes-rows"],
)
def test_each_check_fails_on_its_broken_fixture(check, replaced):
    """A model broken in one way is over the bound of the check named for it (on the padded, variable-length case)."""
    case = next(c for c in own.CASES if c.params.get("w"))
    got, details = figures(entries(**replaced), case)
    assert got[check] > 1, (got, details)
    if check == "forward_causality":  # the worst error sits before the changed token, by construction of the check
        assert details[check]["position"] < kc.make_inputs(case, np.random.default_rng(0))["cut"][details[check]["row"]]


def test_unusable_outputs_leave_every_figure_unmeasured():
    """A missing forward output makes every figure NaN (never a pass) and says why."""
    case = SMALL[0]
    inputs = kc.make_inputs(case, np.random.default_rng(0))
    got, details = kc.expected(case, inputs).derive({"prefill_logits": np.zeros((1, own.VOCAB))})
    assert all(np.isnan(v) for v in got.values()) and "unusable" in details["unmeasured"]


def _samples(per_token: Callable[[int], float], prefill_bytes: int = 400_000) -> list[dict[str, Any]]:
    """Memory samples of the memory case: before prefill, then at each delivery, ``per_token(n)`` bytes held for
    the n tokens decoded so far."""
    case = next(c for c in own.CASES if c.params.get("mem"))
    base = 50_000_000
    points = [{"label": own.BEFORE_PREFILL, "bytes": base}]
    steps = case.params["S"]
    points += [
        {"label": f"feed {s + 1}", "bytes": int(base + prefill_bytes + per_token(2 * s))} for s in range(steps + 1)
    ]
    return points


def test_memory_ratio_comes_from_the_grader_samples():
    """Linear growth at the prefill's rate is about 1; quadratic growth is over the limit; a missing first sample is
    unmeasured (NaN)."""
    case = next(c for c in own.CASES if c.params.get("mem"))
    per_prompt_token = 400_000 / sum(case.params["lengths"])
    linear, _ = kc.measured_figures(case, {}, _samples(lambda n: per_prompt_token * n))
    assert 0.9 < float(linear["growth_ratio"]) < 1.1
    quadratic, _ = kc.measured_figures(case, {}, _samples(lambda n: per_prompt_token * n * n / 64))
    assert float(quadratic["growth_ratio"]) > own.MEMORY_RATIO
    missing, details = kc.measured_figures(case, {}, _samples(lambda n: 0.0)[1:])
    assert np.isnan(float(missing["growth_ratio"])) and own.BEFORE_PREFILL in details["unmeasured"]


# --- grading runs --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_roster(tmp_path_factory: pytest.TempPathFactory):
    """The correct own-model demo and its three broken copies, each under the scaffold profile of its folder."""
    models = ",".join((CORRECT, *BROKEN))
    return run_grader(tmp_path_factory.mktemp("kvown"), "--no-speed", "--seed", SEED, "--model", models, tests=KV_TESTS)


def _records(run, model: str) -> dict[str, dict[str, Any]]:
    return {r["guards"]: r for r in run.summary["cases"] if r["model"] == model}


def _failed_check(record: dict[str, Any]) -> set[str]:
    return {c["name"] for c in record["checks"] if not c["passed"]}


@pytest.mark.grading_run
def test_correct_own_model_demo_gets_full_marks(own_roster):
    """Every own-model case ran and passed (none of the grader-model cases was collected), and the letter is A+."""
    assert "INTERNALERROR" not in own_roster.output, own_roster.output[-3000:]
    records = _records(own_roster, CORRECT)
    assert set(records) == {c.guards for c in own.CASES}
    assert {r["outcome"] for r in records.values()} == {"passed"}, {g: r["message"] for g, r in records.items()}
    assert own_roster.letters()[CORRECT] == {"kv_cache": "A+"}


@pytest.mark.grading_run
def test_noncausal_prefill_is_caught_by_decode_vs_forward(own_roster):
    """Every case but single-token prompts fails decode_vs_forward alone, from the prefill's own logits."""
    records = _records(own_roster, "demo-kv-own-noncausal-prefill")
    failed = {g for g, r in records.items() if r["outcome"] != "passed"}
    assert failed == {c.guards for c in own.CASES} - {SINGLE_TOKEN}
    for guards in failed:
        record = records[guards]
        assert _failed_check(record) == {"decode_vs_forward"} and record["message"].startswith(DECODE_MESSAGE)


@pytest.mark.grading_run
def test_overwrite_is_caught_by_decode_vs_forward_after_the_first_step(own_roster):
    """Every case fails decode_vs_forward; its worst error is past the first decoded position (prefill + step 0
    are right)."""
    records = _records(own_roster, "demo-kv-own-overwrite")
    assert {r["outcome"] for r in records.values()} == {"wrong"}
    for guards, record in records.items():
        lengths = next(c for c in own.CASES if c.guards == guards).params["lengths"]
        worst = record["details"]["decode_vs_forward"]
        assert _failed_check(record) == {"decode_vs_forward"} and record["message"].startswith(DECODE_MESSAGE)
        assert worst["position"] >= lengths[worst["row"]] + 1


@pytest.mark.grading_run
def test_position_off_by_one_is_caught_in_the_positions_case(own_roster):
    """The absolute-positions case fails decode_vs_forward at a decoded position (prefill itself is right)."""
    records = _records(own_roster, "demo-kv-own-pos-off-by-one")
    assert {r["outcome"] for r in records.values()} == {"wrong"}
    record = records[POSITIONS]
    lengths = next(c for c in own.CASES if c.guards == POSITIONS).params["lengths"]
    worst = record["details"]["decode_vs_forward"]
    assert _failed_check(record) == {"decode_vs_forward"} and record["message"].startswith(DECODE_MESSAGE)
    assert worst["position"] >= lengths[worst["row"]]


@pytest.mark.grading_run
def test_a_cache_that_copies_its_keys_per_step_is_over_the_memory_limit(tmp_path):
    """demo-kv-own with one change, a copy of layer 0's keys kept per step (memory quadratic in the length), fails
    the memory case on growth_ratio alone, measured by the grader."""
    source = (REPO / "submissions" / CORRECT / "kv_cache" / "model.py").read_text()
    edits = (
        ("from dataclasses import dataclass\n", "from dataclasses import dataclass, field\n"),
        ("    lengths: np.ndarray  # (B,) tokens held per sequence\n",
         "    lengths: np.ndarray  # (B,) tokens held per sequence\n    history: list = field(default_factory=list)\n"),
        ("    cache.lengths = pos + 1\n",
         "    cache.history.append(cache.k[0][:, :, :span].copy())\n    cache.lengths = pos + 1\n"),
    )  # fmt: skip
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    folder = tmp_path / "submissions" / "kv-copies" / "kv_cache"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(source)
    (folder.parent / "kernelgrade-task.toml").write_text('task = "scaffold"\n')
    run = run_grader(
        tmp_path, f"--submissions-dir={tmp_path / 'submissions'}", "--no-speed", "-k", "mem", tests=KV_TESTS
    )
    (record,) = run.summary["cases"]
    assert record["outcome"] == "wrong" and _failed_check(record) == {"growth_ratio"}, record["message"]
    assert record["message"].startswith("growth_ratio: cache bytes per decoded token"), record["message"]
