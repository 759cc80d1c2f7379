"""DFlash tree verification (greedy): contract, reference, input generator and hidden cases.

Contract (every argument passed positionally)::

    build_tree_mask(prompt_len, tree_parents) -> mask
    verify_and_accept(prompt_tokens, tree_tokens, tree_parents, target_model, temperature=0) -> (accepted_tokens,
                                                                                                new_token)

- ``prompt_len`` P >= 1 (an int); ``tree_parents``: int64 (N,), N >= 1, ``tree_parents[i]`` is -1 for a root, else an
  index below i. ``prompt_tokens`` int64 (P,), ``tree_tokens`` int64 (N,): node i's drafted token. Never modified.
- ``mask``: (P+N, P+N), boolean (True = may attend; integer 0/1 counts as boolean) or additive float (0 = may attend,
  -inf or anything <= -1e4 = blocked). Row/column P+i is node i. The prompt is causal; node i sees the whole prompt,
  its ancestors and itself, nothing else.
- ``target_model``: a grader-owned model (``reference/toy_lm.py``): ``target_model.forward(tokens, mask=None)`` takes
  tokens (T,) or (n, T) and such a mask, (T, T) or (n, T, T), and returns float64 logits (T, V) / (n, T, V);
  ``mask=None`` is causal. **A query's position is the number of keys its mask lets it attend, minus one**, so the
  tree mask gives node i the position P + depth(i), the one it would have in plain decoding. Also ``target_model(
  tokens, mask)`` (same), ``target_model.log_probs(tokens)`` and ``target_model.vocab_size``; every call of any of
  them counts as one forward.
- ``temperature``: always 0 here (greedy); sampling is outside this contract.
- ``accepted_tokens``: 1-D ints (possibly empty), the tokens of the accepted nodes, root first; ``new_token``: an int.

Semantics: one forward of the target over prompt + tree tokens with the tree mask; ``g[t]`` = argmax of the logits at
position t (lowest id on an exact tie). Node i matches when ``tree_tokens[i] == g[P-1]`` for a root, ``g[P+parent]``
otherwise. The accepted path is the longest path from a root on which every node matches (a matching node below a
rejected one is never accepted). When siblings repeat a token, several paths can match: the longest wins; of equal
length, the one ending at the lower node index (all such paths carry the same tokens, so the outputs are the same).
``new_token`` is ``g`` at the last accepted node's position, or ``g[P-1]`` when nothing is accepted.

Graded: the mask (exact); and by recomputation, since an acceptance rule may allow more than one answer
(``reference/dflash_golden.py``): the **golden property** (the accepted tokens are a drafted path of the target's
greedy tokens and the new token is the greedy token after it, so accepted + new reproduce greedy decoding) on every
verification, and **acceptance** (at least as many tokens as the case's rule guarantees: ``longest-path``, the
semantics above, or ``stop-at-first-rejection``, the weaker rule of other prompt sets; RULES) on scenario trees,
random trees and every small tree; and the grader's speculative loop (``reference/dflash_trees.py``) calling the
submission's ``verify_and_accept`` cycle after cycle must yield exactly the target's greedy sequence (golden, under
no rule) and, under ``longest-path``, accept the longest path every cycle. Forwards per verification (1 for full
credit) are checked on the speed case with its timing. There the target is served: the grader runs it in its own
process and counts every call (``toy_lm.ServedModel``); the speed case sends one verification per request, so the
count of a request is the forwards of that verification. Every other case hands the child a copy of the model (its
calls decide nothing, and a served call costs a wire round trip: ten times a forward).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np

from reference import toy_lm
from reference.contract import AtMost, Case, Challenge, Exact, Expected, Verified
from reference.dflash_golden import judge
from reference.dflash_trees import (
    SCENARIOS,
    accepted_path,
    draft_batch,
    draft_tokens,
    random_tree,
    small_trees,
    speculative_loop,
    stop_rule_path,
    tree_greedy,
    tree_mask,
)

CHALLENGE = Challenge(
    id="dflash_verify",
    title="DFlash tree verification",
    folder_names=("dflash_verify",),
    entry_points=("build_tree_mask", "verify_and_accept"),
)

# Each entry point's contract line, as prompts, `kernelgrade check` and skeletons show it (the docstring's lines above
# say the same; the contracts self-test holds them together).
SIGNATURES = {
    "build_tree_mask": "build_tree_mask(prompt_len, tree_parents) -> mask",
    "verify_and_accept": (
        "verify_and_accept(prompt_tokens, tree_tokens, tree_parents, target_model, temperature=0)"
        " -> (accepted_tokens, new_token)"
    ),
}
# What speed cases are timed against: each entry point's reference function in this module (the NumPy baseline
# the grader runs in a child of its own, beside the submission's).
SPEED_BASELINE = {"build_tree_mask": "build_tree_mask", "verify_and_accept": "verify_and_accept"}

# The target: the default toy transformer (1000 tokens) with a 512-position table (the speed case needs 200 + 48).
TOY_SIZES = {"vocab_size": 1000, "d_model": 64, "n_heads": 4, "n_layers": 2, "max_len": 512}
# One forward over prompt + tree is what tree verification is for. A correct verifier that spends more is still
# correct, so the figure is checked on the speed case (scored with the timing), never on a core case.
FORWARDS = AtMost(limit=1.0, what="target forwards per verification (counted by the grader, which serves the target)")

# Acceptance rules (Case.rules): a verification case checks the accepted length against the one it names. A task
# profile whose prompts state longest-path also states stop-at-first-rejection, which it implies.
LONGEST, STOP = "longest-path", "stop-at-first-rejection"
RULES = {
    LONGEST: "accept the longest path of matching nodes over all roots and siblings (the accepted length it "
    "guarantees: accepted_path in reference/dflash_trees.py)",
    STOP: "on a rejection, stop processing further tree nodes: in index order or level by level, the first root or "
    "child of an accepted node that does not match ends the cycle (the accepted length it guarantees: stop_rule_path)",
}
GUARANTEE = {LONGEST: accepted_path, STOP: stop_rule_path}
# What an acceptance rule decides: the accepted length (``acceptance``; a loop's length per cycle, ``accepted``). The
# golden property and the loop's text are every prompt's: a case beyond the task is still graded on those.
RULE_CHECKS = {LONGEST: ("acceptance", "accepted"), STOP: ("acceptance", "accepted")}


def build_tree_mask(prompt_len: int, tree_parents: Any) -> np.ndarray:
    """The contract's mask, boolean."""
    return tree_mask(int(prompt_len), [int(p) for p in tree_parents])


def verify_and_accept(
    prompt_tokens: Any, tree_tokens: Any, tree_parents: Any, target_model: Any, temperature: float = 0
) -> tuple[np.ndarray, int]:
    """The contract's verification: one masked forward, then the longest matching path and the bonus token."""
    del temperature  # greedy only
    prompt, tokens = np.asarray(prompt_tokens), np.asarray(tree_tokens)
    parents = [int(p) for p in tree_parents]
    greedy = target_model.forward(np.concatenate([prompt, tokens]), tree_mask(prompt.size, parents)).argmax(axis=-1)
    path = accepted_path(parents, tokens, greedy, prompt.size)
    return tokens[path].astype(np.int64), int(greedy[prompt.size + path[-1] if path else prompt.size - 1])


# The entry points each kind of case calls (drive): a submission missing one fails only the cases that call it.
KIND_CALLS = {"mask": ("build_tree_mask",), "verify": ("verify_and_accept",), "loop": ("verify_and_accept",)}


def case(category: str, guards: str, case_id: str, rules: tuple[str, ...] = (), **params: Any) -> Case:
    return Case(case_id, category, guards, params, rules=rules, calls=KIND_CALLS[params["kind"]])


def scenario(category: str, guards: str, name: str, rule: str) -> Case:
    """A hand-built tree of SCENARIOS, checked for the golden property and the acceptance ``rule`` guarantees."""
    return case(category, guards, name, (rule,), kind="verify", scenario=name)


# Scenario rules: stop-at-first-rejection where its walk accepts the whole longest path (so the case asks no less of
# our semantics than longest-path would, and holds under both), longest-path where the two differ (the case exists
# for a path that walk would not reach). selftests/test_dflash.py checks both paths of every scenario.
CASES = (
    # Masks: chains (P 1, 5, 17), stars (one root with many children; roots only) and random branching trees.
    case("core", "mask on chains", "mask-chains", kind="mask", trees="chains"),
    case("core", "mask on stars and all-root forests", "mask-stars", kind="mask", trees="stars"),
    case("core", "mask on 30 random branching trees", "mask-random-30", kind="mask", trees="random"),
    scenario("core", "a chain accepted whole", "chain-all", STOP),
    scenario("core", "a chain rejected at its 4th node", "chain-reject-3", STOP),
    scenario("core", "several roots: the first right, its siblings follow", "first-root-siblings", LONGEST),
    scenario("core", "a later sibling, not the first root, matches", "later-sibling", LONGEST),
    case(
        "core",
        "24 random trees (P 1-24, N 1-16, 30-90% matching)",
        "random-trees-24",
        (LONGEST,),
        kind="verify",
        random=24,
    ),
    # Every tree shape of up to 5 nodes with every match/mismatch labelling, and every labelling with decoys of up to
    # 3 nodes (4467 trees, one verification each, all in one request): a verifier that reads a wrong row, parent or
    # sibling fails some of them whatever the seed (selftests/test_dflash_family.py: 10 seeds). Longest-path asks more
    # than the stop rule's walk only beside a rejected or shorter first branch (a wrong root before a right one, a
    # repeated root with the path below the repeat), which trees of 2 and 3 nodes hold (243 trees). Each verification
    # is a forward of the child's own copy of the model (about 0.4 ms; a served one cost 1.4 ms): demo-tiled verifies
    # the 4467 trees in 2.5 s, the grader drafts them and computes their truth in 2.3 s once per seed.
    case("core", "every tree of up to 5 nodes, every labelling", "small-trees-5", (STOP,), kind="verify", small=[5, 3]),
    case(
        "core",
        "every tree of up to 3 nodes, longest path",
        "small-trees-3-longest",
        (LONGEST,),
        kind="verify",
        small=[3, 3],
    ),
    case(
        "core",
        "golden property: the speculative loop equals greedy decoding (half the nodes match)",
        "loop-share0.5",
        kind="loop",
        share=0.5,
    ),
    case(
        "core",
        "golden property: the speculative loop equals greedy decoding (90% of nodes match)",
        "loop-share0.9",
        kind="loop",
        share=0.9,
    ),
    case(
        "core",
        "the speculative loop accepts the longest path every cycle",
        "loop-share0.9-longest",
        (LONGEST,),
        kind="loop",
        share=0.9,
        each_cycle=True,
    ),
    scenario("edge", "a rejected node's matching children are skipped", "rejected-parent", LONGEST),
    scenario("edge", "every node rejected: only the new token", "all-rejected", STOP),
    scenario("edge", "a single node, accepted", "single-accepted", STOP),
    scenario("edge", "a single node, rejected", "single-rejected", STOP),
    scenario("edge", "a 40-node chain accepted whole", "deep-chain-40", STOP),
    scenario("edge", "a 40-node chain rejected at node 25", "deep-chain-reject-25", STOP),
    scenario("edge", "siblings repeat a token: the longest matching path wins", "repeated-siblings", LONGEST),
    scenario("edge", "a one-token prompt", "prompt-length-1", LONGEST),
    # 200 + 48 positions: a forward per node or per path costs tens of times the single masked forward.
    case(
        "speed",
        "one target forward per verification, timed against the reference",
        "one-forward-p200-n48",
        (STOP,),
        kind="verify",
        random=1,
        prompt_len=200,
        nodes=48,
        speed=True,
    ),
)


def _trees(rng: np.random.Generator, which: str) -> list[tuple[int, list[int]]]:
    """(P, parents) for the mask cases."""
    if which == "chains":
        return [(p, [-1, *range(n - 1)]) for p, n in ((1, 6), (5, 1), (5, 12), (17, 9))]
    if which == "stars":
        return [(4, [-1] + [0] * 9), (1, [-1] * 7), (9, [-1, -1, 0, 0, 1, 1, -1])]
    return [(int(rng.integers(1, 25)), random_tree(rng, int(rng.integers(1, 25)), 0.5)[0].tolist()) for _ in range(30)]


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Trees (and the target's weights, prompts and drafted tokens, or loop settings) for one case."""
    p = case.params
    if p["kind"] == "mask":
        trees = _trees(rng, p["trees"])
        return {
            "prompt_lengths": np.array([t[0] for t in trees], dtype=np.int64),
            "tree_parents": np.concatenate([t[1] for t in trees]).astype(np.int64),
            "tree_sizes": np.array([len(t[1]) for t in trees], dtype=np.int64),
        }
    model = toy_lm.ToyLM.from_seed(int(rng.integers(2**31)), **TOY_SIZES)
    arrays = toy_lm.model_inputs(model)
    if p["kind"] == "loop":
        prompts = [rng.integers(0, model.vocab_size, int(rng.integers(3, 21))) for _ in range(2)]
        # One row per loop: seed, tokens to generate, largest tree, share of matching nodes.
        settings = [[int(rng.integers(2**31)), 24, 10, p["share"]] for _ in prompts]
        return arrays | {
            "prompt_tokens": np.concatenate(prompts).astype(np.int64),
            "prompt_lengths": np.array([x.size for x in prompts], dtype=np.int64),
            "loop_settings": np.array(settings, dtype=np.float64),
        }
    problems = _small_trees(model, rng, *p["small"]) if "small" in p else []
    for _ in range(0 if "small" in p else p.get("random", 1)):
        if "scenario" in p:
            prompt_len, parents, kinds = SCENARIOS[p["scenario"]]
            parents = np.array(parents, dtype=np.int64)
        else:
            prompt_len = p.get("prompt_len") or int(rng.integers(1, 25))
            parents, kinds = random_tree(rng, p.get("nodes") or int(rng.integers(1, 17)), rng.choice([0.3, 0.6, 0.9]))
        prompt = rng.integers(0, model.vocab_size, prompt_len).astype(np.int64)
        problems.append((prompt, draft_tokens(model, prompt, parents, kinds, rng), parents))
    return arrays | {
        "prompt_tokens": np.concatenate([q[0] for q in problems]),
        "prompt_lengths": np.array([q[0].size for q in problems], dtype=np.int64),
        "tree_tokens": np.concatenate([q[1] for q in problems]),
        "tree_parents": np.concatenate([q[2] for q in problems]),
        "tree_sizes": np.array([q[2].size for q in problems], dtype=np.int64),
    }


def _small_trees(
    model: Any, rng: np.random.Generator, max_nodes: int, decoy_nodes: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(prompt, tokens, parents) for every tree of ``small_trees``; each shape gets one prompt length (1-6) and a fresh
    prompt per tree, and its trees are drafted together (``draft_batch``)."""
    problems = []
    for parents, group in itertools.groupby(small_trees(max_nodes, decoy_nodes), key=lambda tree: tree[0]):
        kinds = [k for _, k in group]
        prompts = rng.integers(0, model.vocab_size, (len(kinds), int(rng.integers(1, 7))))
        tokens = draft_batch(model, prompts, parents, kinds, rng)
        problems += [(prompts[r], tokens[r], np.array(parents, dtype=np.int64)) for r in range(len(kinds))]
    return problems


def _split(flat: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(sizes)[:-1])


def _problems(inputs: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return list(
        zip(
            _split(inputs["prompt_tokens"], inputs["prompt_lengths"]),
            _split(inputs["tree_tokens"], inputs["tree_sizes"]),
            _split(inputs["tree_parents"], inputs["tree_sizes"]),
            strict=True,
        )
    )


def _padded(rows: list[list[int]], width: int) -> np.ndarray:
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row
    return out


def _masks_padded(masks: list[np.ndarray]) -> np.ndarray:
    """(R, S, S) int8: 1 may attend, 0 blocked, 2 neither (an additive value that is not 0 or <= -1e4), -1 padding."""
    size = max(m.shape[0] for m in masks)
    out = np.full((len(masks), size, size), -1, dtype=np.int8)
    for r, m in enumerate(masks):
        out[r, : m.shape[0], : m.shape[1]] = m
    return out


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """Masks from the reference; for loops the grader's own greedy decoding (and, under longest-path, the reference's
    accepted length every cycle); for verifications the golden property and the acceptance the case's rule guarantees,
    recomputed from what the submission returns (``dflash_golden.judge``)."""
    kind = case.params["kind"]
    if kind == "mask":
        parents = _split(inputs["tree_parents"], inputs["tree_sizes"])
        masks = [
            tree_mask(int(p), q.tolist()).astype(np.int8)
            for p, q in zip(inputs["prompt_lengths"], parents, strict=True)
        ]
        return Expected({"mask": _masks_padded(masks)}, {"mask": Exact("tree")})
    model = toy_lm.model_from_inputs(inputs)
    if kind == "loop":
        return _loop_expected(case, inputs, model)
    problems = _problems(inputs)
    greedy = tree_greedy(model, problems)
    (rule,) = case.rules
    least = [len(GUARANTEE[rule](par, t, g, q.size)) for (q, t, par), g in zip(problems, greedy, strict=True)]
    values: dict[str, Any] = {"golden": None, "acceptance": None}
    bounds: dict[str, Any] = {"golden": Verified(), "acceptance": Verified()}
    if case.params.get("speed"):
        values["forwards"], bounds["forwards"] = np.array([1.0]), FORWARDS
    return Expected(values, bounds, derive=functools.partial(judge, problems, greedy, least, rule))


def _loop_expected(case: Case, inputs: dict[str, np.ndarray], model: Any) -> Expected:
    generated, accepted = [], []
    for prompt, (seed, n_new, max_nodes, share) in zip(
        _split(inputs["prompt_tokens"], inputs["prompt_lengths"]), inputs["loop_settings"], strict=True
    ):
        generated.append(greedy_decode(model, prompt, int(n_new)))
        if case.params.get("each_cycle"):
            verify = lambda q, t, par: _as_lists(verify_and_accept(q, t, par, model))  # noqa: E731
            accepted.append(speculative_loop(verify, model, prompt, int(n_new), int(seed), int(max_nodes), share)[1])
    values: dict[str, Any] = {"generated": np.array(generated)}
    if case.params.get("each_cycle"):  # with the golden property, the longest path every cycle is one list of lengths
        values["accepted"] = _padded(accepted, int(inputs["loop_settings"][:, 1].max()))
    return Expected(values, dict.fromkeys(values, Exact("loop")))


def greedy_decode(model: Any, prompt: np.ndarray, n_new: int) -> list[int]:
    """Plain greedy decoding, one causal forward per token: what the speculative loop must reproduce."""
    seq = [int(t) for t in prompt]
    for _ in range(n_new):
        seq.append(int(np.argmax(model.forward(np.array(seq, dtype=np.int64))[-1])))
    return seq[prompt.size :]


def _as_lists(result: tuple[np.ndarray, int]) -> tuple[list[int], int]:
    return [int(t) for t in result[0]], int(result[1])


def _local(inputs: dict[str, np.ndarray]) -> toy_lm.ToyLM | toy_lm.ScriptedLM:
    """The case's model as a copy in the child (every case but the forward-count one: see ``child_inputs``)."""
    return toy_lm.model_from_inputs(inputs)


def _checked(run: Any, result: Any, n_nodes: int) -> tuple[list[int], int]:
    """A submission's (accepted_tokens, new_token) as ints, or a ContractError."""
    accepted, new = run.unpack(result, 2, "(accepted_tokens, new_token)")
    accepted, new = toy_lm.as_numpy(accepted).reshape(-1), toy_lm.as_numpy(new).reshape(-1)
    for what, x, least, most in (("accepted_tokens", accepted, 0, n_nodes), ("new_token", new, 1, 1)):
        if not least <= x.size <= most or x.dtype.kind not in "iuf" or np.any((x != np.round(x)) | (x < 0)):
            raise run.contract_error(f"{what}: expected {'one token id' if most == 1 else f'at most {most} token ids'}")
    return [int(t) for t in accepted], int(new[0])


def _allowed(run: Any, mask: Any, size: int) -> np.ndarray:
    """A submission's mask as int8: 1 may attend, 0 blocked, 2 an additive value that is neither 0 nor <= -1e4."""
    m = toy_lm.as_numpy(mask)
    if m.shape != (size, size) or m.dtype.kind not in "biuf":
        raise run.contract_error(f"mask: expected a ({size}, {size}) boolean or float array, got {m.dtype} {m.shape}")
    if m.dtype.kind != "f":
        return (m != 0).astype(np.int8)
    return np.where(m == 0, 1, np.where(m <= toy_lm.BLOCKED, 0, 2)).astype(np.int8)


def child_inputs(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What crosses to the sandbox child: on the forward-count case everything but the target's weights (it is served,
    see ``services``); elsewhere the weights too, for a model of the child's own (no figure depends on its calls, and
    its outputs are judged against the grader's truth, so a submission that changed that copy only hurts itself)."""
    return toy_lm.child_inputs(inputs) if case.params.get("speed") else inputs


def services(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The model the grader serves the forward-count case (run and counted in its own process): a served call costs a
    round trip of the wire (about 1 ms), ten times a forward of the toy model, so no other case is served."""
    return {"target": toy_lm.serve(toy_lm.model_from_inputs(inputs))} if case.params.get("speed") else {}


def measured_figures(
    case: Case, service_calls: dict[str, int], checkpoints: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Forwards per verification from the grader's own count of target calls: a request of the forward-count case
    holds one verification per problem in it (the driver makes no other), so the count over the problems is the
    figure; a correct verifier needs at least one forward per distinct problem, so the figure cannot hide a second."""
    del checkpoints
    if not case.params.get("speed"):
        return {}, {}
    calls = service_calls.get("target", 0)
    return {"forwards": np.array([calls / case.params.get("random", 1)])}, {"target forwards": calls}


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Runs in the sandbox child: masks, verifications, or the speculative loop over the submission's verifier. The
    target is the grader's served model on the forward-count case, elsewhere a copy here (the loop's drafter is a
    second copy); nothing computed here is a figure."""
    if params["kind"] == "mask":
        masks = []
        for p, parents in zip(
            inputs["prompt_lengths"], _split(inputs["tree_parents"], inputs["tree_sizes"]), strict=True
        ):
            masks.append(_allowed(run, run.call("build_tree_mask", int(p), parents), int(p) + parents.size))
        return {"mask": _masks_padded(masks)}
    target = toy_lm.ServedModel.of_inputs(run, "target", inputs) if params.get("speed") else _local(inputs)

    def verify(prompt: np.ndarray, tokens: np.ndarray, parents: np.ndarray) -> tuple[list[int], int]:
        return _checked(run, run.call("verify_and_accept", prompt, tokens, parents, target, 0), tokens.size)

    if params["kind"] == "loop":
        drafter = _local(inputs)
        generated, accepted = [], []
        for prompt, (seed, n_new, max_nodes, share) in zip(
            _split(inputs["prompt_tokens"], inputs["prompt_lengths"]), inputs["loop_settings"], strict=True
        ):
            gen, acc = speculative_loop(verify, drafter, prompt, int(n_new), int(seed), int(max_nodes), share)
            generated.append(gen)
            accepted.append(acc)
        width = int(inputs["loop_settings"][:, 1].max())
        return {"generated": np.array(generated, dtype=np.int64), "accepted": _padded(accepted, width)}
    results = [verify(*problem) for problem in _problems(inputs)]
    return {
        "accepted": _padded([r[0] for r in results], int(inputs["tree_sizes"].max())),
        "new_token": np.array([r[1] for r in results], dtype=np.int64),
    }
