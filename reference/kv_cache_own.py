"""KV cache, the "own-model" contract: a cache built into the submission's own decoder, checked against that model.

A model-comparison repo written to another prompt builds its cache into a model of its own (its norms, MLP, positions,
embeddings), so the grader cannot compute a truth of its own. It checks metamorphic relations instead: properties any
correct causal decoder with a cache has, whatever its architecture, judged in the grader from the returned logits
(nothing computed in the sandbox child decides a verdict). Contract (NumPy in; logits as NumPy, torch or CuPy arrays;
every argument positional)::

    build_model(seed, vocab_size, max_len) -> model
    forward(model, tokens) -> logits
    prefill(model, prompts, lengths) -> (logits, cache)
    decode_step(model, tokens, cache) -> (logits, cache)

- ``build_model``: the submission's own causal decoder with 2 or more layers, its weights drawn from ``seed`` (an int),
  taking token ids in ``[0, vocab_size)`` and sequences of up to ``max_len`` tokens. ``model`` is anything the other
  three accept; the grader only passes it back. Any floating dtype (float32 is typical).
- ``forward``: ``tokens`` (B, T) int64 -> logits (B, T, V) at every position, the full causal recomputation without
  any cache. Rows are independent; a row's positions past its own length hold padding (random valid tokens).
- ``prefill`` / ``decode_step``: as in the grader-model contract (``reference/kv_cache.py``), with ``model`` in place
  of the weights: ``prompts`` (B, Tmax) padded on the right, ``lengths`` (B,), logits (B, V) at each sequence's last
  prompt position; then one token per sequence per step at position = the tokens its sequence already holds.

Checks (each a figure in units of its allowed error, at most 1; ``derive`` below):

- ``decode_vs_forward``: every prefill and decode logit equals the same model's ``forward`` of that sequence alone (no
  batch, no padding) at that position; this also holds the cache to batch independence, padding, single-token prompts
  and absolute positions (the position case repeats one token after a prefill of 97, so only positions differ);
- ``forward_batch_vs_alone``: ``forward`` of the padded batch equals each row's ``forward`` alone (other rows and
  padding never change a row);
- ``forward_causality``: changing token c of a sequence never changes ``forward``'s logits at positions before c. In
  the cached path the tokens past a row's length in the prompt array stand at later positions and the decode steps'
  tokens reach the child only after the previous logits were delivered (``reference/kv_feed.py``), so a cache that
  reads later tokens fails ``decode_vs_forward``;
- memory (case ``mem``): the grader samples the child's memory before prefill and at every delivery; the growth per
  decoded token (``memory_growth.growth_per_token``) against the bytes per token the prefill added, at most 4.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reference import kv_feed
from reference.contract import AtMost, Case, Expected
from reference.memory_growth import GROWTH_FACTOR, growth_per_token

CONTRACT = "own-model"
ENTRY_POINTS = ("build_model", "forward", "prefill", "decode_step")
VOCAB, MAX_LEN = 512, 2048

# Allowed error of two computations of the same logits by the submission's own model, as a share of max|logit| of the
# row's forward, by the dtype of its forward logits (not of max(1, max|logit|): a model whose logits stay near 0.08,
# as one public submission's do, then had a bound 12x looser than its rounding asks, and its non-causal forward
# passed the causality check on two cases). The two differ only in summation order: about eps * sqrt(d)
# per reduction, a few layers deep (float32 measured on demo-kv-own: a few 1e-7); a wrong mask, an overwritten slot or
# a position one off moves logits by 1e-2 or more of that scale. Each floor leaves ~100x above the order's rounding.
FLOOR = {"float64": 1e-9, "float32": 1e-4, "float16": 2e-2, "bfloat16": 2e-2}
# The model's own noise, measured on each case: ``forward`` of row 0 alone against row 0 in a batch of two equal rows
# (a sum split differently by a batched kernel). The bound is max(floor, NOISE_FACTOR * noise); the noise counts at
# most NOISE_CAP of the scale so that a model inconsistent with itself cannot loosen the bound to a bug's size.
NOISE_FACTOR, NOISE_CAP = 8.0, 1e-3
# Memory: decode growth per token against the bytes per token the prefill added (at least one payload), held to the
# same factor as the grader-model contract's (memory_growth.GROWTH_FACTOR, with its reason).
MEMORY_RATIO = GROWTH_FACTOR
BEFORE_PREFILL = "before prefill"
CHECKS = {
    "decode_vs_forward": "prefill and decode logits against the model's forward of each sequence alone, in allowed "
    "errors",
    "forward_batch_vs_alone": "forward of the padded batch against each row's forward alone, in allowed errors",
    "forward_causality": "forward's logits before a changed token against those of the unchanged sequence, in "
    "allowed errors",
}


def own_case(category: str, guards: str, lengths: tuple[int, ...], steps: int, **extra: Any) -> Case:
    """A case whose id spells batch, prompt lengths and steps (``own-b4-p7.30.1.16-s6``)."""
    lens = str(lengths[0]) if len(set(lengths)) == 1 else ".".join(map(str, lengths))
    tags = "".join(f"-{key}{'' if value is True else value}" for key, value in extra.items())
    params = {"contract": CONTRACT, "V": VOCAB, "max_len": MAX_LEN, "lengths": list(lengths), "S": steps, **extra}
    calls = ENTRY_POINTS
    return Case(f"own-b{len(lengths)}-p{lens}-s{steps}{tags}", category, guards, params, contract=CONTRACT, calls=calls)


CASES = (
    own_case("core", "decode equals the model's own forward at every step", (16,), 8),
    # A long decode: an overwritten slot shows from step 2, a cache that drops old entries later.
    own_case("core", "each step appends to the cache (long decode)", (20, 20), 96),
    # The longest prompt is not first, one prompt is a single token, and w9 pads every row with 9 random tokens more.
    own_case("core", "batch independence: variable lengths and random padding", (7, 30, 1, 16), 6, w=9),
    own_case("edge", "prompts of a single token", (1, 1), 12),
    # One token repeated after a prefill of 97: only positions tell the steps apart, so a position one off shows.
    own_case("edge", "absolute positions after a prefill of p tokens (one token repeated)", (97, 5), 8, same=True),
    # 1536 + 512 = 2048 = MAX_LEN: positions up to the model's last.
    own_case("edge", "2048 tokens in one sequence", (1536,), 512),
    # Prefill 2 x 256 tokens (the memory yardstick), then 512 steps: the last length is 3x the first.
    own_case(
        "memory",
        "cache grows linearly (bytes per decoded token against prefill's per token)",
        (256, 256),
        512,
        mem=True,
    ),
)


# --- inputs, the grader's services and the judge (grader process) ----------------------------------------------------


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``seed`` (1,), ``prompts`` (B, Tmax), ``lengths`` (B,), ``steps`` (S, B) (withheld from the child); for the
    forward checks ``pad`` (B, W) random tokens under the full sequences (W: the longest plus 1 + w, at most max_len),
    ``cut`` (B,) a position c in [1, N_b) of each sequence of N_b tokens and ``swap`` (B,) in [1, V): token c becomes
    (token + swap) % V, another one."""
    p = case.params
    lengths = np.array(p["lengths"], dtype=np.int64)
    b, v = len(lengths), p["V"]
    prompts = rng.integers(0, v, (b, int(lengths.max()) + p.get("w", 0)))
    steps = rng.integers(0, v, (p["S"], b))
    if p.get("same"):
        token = int(rng.integers(v))
        prompts[:] = np.where(np.arange(prompts.shape[1]) < lengths[:, None], token, prompts)
        steps[:] = token
    total = lengths + p["S"]
    return {
        "seed": np.array([rng.integers(2**31)], dtype=np.int64),
        "prompts": prompts,
        "lengths": lengths,
        "steps": steps,
        "pad": rng.integers(0, v, (b, min(p["max_len"], int(total.max()) + 1 + p.get("w", 0)))),
        "cut": np.array([rng.integers(1, n) for n in total], dtype=np.int64),
        "swap": rng.integers(1, v, (b,)),
    }


def child_inputs(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The seed, prompts and lengths; the steps' tokens come one call at a time, the forward's sequences at the end."""
    del case
    return {k: inputs[k] for k in ("seed", "prompts", "lengths")}


def full_sequences(inputs: Mapping[str, np.ndarray], vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, W): every sequence in full (its prompt, then the steps' tokens) over ``pad``'s random tokens; and the same
    with token ``cut[b]`` of each row b changed to another one."""
    batch = inputs["pad"].copy()
    for b, n in enumerate(inputs["lengths"]):
        batch[b, :n] = inputs["prompts"][b, :n]
        batch[b, n : n + len(inputs["steps"])] = inputs["steps"][:, b]
    changed = batch.copy()
    rows, cut = np.arange(len(batch)), inputs["cut"]
    changed[rows, cut] = (batch[rows, cut] + inputs["swap"]) % vocab
    return batch, changed


class Sequences:
    """The grader's ``sequences`` service: after the last decode step, the full sequences for ``forward`` (``batch``,
    ``changed``, ``totals``), built here from the grader's own tokens."""

    def __init__(self, inputs: Mapping[str, np.ndarray], vocab: int):
        self.batch, self.changed = full_sequences(inputs, vocab)
        self.totals = inputs["lengths"] + inputs["steps"].shape[0]

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        del arrays
        return {"batch": self.batch, "changed": self.changed, "totals": self.totals}


def services(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The decode feed (tokens out, logits kept, memory sampled per delivery) and the forward's sequences."""
    return {
        kv_feed.FEED: kv_feed.DecodeFeed(case.params, inputs),
        "sequences": Sequences(inputs, int(case.params["V"])),
    }


def _allowed(alone: np.ndarray, noise: float, dtype: str) -> float:
    """The error allowed between two computations of one row's logits (see FLOOR and NOISE_FACTOR)."""
    scale = float(np.max(np.abs(alone))) or 1.0  # all-zero logits: the floor alone, as an absolute bound
    return max(FLOOR.get(dtype, FLOOR["float16"]) * scale, NOISE_FACTOR * min(noise, NOISE_CAP * scale))


def judge(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The three figures of ``CHECKS`` (worst error over allowed error, NaN when an output is missing or malformed)
    and, per figure, where its worst error is: row, position, error and the allowed error."""
    lengths, steps = inputs["lengths"], inputs["steps"].shape[0]
    try:
        alone, batch, changed = (np.asarray(outputs[k]) for k in ("alone_logits", "forward_logits", "changed_logits"))
        twin = np.asarray(outputs["twin_logits"], dtype=np.float64)
        dtype = str(alone.dtype)
        alone, batch, changed = (a.astype(np.float64) for a in (alone, batch, changed))
        cached = np.concatenate([outputs["prefill_logits"][None], outputs["step_logits"]]).astype(np.float64)
        noise = float(np.max(np.abs(twin - alone[0, : twin.shape[0]])))
        pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in CHECKS}
        for b, n in enumerate(lengths):
            total = n + steps
            pairs["decode_vs_forward"].append((cached[:, b], alone[b, n - 1 : total]))
            pairs["forward_batch_vs_alone"].append((batch[b, :total], alone[b, :total]))
            pairs["forward_causality"].append((changed[b, : inputs["cut"][b]], batch[b, : inputs["cut"][b]]))
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        nan = {name: np.float64(np.nan) for name in CHECKS}
        return nan, {"unmeasured": f"own-model outputs unusable: {exc}"[:300]}
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {"noise": noise, "logits dtype": dtype}
    for name, rows in pairs.items():
        worst = (0.0, 0, 0, 0.0, 0.0)  # ratio, row, position, error, allowed
        for b, (got, want) in enumerate(rows):
            allowed = _allowed(alone[b, : lengths[b] + steps], noise, dtype)
            err = np.abs(got - want).max(axis=-1) if got.size else np.zeros(1)
            err = np.where(np.isfinite(err), err, np.inf)
            at = int(np.argmax(err))
            if err[at] / allowed >= worst[0]:
                start = lengths[b] - 1 if name == "decode_vs_forward" else 0
                worst = (float(err[at] / allowed), int(b), int(start + at), float(err[at]), float(allowed))
        figures[name] = np.float64(worst[0])
        details[name] = {"row": worst[1], "position": worst[2], "error": worst[3], "allowed": worst[4]}
    return figures, details


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """No truth of the grader's own: the figures of ``judge``, each at most 1, and on memory cases the growth ratio."""
    values: dict[str, Any] = {name: np.float64(np.nan) for name in CHECKS}
    bounds: dict[str, Any] = {name: AtMost(1.0, what) for name, what in CHECKS.items()}
    if case.params.get("mem"):
        values["growth_ratio"] = np.float64(np.nan)
        bounds["growth_ratio"] = AtMost(
            MEMORY_RATIO, "cache bytes per decoded token over the bytes per token prefill added (room for doubling)"
        )
    return Expected(values, bounds, derive=lambda outputs: judge(inputs, outputs))


def measured_figures(case: Case, checkpoints: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Memory cases: ``growth_ratio``, the growth per decoded token (grader samples at each delivery) over the bytes
    per prompt token between the samples before prefill and after it."""
    p = case.params
    if not p.get("mem"):
        return {}, {}
    batch = len(p["lengths"])
    tokens = [sum(p["lengths"]) + batch * s for s in range(p["S"] + 1)]
    if not checkpoints or checkpoints[0].get("label") != BEFORE_PREFILL:
        return {"growth_ratio": np.float64(np.nan)}, {"unmeasured": f"no memory checkpoint {BEFORE_PREFILL!r} first"}
    growth, details = growth_per_token(checkpoints[1:], kv_feed.labels(p, batch), tokens)
    prefill = (int(checkpoints[1]["bytes"]) - int(checkpoints[0]["bytes"])) / tokens[0]
    details["prefill bytes per token"] = float(prefill)
    ratio = growth / prefill if prefill > 0 else (np.inf if growth > 0 else 0.0)
    return {"growth_ratio": np.float64(ratio)}, details


# --- the driver (runs in the sandbox child) ---------------------------------------------------------------------------


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Build the model; prefill and decode every step through the grader's feed; then ``forward`` on the sequences the
    grader sends: the padded batch, the batch with one token changed per row, each row alone, row 0 twice."""
    model = run.call("build_model", int(inputs["seed"][0]), int(params["V"]), int(params["max_len"]))
    b, vocab = len(inputs["lengths"]), int(params["V"])
    if params.get("mem"):
        kv_feed.settle()
        run.checkpoint(BEFORE_PREFILL)
    returned = run.call("prefill", model, inputs["prompts"], inputs["lengths"])
    logits, cache = run.unpack(returned, 2, "prefill to return (logits, cache)")
    for step in range(int(params["S"]) + 1):
        logits = _array(run, "prefill" if step == 0 else f"decode step {step - 1}", logits, (b, vocab))
        if params.get("mem"):
            kv_feed.settle()
        answer = run.service(kv_feed.FEED, {"logits": logits})
        del logits
        if step < int(params["S"]):
            returned = run.call("decode_step", model, answer["tokens"], cache)
            logits, cache = run.unpack(returned, 2, "decode_step to return (logits, cache)")
    del cache
    seqs = run.service("sequences", {})
    batch, totals = seqs["batch"], seqs["totals"]
    out = {
        "forward_logits": _forward(run, model, batch, vocab),
        "changed_logits": _forward(run, model, seqs["changed"], vocab),
        "twin_logits": _forward(run, model, np.repeat(batch[:1, : totals[0]], 2, axis=0), vocab)[1],
    }
    alone = np.zeros_like(out["forward_logits"])
    for row, n in enumerate(totals):
        alone[row, :n] = _forward(run, model, batch[row : row + 1, :n], vocab)[0]
    out["alone_logits"] = alone
    return out


def _forward(run: Any, model: Any, tokens: np.ndarray, vocab: int) -> np.ndarray:
    where = f"forward on tokens of shape {tokens.shape}"
    return _array(run, where, run.call("forward", model, np.ascontiguousarray(tokens)), (*tokens.shape, vocab))


def _array(run: Any, where: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Logits as a NumPy array of ``shape`` (torch and CuPy converted), else a contract error."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()  # bfloat16 has no NumPy dtype: an adapter returns .float()
    elif type(value).__module__.startswith("cupy"):
        value = value.get()
    array = np.asarray(value)
    if array.shape != shape or array.dtype.kind != "f":
        raise run.contract_error(f"{where} returned logits of shape {array.shape} ({array.dtype}), want {shape}")
    return array
