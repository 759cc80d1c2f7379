"""Batched beam search: contract, spec-faithful reference, input generator and hidden cases.

Contract (every argument passed positionally)::

    batched_beam_search(prompts, beam_width, max_new_tokens, alpha, eos_token_id, model) -> results

- ``prompts``: a list of B 1-D int64 NumPy arrays, lengths 1 or more and possibly all different; never modified.
- ``beam_width`` K >= 1, ``max_new_tokens`` >= 1, ``alpha`` a float >= 0, ``eos_token_id`` an int in [0, V).
- ``model``: a grader-owned model (``reference/toy_lm.py``): ``model.log_probs(tokens)`` gives the next-token
  log-probabilities after the last position, float64 (V,) for tokens (T,) or (n, V) for (n, T);
  ``model.forward(tokens, mask=None)`` gives logits (T, V) or (n, T, V), and a query's position is the number of keys
  its mask lets it attend minus one, so left padding that the mask hides gives the same logits. ``model.vocab_size``
  is V.
- ``results``: a list of B lists; item b holds the final pool as ``(tokens, score)`` pairs, best first: K of them
  (fewer only if fewer than K candidates ever exist), ``tokens`` the generated tokens without the prompt (1-D ints,
  ending with EOS when the beam finished), ``score`` a float.

Semantics, for each batch item on its own (a batch changes nothing), all arithmetic in float64:

1. The pool starts as one empty, unfinished beam with log-prob 0.0.
2. At step t = 1 .. max_new_tokens, each unfinished beam of the pool is expanded: ``lp`` = the model's next-token
   log-probs after prompt + its tokens; it proposes the 2K tokens of highest ``lp`` (ties: lower token id first); each
   proposal is a candidate with tokens + (token,), log-prob = beam log-prob + lp[token] (accumulated in generation
   order from 0.0), finished iff token == eos. The EOS token's own log-prob is counted and it counts in the length.
   Each finished beam of the pool is also a candidate, unchanged: it stays in the pool competing for the K slots.
3. score = log-prob / len(tokens) ** alpha (alpha 0: the raw log-prob).
4. The new pool is the K best candidates by score. **Ties** (equal float64 scores): the lexicographically smaller
   token sequence ranks first (token ids compared from the first generated token; a proper prefix would rank first).
5. Decoding stops after step max_new_tokens, or after a step whose pool holds only finished beams ("all K best are
   finished": every beam of the new pool ends with EOS). From then on the pool could not change, so the early stop
   is an optimisation and never changes a result. Beams still unfinished at max_new_tokens are returned as they are.
6. The result is the final pool, best first (the order of step 4).

K = 1 with alpha 0 is greedy decoding that stops after EOS.

Graded by recomputation, since beams of exactly equal score make more than one result right: the returned scores in
their order must equal the reference's best K within 1e-9 (TOLERANCES); the grader rescores every returned sequence
itself, from its own copy of the model and the returned tokens, and those scores must equal the reference's best K
too; and every returned sequence must be a valid, distinct beam (tokens in [0, V), EOS only last, an unfinished beam
only at max_new_tokens, as many beams as the reference's pool). The token sequences themselves, and so the order and
choice among equal scores, are compared exactly only in cases that name the rule ``tie-order`` (RULES). The driver
pads each item's beams into a (K, max_new_tokens) matrix filled with -1, one row per item ("configuration") of every
call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reference import toy_lm
from reference.beam_rescore import rescore
from reference.beam_scenarios import scripted_model
from reference.contract import Bound, Case, Challenge, Exact, Expected, Tolerance, Verified

CHALLENGE = Challenge(
    id="beam_search",
    title="Batched beam search",
    folder_names=("beam_search",),
    entry_points=("batched_beam_search",),
)

# Each entry point's contract line, as prompts, `kernelgrade check` and skeletons show it (the docstring's lines above
# say the same; the contracts self-test holds them together).
SIGNATURES = {
    "batched_beam_search": (
        "batched_beam_search(prompts, beam_width, max_new_tokens, alpha, eos_token_id, model) -> results"
    ),
}

TOLERANCES = {
    "scores": Tolerance(
        atol_floor=1e-9,
        rtol=1e-9,
        baseline_factor=0.0,
        reason="a score is a float64 sum of at most max_new_tokens log-probs divided by a power of the length: another "
        "summation order or a log-softmax of the logits differs by about 1e-14; a wrong beam or a dropped EOS "
        "log-prob errs by 1e-2 or more",
    ),
    "rescored": Tolerance(
        atol_floor=1e-9,
        rtol=1e-9,
        baseline_factor=0.0,
        reason="the grader rescores a returned sequence by adding the model's log-probs of its tokens in generation "
        "order, as the reference does, so the reference's own beams rescore to within rounding (1e-15) of their "
        "scores; a sequence whose score ties a reference beam's in exact arithmetic (the same log-probs added in "
        "another order) differs by a few ulps; a sequence that is not among the best K differs by 1e-3 or more here",
    ),
}

# Rules beyond the search's maths that a case may depend on (Case.rules); a task profile says which its prompts state.
RULES = {
    "tie-order": "among candidates of exactly equal score the lexicographically smaller token sequence ranks first, "
    "and among proposals of equal log-prob the lower token id: which beams survive a tie, and their order",
}
# What the tie rule decides: the tokens among equal scores; the scores, the grader's rescoring and the pool are every
# prompt's, so a case beyond the task is still graded on those (contract.governed_checks).
RULE_CHECKS = {"tie-order": ("tokens", "tokens_alone")}

# The toy transformer behind the non-scripted cases: 64 tokens keep EOS among a beam's 2K proposals often enough for
# beams to finish at every depth, and a 64-position table covers prompt + generated tokens.
TOY_SIZES = {"vocab_size": 64, "d_model": 32, "n_heads": 4, "n_layers": 2, "max_len": 64}


@dataclass(frozen=True)
class Beam:
    tokens: tuple[int, ...]
    logp: float
    finished: bool

    def score(self, alpha: float) -> float:
        return self.logp / len(self.tokens) ** alpha


def proposals(lp: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` tokens of highest log-prob, ties by lower token id."""
    return np.lexsort((np.arange(lp.size), -lp))[:count]


def beam_search(prompt: np.ndarray, k: int, max_new: int, alpha: float, eos: int, model: Any) -> list[Beam]:
    """One batch item, exactly as the module docstring says: the final pool, best first."""
    pool = [Beam((), 0.0, False)]
    for _ in range(max_new):
        candidates = []
        for beam in pool:
            if beam.finished:
                candidates.append(beam)
                continue
            lp = model.log_probs(np.concatenate([prompt, np.array(beam.tokens, dtype=np.int64)]))
            for token in proposals(lp, 2 * k):
                candidates.append(Beam((*beam.tokens, int(token)), beam.logp + float(lp[token]), int(token) == eos))
        pool = sorted(candidates, key=lambda b: (-b.score(alpha), b.tokens))[:k]
        if all(b.finished for b in pool):
            break
    return pool


def batched_beam_search(
    prompts: Sequence[np.ndarray], beam_width: int, max_new_tokens: int, alpha: float, eos_token_id: int, model: Any
) -> list[list[tuple[np.ndarray, float]]]:
    """The contract's entry point, item by item (the reference; a batch changes nothing)."""
    results = []
    for prompt in prompts:
        pool = beam_search(prompt, beam_width, max_new_tokens, alpha, eos_token_id, model)
        results.append([(np.array(b.tokens, dtype=np.int64), b.score(alpha)) for b in pool])
    return results


def greedy(prompt: np.ndarray, max_new: int, eos: int, model: Any) -> tuple[tuple[int, ...], float]:
    """Greedy decoding that stops after EOS: (tokens, summed log-prob). What K = 1, alpha = 0 must return."""
    tokens: list[int] = []
    logp = 0.0
    while len(tokens) < max_new and (not tokens or tokens[-1] != eos):
        lp = model.log_probs(np.concatenate([prompt, np.array(tokens, dtype=np.int64)]))
        tokens.append(int(proposals(lp, 1)[0]))
        logp += float(lp[tokens[-1]])
    return tuple(tokens), logp


def case(category: str, guards: str, case_id: str, rules: tuple[str, ...] = (), **params: Any) -> Case:
    return Case(case_id, category, guards, params, rules=rules)


CASES = (
    case(
        "core",
        "K = 1 with alpha 0 equals greedy decoding",
        "greedy-k1-a0",
        lengths=[4, 7],
        k=1,
        max_new=12,
        alpha=0.0,
        greedy=True,
    ),
    # Lengths 3 and 5: a batched submission must pad or group, and the shorter prompt must not see the padding.
    case(
        "core",
        "each item alone equals the same item in a batch",
        "alone-vs-batched-len3-len5",
        lengths=[3, 5],
        k=3,
        max_new=8,
        alpha=0.6,
        alone=True,
    ),
    case(
        "core",
        "a batch of four prompts of different lengths",
        "b4-k4-a0.6",
        lengths=[2, 6, 9, 13],
        k=4,
        max_new=10,
        alpha=0.6,
    ),
    # 80 calls of 1-4 prompts (lengths 1-10), K 1-5, max_new 1-8, alpha 0 / 0.6 / 1 / uniform(0, 1.5); EOS is one of
    # the model's six most frequent greedy tokens in 3 calls of 4 (beams end at every depth), else any token.
    case("core", "many seeded random configurations", "random-80-calls", configs=80),
    case("edge", "an ended beam (-3.0) beats a continuing one (-5.0)", "ended-beats-continuing", scripted="ended"),
    case("edge", "the EOS token's own log-prob is counted", "eos-logprob-counted", scripted="eos_logprob"),
    # One scenario, three alphas: finished beams of lengths 1, 2 and 4 come out in three different orders.
    *(
        case("edge", f"length-penalty ordering, alpha {a}", f"length-penalty-a{a}", scripted="length", alpha=a)
        for a in (0.0, 0.6, 1.0)
    ),
    case(
        "edge",
        "max_new_tokens reached with every beam unfinished",
        "max-new-unfinished",
        lengths=[4, 6],
        k=3,
        max_new=6,
        alpha=0.6,
        eos="never",
    ),
    case("edge", "every beam finished before max_new_tokens", "all-finished-early", scripted="all_finished"),
    # The same scenario twice: any K of the equally scored sequences, in any order among themselves, is right; only
    # the tie rule picks the lexicographically smallest, in order.
    case("edge", "exact score ties: K beams of the tied best score", "ties-any-order", scripted="ties"),
    case(
        "edge",
        "equal scores: the lexicographically smaller sequence first",
        "ties-lexicographic",
        rules=("tie-order",),
        scripted="ties",
    ),
    case("edge", "one-token prompts and a single step", "len1-max-new1", lengths=[1, 1, 3], k=4, max_new=1, alpha=1.0),
    case("edge", "beam width 1 with a length penalty", "k1-a1", lengths=[1, 8], k=1, max_new=9, alpha=1.0),
)


def _prompts(rng: np.random.Generator, lengths: Sequence[int], vocab: int) -> list[np.ndarray]:
    return [rng.integers(0, vocab, int(n)).astype(np.int64) for n in lengths]


def _frequent_tokens(model: Any, rng: np.random.Generator, count: int = 6) -> np.ndarray:
    """The ``count`` tokens most often greedy after random contexts: as EOS they end beams at every depth."""
    contexts = rng.integers(0, model.vocab_size, (256, 8))
    counts = np.bincount(model.log_probs(contexts).argmax(axis=-1), minlength=model.vocab_size)
    return np.argsort(-counts, kind="stable")[:count]


def _never_eos(prompts: list[np.ndarray], k: int, max_new: int, alpha: float, model: Any) -> int:
    """A token no beam of these searches ever keeps, so every beam runs to max_new_tokens unfinished."""
    for eos in np.argsort(model.weights["w_out"].mean(axis=0)):  # unlikely tokens first
        if not any(b.finished for p in prompts for b in beam_search(p, k, max_new, alpha, int(eos), model)):
            return int(eos)
    raise RuntimeError("every token ends some beam")


Call = tuple[list[np.ndarray], int, int, float, int]  # prompts, K, max_new_tokens, alpha, eos


def _pack(calls: list[Call]) -> dict[str, np.ndarray]:
    """Calls as arrays: the prompts of all calls back to back, call sizes, one settings row per call."""
    prompts = [p for c in calls for p in c[0]]
    return {
        "prompt_tokens": np.concatenate(prompts).astype(np.int64),
        "prompt_lengths": np.array([p.size for p in prompts], dtype=np.int64),
        "call_sizes": np.array([len(c[0]) for c in calls], dtype=np.int64),
        "settings": np.array([[k, n, a, e] for _, k, n, a, e in calls], dtype=np.float64),
    }


def _items(inputs: dict[str, np.ndarray]) -> list[tuple[np.ndarray, tuple[int, int, float, int]]]:
    """Every prompt of every call, in order, with its call's (K, max_new, alpha, eos)."""
    return [(prompt, (k, n, a, e)) for prompts, k, n, a, e in _calls(inputs) for prompt in prompts]


def _calls(inputs: dict[str, np.ndarray]) -> list[Call]:
    prompts = np.split(inputs["prompt_tokens"], np.cumsum(inputs["prompt_lengths"])[:-1])
    starts = np.concatenate([[0], np.cumsum(inputs["call_sizes"])])
    return [
        (prompts[starts[i] : starts[i + 1]], int(k), int(n), float(a), int(e))
        for i, (k, n, a, e) in enumerate(inputs["settings"])
    ]


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The model's arrays, the prompts and one settings row (K, max_new, alpha, eos) per submission call."""
    p = case.params
    if "scripted" in p:
        model, prompts, k, max_new, alpha, eos = scripted_model(p["scripted"])
        return toy_lm.model_inputs(model) | _pack([(prompts, k, max_new, p.get("alpha", alpha), eos)])
    model = toy_lm.ToyLM.from_seed(int(rng.integers(2**31)), **TOY_SIZES)
    vocab, frequent = model.vocab_size, _frequent_tokens(model, rng)
    calls: list[Call] = []
    for _ in range(p.get("configs", 0)):
        prompts = _prompts(rng, rng.integers(1, 11, int(rng.integers(1, 5))), vocab)
        alpha = float(rng.choice([0.0, 0.6, 1.0, round(float(rng.uniform(0, 1.5)), 3)]))
        eos = int(rng.choice(frequent) if rng.random() < 0.75 else rng.integers(vocab))
        calls.append((prompts, int(rng.integers(1, 6)), int(rng.integers(1, 9)), alpha, eos))
    if "lengths" in p:
        prompts = _prompts(rng, p["lengths"], vocab)
        k, max_new, alpha = p["k"], p["max_new"], p["alpha"]
        eos = _never_eos(prompts, k, max_new, alpha, model) if p.get("eos") == "never" else int(rng.choice(frequent))
        calls.append((prompts, k, max_new, alpha, eos))
    return toy_lm.model_inputs(model) | _pack(calls)


def _blank(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """-1-padded tokens (items, largest K, largest max_new) and zero scores (items, largest K)."""
    k, m = inputs["settings"][:, :2].max(axis=0).astype(int)
    n = inputs["prompt_lengths"].size
    return np.full((n, k, m), -1, dtype=np.int64), np.zeros((n, k))


def _reference_beams(case: Case, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The reference's beams (greedy decoding itself for the greedy case), padded as the driver pads them."""
    model = toy_lm.model_from_inputs(inputs)
    tokens, scores = _blank(inputs)
    for item, (prompt, (k, max_new, alpha, eos)) in enumerate(_items(inputs)):
        if case.params.get("greedy"):
            beams = [greedy(prompt, max_new, eos, model)]
        else:
            beams = [(b.tokens, b.score(alpha)) for b in beam_search(prompt, k, max_new, alpha, eos, model)]
        for j, (toks, score) in enumerate(beams):
            tokens[item, j, : len(toks)] = toks
            scores[item, j] = score
    return tokens, scores


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """The returned scores against the reference's best K, in order; the grader's own scores of the returned sequences
    against them too; every item's beams a valid pool (``beam_rescore.rescore``). Tokens exactly only under
    ``tie-order``."""
    tokens, scores = _reference_beams(case, inputs)
    scale = max(1.0, float(np.abs(scores).max()))
    bound = {name: Bound(atol=t.atol_floor * scale, rtol=t.rtol, dtype=None) for name, t in TOLERANCES.items()}
    suffixes = ("", "_alone") if case.params.get("alone") else ("",)
    values: dict[str, Any] = {}
    bounds: dict[str, Any] = {}
    for s in suffixes:
        values |= {f"scores{s}": scores, f"rescored{s}": scores, f"beams{s}": None}
        bounds |= {f"scores{s}": bound["scores"], f"rescored{s}": bound["rescored"], f"beams{s}": Verified()}
        if "tie-order" in case.rules:
            values[f"tokens{s}"], bounds[f"tokens{s}"] = tokens, Exact("configuration")
    return Expected(values, bounds, derive=functools.partial(rescore, inputs, _items(inputs), tokens, suffixes))


def _write(run: Any, result: Any, k: int, max_new: int, tokens: np.ndarray, scores: np.ndarray) -> None:
    """One call's beams into the padded arrays; anything not shaped as the contract says is a ContractError."""
    for b, beams in enumerate(run.unpack(result, tokens.shape[0], f"a list of {tokens.shape[0]} beam lists")):
        if not isinstance(beams, (list, tuple)) or len(beams) > k:
            raise run.contract_error(f"item {b}: expected a list of at most {k} (tokens, score) pairs")
        for j, pair in enumerate(beams):
            toks, score = run.unpack(pair, 2, "a (tokens, score) pair")
            toks = toy_lm.as_numpy(toks).reshape(-1)
            if toks.size > max_new or toks.dtype.kind not in "iuf" or np.any((toks != np.round(toks)) | (toks < 0)):
                raise run.contract_error(f"item {b} beam {j}: tokens must be at most {max_new} token ids (ints >= 0)")
            tokens[b, j, : toks.size] = toks.astype(np.int64)
            scores[b, j] = float(toy_lm.as_numpy(score).reshape(-1)[0])


def child_inputs(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What crosses to the sandbox child: everything but the model's arrays (the model is served, see ``services``)."""
    del case
    return toy_lm.child_inputs(inputs)


def services(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The model the grader serves the request (the toy transformer or a scripted table), run in its own process."""
    del case
    return {"model": toy_lm.serve(toy_lm.model_from_inputs(inputs))}


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Runs in the sandbox child: one submission call per settings row (and one per item alone when ``alone``),
    against the grader's served model."""
    model = toy_lm.ServedModel.of_inputs(run, "model", inputs)
    outputs = {}
    for suffix in ("", "_alone") if params.get("alone") else ("",):
        tokens, scores = _blank(inputs)
        item = 0
        for prompts, k, max_new, alpha, eos in _calls(inputs):
            for batch in [[p] for p in prompts] if suffix else [prompts]:
                copies = [p.copy() for p in batch]
                result = run.call("batched_beam_search", batch, k, max_new, alpha, eos, model)
                if any(not np.array_equal(p, c) for p, c in zip(batch, copies, strict=True)):
                    raise run.contract_error("batched_beam_search modified a prompt")
                rows = slice(item, item + len(batch))
                _write(run, result, k, max_new, tokens[rows], scores[rows])
                item += len(batch)
        outputs |= {f"tokens{suffix}": tokens, f"scores{suffix}": scores}
    return outputs
