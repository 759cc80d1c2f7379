"""KV cache for incremental decoding: contract, reference cache, input generator, tolerances and hidden cases.

The grader hands a submission the weights of the toy decoder in ``reference/toy_lm.py`` (pre-norm, token and absolute
position embeddings, L multi-head attention layers with residuals and a ReLU MLP, an output projection; the module
docstring there states every operation). The submission keeps the keys and values of every layer in a cache so that
each new token costs one position's work, not a recomputation of the whole sequence. Contract (NumPy in, NumPy out;
every argument is passed positionally)::

    prefill(weights, prompts, lengths) -> (logits, cache)
    decode_step(weights, tokens, cache) -> (logits, cache)

- ``weights``: a dict, the same object at every call and never modified. Float64 arrays ``tok_emb`` (V, d),
  ``pos_emb`` (max_len, d), per layer i ``l{i}.wq`` (d, d), ``l{i}.wk`` and ``l{i}.wv`` (d, n_kv_heads * dh),
  ``l{i}.wo`` (d, d), ``l{i}.w1`` (d, 4d), ``l{i}.w2`` (4d, d), and ``w_out`` (d, V); two Python ints, ``n_heads`` and
  ``n_kv_heads``. ``dh = d / n_heads``. Query head h is columns ``[h*dh, (h+1)*dh)`` of ``a @ wq``; K/V head g is
  the same columns of ``a @ wk`` and ``a @ wv``. ``n_kv_heads == n_heads`` in every case but the grouped-query one
  (an optional extension), where query head h reads K/V head ``h // (n_heads // n_kv_heads)``.
- ``prompts``: (B, Tmax) int64, padded on the right; sequence b's prompt is ``prompts[b, :lengths[b]]``. The padding
  holds random valid token ids and must influence nothing. ``lengths``: (B,) int64, ``1 <= lengths[b] <= Tmax``
  (Tmax may exceed the longest prompt).
- ``prefill`` logits: (B, V) float64, row b the logits at sequence b's last prompt position ``lengths[b] - 1``.
- ``decode_step``: ``tokens`` (B,) int64 holds the next token of every sequence (all sequences advance together); it
  sits at position = the number of tokens its sequence already holds (``lengths[b]`` at the first step, then one more
  per step). Logits: (B, V) float64 at that position. Positions stay below max_len.
- ``cache``: anything the submission likes; the grader only passes the cache of the latest call back in. A step may
  update it in place and return it, or return a new one. Two caches from two ``prefill`` calls are independent: the
  grader may interleave their steps. The timer of speed cases calls one step more than once on the same cache, so the
  logits of that timed step are not checked (those of every step before it are).

The logits of every call must equal, to rounding, those of the causal forward over the whole sequence so far
(``toy_lm.forward``, recomputed from scratch in the grader): the prompt, then the tokens fed so far. The grader feeds
each step's tokens after the previous call's logits are delivered and grades the delivered logits (``kv_feed.py``).

Memory: in memory cases the grader samples the child's process tree from outside as each call's logits arrive (after
prefill and after every decode step; resident and swapped memory, private tmpfs and files in the writable folder, see
``plugins/isolate/measure.py``). The figure judged is the growth per token since prefill (``growth_per_token``),
against the K/V payload of one token, ``2 * L * n_kv_heads * dh * 8`` bytes; a request with a sample missing or
added fails it.

Own-model variant (a task profile's ``contract = "own-model"``; ``reference/kv_cache_own.py`` holds its cases, drive
and checks): the cache lives in the submission's own model, checked against that model's own recomputation::

    build_model(seed, vocab_size, max_len) -> model
    forward(model, tokens) -> logits

with ``prefill`` and ``decode_step`` as above, ``model`` in the weights' place.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reference import kv_cache_own, kv_feed, toy_lm
from reference.contract import AtMost, Bound, Case, Challenge, Expected, Tolerance
from reference.memory_growth import GROWTH_FACTOR, growth_per_token

CHALLENGE = Challenge(
    id="kv_cache",
    title="KV cache",
    folder_names=("kv_cache", "kv"),
    entry_points=("prefill", "decode_step"),
    # The grader's model (its weights handed to prefill/decode_step) is the default; a task profile may say a repo
    # built its cache into its own model ("own-model": the submission's forward, prefill and decode_step).
    contracts={"grader-model": ("prefill", "decode_step"), kv_cache_own.CONTRACT: kv_cache_own.ENTRY_POINTS},
)

# Each entry point's contract line, as prompts, `kernelgrade check` and skeletons show it (the docstring's lines above
# say the same; the contracts self-test holds them together).
SIGNATURES = {
    "prefill": "prefill(weights, prompts, lengths) -> (logits, cache)",
    "decode_step": "decode_step(weights, tokens, cache) -> (logits, cache)",
    "build_model": "build_model(seed, vocab_size, max_len) -> model",
    "forward": "forward(model, tokens) -> logits",
}
# What speed cases are timed against: each entry point's reference function in this module (the NumPy baseline
# the grader runs in a child of its own, beside the submission's).
SPEED_BASELINE = {"prefill": "prefill", "decode_step": "decode_step"}

TOLERANCES = {
    "float64": Tolerance(
        atol_floor=1e-9,
        rtol=1e-9,
        baseline_factor=4.0,
        reason="float64 throughout: a cached decode step and the full recomputation differ only in summation order "
        "(about 1e-14 of the logits' magnitude; this module's own cache, the baseline, shows it on every case); 4x "
        "that or 1e-9 of max|logit| leaves room for any order, while the bugs err by 1e-2 or more",
    ),
}

MEMORY_GROWTH_FACTOR = GROWTH_FACTOR  # allowed growth per token in K/V payloads, with its reason in memory_growth.py
MODEL = {"V": 1000, "d": 64, "H": 4, "L": 2}  # toy_lm's defaults: d=64, 4 heads of 16, 2 layers
FLOAT_OUTPUTS = ("prefill_logits", "step_logits")


def model_case(
    category: str, guards: str, lengths: tuple[int, ...], steps: int, rules: tuple[str, ...] = (), **extra: Any
) -> Case:
    """A case whose id spells batch, prompt lengths, steps and model (``b4-p7.30.1.16-s6-h4-d64-l2``)."""
    m = {**MODEL, **{k: extra.pop(k) for k in ("V", "d", "H", "L", "Hkv") if k in extra}}
    m.setdefault("Hkv", m["H"])
    lens = str(lengths[0]) if len(set(lengths)) == 1 else ".".join(map(str, lengths))
    kv = f"kv{m['Hkv']}" if m["Hkv"] != m["H"] else ""
    tags = "".join(f"-{key}{'' if value is True else value}" for key, value in extra.items())
    case_id = f"b{len(lengths)}-p{lens}-s{steps}-h{m['H']}{kv}-d{m['d']}-l{m['L']}{tags}"
    params = {"lengths": list(lengths), "S": steps, **m, **extra}
    return Case(case_id, category, guards, params, rules, contract="grader-model")


# Rules beyond a KV cache's maths that cases depend on; both are requirements of ours that no prompt of ours states as
# such (the prompt asks for one cache driven by prefill and decode steps, grouped-query heads as optional).
RULES = {
    "two-caches-at-once": "two caches may be alive at once, their steps interleaved (no state kept at module level)",
    "grouped-query-heads": "K and V may have fewer heads than Q (grouped-query attention), an optional part of the "
    "task",
}

CASES = (
    model_case("core", "decode logits equal causal recomputation at every step", (16,), 8),
    model_case("core", "batch of equal-length prompts", (24, 24, 24), 8),
    model_case("core", "each step appends to the cache (an overwrite shows from step 2)", (20, 20), 32),
    # 33: not a power of two; L=3: a prefill without the causal mask shows only from the second layer on.
    model_case("core", "causal prefill in a deeper stack", (33, 33), 6, L=3),
    # The longest prompt is not first and one prompt is a single token; the padding tokens are random.
    model_case("edge", "variable prompt lengths, padding never attended", (7, 30, 1, 16), 6),
    # w37: the prompt array is wider than the longest prompt (37 > 30), so no row fills it.
    model_case("edge", "prompt array wider than the longest prompt", (7, 30, 1, 16), 6, w=37),
    # One token repeated everywhere: only the positions tell the steps apart, so an off-by-one position shows at once.
    model_case("edge", "position of each new token (one token repeated)", (5, 9, 13), 8, same=True),
    model_case("edge", "prompts of a single token", (1, 1), 12),
    # H=3 on d=60: an odd head count with dh=20, not a power of two.
    model_case("edge", "odd head count (3 heads of 20)", (12, 5), 6, H=3, d=60),
    # 3584 + 512 = 4096 tokens: positions up to 4095. One head of 16 and V=256 keep the quadratic recomputation of the
    # truth (and a submission's plain prefill) near a second; the other cases cover the head split.
    model_case("edge", "4096 tokens in one sequence", (3584,), 512, H=1, d=16, V=256),
    # wq and wk scaled by 10 each: scores of several hundred, past exp's float64 limit (~709) at the top.
    model_case("precision", "softmax over the cache with overflow-scale scores", (40, 17), 6, qk=10),
    # Lengths 192 -> 448 (256 steps): the later length is over twice the earlier one (see MEMORY_GROWTH_FACTOR).
    model_case("memory", "cache grows linearly (bytes per token against the K/V payload)", (192, 192), 256, mem=True),
    model_case("speed", "decode step against the reference cache at 256 tokens", (256, 256), 2, speed=True),
    model_case("speed", "decode step against the reference cache at 1024 tokens", (1024, 1024), 2, speed=True),
    # Both robustness cases are requirements of ours (the task asks for one cache driven by prefill and decode steps):
    # their rules are stated by no prompt of ours, so they run and are shown but never scored.
    # Two caches of two sequences each, their steps interleaved: state kept at module level mixes them up.
    model_case(
        "robustness",
        "two caches alive at once",
        (11, 6, 9, 14),
        6,
        rules=("two-caches-at-once",),
        split=True,
    ),
    model_case(
        "robustness",
        "grouped-query heads (optional: 4 query heads share 2 K/V heads)",
        (9, 14),
        6,
        rules=("grouped-query-heads",),
        Hkv=2,
    ),
    *kv_cache_own.CASES,  # the own-model contract's (reference/kv_cache_own.py), collected under a profile naming it
)


# --- inputs and truth (grader process) --------------------------------------------------------------------------------


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Weights as ``w.<name>`` arrays, ``prompts`` (B, Tmax), ``lengths`` (B,), ``steps`` (S, B) and for speed cases
    ``timed`` (B,): the token of the timed step."""
    if case.contract == kv_cache_own.CONTRACT:
        return kv_cache_own.make_inputs(case, rng)
    p = case.params
    weights = toy_lm.init_weights(int(rng.integers(2**31)), p["V"], p["d"], p["H"], p["L"])
    dh = p["d"] // p["H"]
    for i in range(p["L"]):
        for name in ("wq", "wk"):
            weights[f"l{i}.{name}"] *= p.get("qk", 1.0)
        for name in ("wk", "wv"):  # grouped-query heads: keep the first n_kv_heads heads' columns
            weights[f"l{i}.{name}"] = np.ascontiguousarray(weights[f"l{i}.{name}"][:, : p["Hkv"] * dh])
    lengths = np.array(p["lengths"], dtype=np.int64)
    width = p.get("w", int(lengths.max()))
    b = len(lengths)
    prompts = rng.integers(0, p["V"], (b, width))  # the padding is random too: attending it changes the logits
    steps = rng.integers(0, p["V"], (p["S"], b))
    timed = rng.integers(0, p["V"], (b,))
    if p.get("same"):
        token = int(rng.integers(p["V"]))
        prompts[:] = np.where(np.arange(width) < lengths[:, None], token, prompts)
        steps[:] = token
    inputs = {f"w.{k}": v for k, v in weights.items()}
    inputs.update(prompts=prompts, lengths=lengths, steps=steps)
    if case.is_speed:
        inputs["timed"] = timed
    return inputs


def weights_of(inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> dict[str, Any]:
    """The weights dict a submission receives: the ``w.`` arrays and the two head counts."""
    weights: dict[str, Any] = {k[2:]: v for k, v in inputs.items() if k.startswith("w.")}
    weights.update(n_heads=int(params["H"]), n_kv_heads=int(params["Hkv"]))
    return weights


def mha_weights(weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Multi-head weights with the same outputs: each K/V head's columns repeated for the query heads that read it."""
    h, hkv = weights["n_heads"], weights["n_kv_heads"]
    d = weights["tok_emb"].shape[1]
    dh = d // h
    out = {k: v for k, v in weights.items() if isinstance(v, np.ndarray)}
    for key in [k for k in out if k.endswith((".wk", ".wv"))]:
        out[key] = np.repeat(out[key].reshape(d, hkv, dh), h // hkv, axis=1).reshape(d, d)
    return out


def sequences(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Every sequence in full: its prompt, then the tokens fed at each step."""
    return [np.concatenate([inputs["prompts"][b, :n], inputs["steps"][:, b]]) for b, n in enumerate(inputs["lengths"])]


def recompute(inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The truth: each sequence's causal forward from scratch, read at its last prompt position and at every step."""
    weights = weights_of(inputs, params)
    full = mha_weights(weights)
    rows = []
    for seq, n in zip(sequences(inputs), inputs["lengths"], strict=True):
        rows.append(toy_lm.forward(full, weights["n_heads"], seq)[n - 1 :])  # (S+1, V): prefill row, then each step
    logits = np.stack(rows, axis=1)  # (S+1, B, V)
    return {"prefill_logits": logits[0], "step_logits": logits[1:]}


def incremental(inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The same logits through this module's own cache: the same-precision baseline of the tolerance."""
    weights = weights_of(inputs, params)
    first, cache = prefill(weights, inputs["prompts"], inputs["lengths"])
    steps = []
    for tokens in inputs["steps"]:
        logits, cache = decode_step(weights, tokens, cache)
        steps.append(logits)
    return {"prefill_logits": first, "step_logits": np.stack(steps)}


def payload_bytes(params: Mapping[str, Any]) -> int:
    """Bytes of one token's keys and values over all layers in float64: 2 * L * n_kv_heads * dh * 8."""
    return 2 * params["L"] * params["Hkv"] * (params["d"] // params["H"]) * 8


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """Float64 logits of the from-scratch recomputation with their bounds; on memory cases the growth limit."""
    if case.contract == kv_cache_own.CONTRACT:
        return kv_cache_own.expected(case, inputs)
    want = recompute(inputs, case.params)
    base = incremental(inputs, case.params)
    tol = TOLERANCES["float64"]
    bounds: dict[str, Bound | AtMost] = {}
    for name in FLOAT_OUTPUTS:
        scale = max(1.0, float(np.max(np.abs(want[name]))))
        atol = max(tol.atol_floor * scale, tol.baseline_factor * float(np.max(np.abs(base[name] - want[name]))))
        bounds[name] = Bound(atol=atol, rtol=tol.rtol, dtype="float64")
    values: dict[str, Any] = dict(want)
    if case.params.get("mem"):
        payload = payload_bytes(case.params)
        values["growth_bytes_per_token"] = np.float64(np.nan)  # an AtMost figure has no truth value
        bounds["growth_bytes_per_token"] = AtMost(
            MEMORY_GROWTH_FACTOR * payload,
            f"cache bytes added per token (K/V payload {payload} B; limit {MEMORY_GROWTH_FACTOR:g}x, room for "
            "doubling preallocation)",
        )
    return Expected(values, bounds)


# --- the reference cache: the speed baseline and the tolerance's same-precision baseline ------------------------------


@dataclass
class ReferenceCache:
    """Per layer keys and values (B, n_kv_heads, capacity, dh), preallocated and doubled when full; ``lengths`` (B,)
    counts each sequence's tokens. Sequence b's slots at or past ``lengths[b]`` hold padding or nothing."""

    keys: list[np.ndarray]
    values: list[np.ndarray]
    lengths: np.ndarray


def _norm(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + 1e-5)


def _grouped_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """q (B, Hkv, g, Tq, dh) against k, v (B, Hkv, Tk, dh); allowed (B, Tq, Tk). Queries in blocks of 256, each
    against the keys up to the last one any of its rows may attend (in a causal prefill, half the work)."""
    out = np.empty_like(q)
    for start in range(0, q.shape[-2], 256):
        rows = slice(start, start + 256)
        span = int(np.flatnonzero(allowed[:, rows].any(axis=(0, 1))).max()) + 1
        scores = (q[..., rows, :] @ np.swapaxes(k[:, :, :span], -1, -2)[:, :, None]) / math.sqrt(q.shape[-1])
        scores = np.where(allowed[:, None, None, rows, :span], scores, -np.inf)
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        out[..., rows, :] = (weights / weights.sum(axis=-1, keepdims=True)) @ v[:, :, None, :span]
    return out


def _layer(weights: Mapping[str, Any], i: int, h: np.ndarray, cache: ReferenceCache, allowed: np.ndarray, at: Any):
    """One layer on hidden states h (B, T, d): K/V written to the cache at slots ``at``, attention over ``allowed``."""
    b, t, d = h.shape
    heads, kv_heads = weights["n_heads"], weights["n_kv_heads"]
    dh = d // heads
    a = _norm(h)
    q = (a @ weights[f"l{i}.wq"]).reshape(b, t, kv_heads, heads // kv_heads, dh).transpose(0, 2, 3, 1, 4)
    k, v = ((a @ weights[f"l{i}.w{n}"]).reshape(b, t, kv_heads, dh).transpose(0, 2, 1, 3) for n in "kv")
    if at is None:  # prefill: slots 0..T-1 of every row
        cache.keys[i][:, :, :t], cache.values[i][:, :, :t] = k, v
    else:  # decode: one slot per row, at that row's own length
        cache.keys[i][np.arange(b), :, at], cache.values[i][np.arange(b), :, at] = k[:, :, 0], v[:, :, 0]
    span = allowed.shape[-1]
    attn = _grouped_attention(q, cache.keys[i][:, :, :span], cache.values[i][:, :, :span], allowed)
    h = h + attn.transpose(0, 3, 1, 2, 4).reshape(b, t, d) @ weights[f"l{i}.wo"]
    return h + np.maximum(_norm(h) @ weights[f"l{i}.w1"], 0.0) @ weights[f"l{i}.w2"]


def prefill(weights: Mapping[str, Any], prompts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ReferenceCache]:
    """The contract's prefill: causal attention that also masks keys past each prompt's length."""
    b, t = prompts.shape
    layers, dh = toy_lm.n_layers_of(weights), weights["tok_emb"].shape[1] // weights["n_heads"]
    capacity = 1 << max(6, (t + 16).bit_length())  # room for some steps before the first doubling
    shape = (b, weights["n_kv_heads"], capacity, dh)
    cache = ReferenceCache(
        [np.zeros(shape) for _ in range(layers)], [np.zeros(shape) for _ in range(layers)], lengths.astype(np.int64)
    )
    allowed = np.tri(t, dtype=bool)[None] & (np.arange(t) < lengths[:, None])[:, None, :]
    h = weights["tok_emb"][prompts] + weights["pos_emb"][:t]
    for i in range(layers):
        h = _layer(weights, i, h, cache, allowed, None)
    return _norm(h[np.arange(b), lengths - 1]) @ weights["w_out"], cache


def decode_step(
    weights: Mapping[str, Any], tokens: np.ndarray, cache: ReferenceCache
) -> tuple[np.ndarray, ReferenceCache]:
    """The contract's decode step: append each row's K/V at its own length and attend keys up to it (in place)."""
    pos = cache.lengths
    if pos.max() >= cache.keys[0].shape[2]:  # full: double the capacity
        cache.keys = [np.concatenate([k, np.zeros_like(k)], axis=2) for k in cache.keys]
        cache.values = [np.concatenate([v, np.zeros_like(v)], axis=2) for v in cache.values]
    span = int(pos.max()) + 1
    allowed = (np.arange(span) <= pos[:, None])[:, None, :]  # (B, 1, span): keys 0..pos[b] of row b
    h = (weights["tok_emb"][tokens] + weights["pos_emb"][pos])[:, None, :]
    for i in range(len(cache.keys)):
        h = _layer(weights, i, h, cache, allowed, pos)
    cache.lengths = pos + 1
    return _norm(h[:, 0]) @ weights["w_out"], cache


# --- the grader's side of a request: what crosses, the feed, the memory figure ----------------------------------------


def child_inputs(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What crosses to the sandbox child: everything but the decode steps' tokens, which the feed hands out one call at
    a time (``reference/kv_feed.py``)."""
    if case.contract == kv_cache_own.CONTRACT:
        return kv_cache_own.child_inputs(case, inputs)
    return {k: v for k, v in inputs.items() if k not in ("steps", "timed")}


def services(case: Case, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The feed of this request: it hands out each step's tokens, keeps the logits graded, samples memory per call."""
    if case.contract == kv_cache_own.CONTRACT:
        return kv_cache_own.services(case, inputs)
    return {kv_feed.FEED: kv_feed.DecodeFeed(case.params, inputs)}


def measured_figures(
    case: Case, service_calls: dict[str, int], checkpoints: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Memory cases: ``growth_bytes_per_token`` from the grader's samples at each delivery (prefill, each step)."""
    del service_calls
    if case.contract == kv_cache_own.CONTRACT:
        return kv_cache_own.measured_figures(case, checkpoints)
    p = case.params
    if not p.get("mem"):
        return {}, {}
    batch = len(p["lengths"])
    tokens = [sum(p["lengths"]) + batch * s for s in range(p["S"] + 1)]
    figure, details = growth_per_token(checkpoints, kv_feed.labels(p, batch), tokens)
    return {"growth_bytes_per_token": np.float64(figure)}, details


# --- the driver (runs in the sandbox child) ---------------------------------------------------------------------------


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Prefill, then every step, delivering each call's logits to the grader's feed and taking the next step's tokens
    from its answer; speed cases time one more step at the end. Returns nothing: the delivered logits are graded."""
    if params.get("contract") == kv_cache_own.CONTRACT:
        return kv_cache_own.drive(run, inputs, params)
    weights = weights_of(inputs, params)
    before = _weights_digest(weights)
    rows = kv_feed.groups(params, len(inputs["lengths"]))
    caches: list[Any] = [None] * len(rows)
    answer: dict[str, np.ndarray] = {}
    for step, g in kv_feed.slots(params, len(inputs["lengths"])):
        if step is None:
            args = (weights, inputs["prompts"][rows[g]], inputs["lengths"][rows[g]])
            logits, caches[g] = run.unpack(run.call("prefill", *args), 2, "prefill to return (logits, cache)")
        else:
            returned = run.call("decode_step", weights, answer["tokens"], caches[g])
            logits, caches[g] = run.unpack(returned, 2, "decode_step to return (logits, cache)")
        where = "prefill" if step is None else f"decode step {step}"
        logits = _logits(run, where, logits, len(inputs["lengths"][rows[g]]), params["V"])
        if params.get("mem"):
            kv_feed.settle()
        answer = run.service(kv_feed.FEED, {"logits": logits})
        del logits
    if params.get("speed"):  # timed; its logits are not checked, as the timer may run it more than once
        run.call("decode_step", weights, answer["tokens"], caches[0], measure=True)
    if _weights_digest(weights) != before:
        raise run.contract_error("the weights were modified")
    return {}


def _logits(run: Any, where: str, value: Any, b: int, vocab: int) -> np.ndarray:
    """One call's logits as a NumPy array of shape (B, V) (torch and CuPy converted), else a contract error."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif type(value).__module__.startswith("cupy"):
        value = value.get()
    array = np.asarray(value)
    if array.shape != (b, vocab) or array.dtype.kind not in "biuf":
        raise run.contract_error(f"{where} returned logits of shape {array.shape} ({array.dtype}), want ({b}, {vocab})")
    return array


def _weights_digest(weights: Mapping[str, Any]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(weights):
        value = weights[key]
        digest.update(value.tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
    return digest.hexdigest()
