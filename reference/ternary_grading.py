"""The grader-side half of the ternary challenge: coverage probes, the training corpus and the figures the grader
measures on the weights a submission returns (held-out bits per byte, loss before and after, greedy samples).

Imported only in the grader's process, from :mod:`reference.ternary_training`'s ``make_inputs`` and ``expected``:
it holds the held-out split, which never enters the sandbox child. Everything measured here comes from the grader's
own float64 forward (:mod:`reference.qwen3_tiny`); nothing the submission reports about itself is used.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reference import corpus as corpora
from reference import qwen3_tiny as qwen
from reference import ternary_training as tt
from reference.contract import AtMost, Bound, Case, Expected
from reference.flash_attention import bound_for

_TRAIN_DATA: list[Path] = []  # --train-data: a user's text file replaces the synthetic corpus (set by plugins.ternary)
_CORPORA: dict[str, corpora.Corpus] = {}  # by digest of the training tokens: make_inputs -> expected, same process
PROMPTS, PROMPT_LENGTH, SAMPLE_LENGTH = 3, 24, 48
BATCH_STREAM = 1  # the training stream's generator: the case's seed and this, apart from the submission's own seed
BUDGET_CHECK = "batches past the budget"


def use_train_data(path: Path | None) -> None:
    """Grade training on ``path`` (bytes as tokens, last tenth held out) instead of the synthetic source."""
    _TRAIN_DATA[:] = [path] if path is not None else []


def _digest(tokens: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(tokens).tobytes(), digest_size=16).hexdigest()


def _config(case: Case, vocab: int) -> dict[str, Any]:
    return dict(case.params["model"]) | {"vocab_size": vocab}


def _plain(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _json(value: Any) -> Any:
    """Details as builtins only (they travel through xdist, which refuses NumPy scalars); non-finite as None."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return _plain(float(value))
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


# --- layer 3: coverage ------------------------------------------------------------------------------------------------


def coverage_weights(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Latent weights whose forward is sensitive to every kind: unit-variance projections (std 1/sqrt(fan_in)),
    embeddings of std d_model^(-1/4), gains near 1; every ternary matrix kept off the rounding boundary."""
    out = {}
    for key, shape in qwen.weight_shapes(config).items():
        if qwen.kind_of(key) is None:
            out[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            std = shape[1] ** (-0.25 if key == "embed_tokens" else -0.5)  # tied logits of std about d^(1/4)
            out[key] = tt.safe_weights(rng.standard_normal(shape) * std, config["group_size"])
    return out


def permute_within_codes(w: np.ndarray, group: int, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``w`` with the values of each (row, group, code) class shuffled among themselves, in the listed rows: our codes
    and scales are unchanged (to rounding of the mean), the latent values are not."""
    codes, _ = tt.ternarize(w, group)
    out = w.copy()
    for r in rows:
        for start in range(0, w.shape[1], group):
            for code in (-1, 0, 1):
                where = start + np.nonzero(codes[r, start : start + group] == code)[0]
                if len(where) > 1:
                    out[r, where] = w[r, np.roll(where, 1 + int(rng.integers(len(where) - 1)))]
    return out


def probe_targets(config: dict[str, Any], kind: str) -> tuple[list[str], np.ndarray | None]:
    """Keys a kind's probe permutes and the rows (None: all). In a tied model both probes permute the shared table:
    the lookup probe the rows of tokens in the input (first half of the vocabulary), the head probe the others."""
    v = config["vocab_size"]
    if config["tied"] and kind in ("embed_tokens", "lm_head"):
        return ["embed_tokens"], np.arange(v // 2) if kind == "embed_tokens" else np.arange(v // 2, v)
    return [k for k in qwen.ternary_keys(config) if qwen.kind_of(k) == kind], None


def coverage_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    p = case.params
    config = _config(case, p["vocab"])
    weights = coverage_weights(config, rng)
    inputs = {"tokens": rng.integers(0, p["vocab"] // 2, size=(p["batch"], p["length"]))}
    inputs |= {f"w.{k}": v for k, v in weights.items()}
    for kind in qwen.KINDS:
        keys, rows = probe_targets(config, kind)
        for key in keys:
            chosen = np.arange(weights[key].shape[0]) if rows is None else rows
            inputs[f"p.{kind}.{key}"] = permute_within_codes(weights[key], config["group_size"], chosen, rng)
    return inputs


def _full_precision_variant(
    config: dict[str, Any], latent: dict[str, np.ndarray], projected: dict[str, np.ndarray], kind: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model with one kind in full precision (a tied table is split so the lookup and the head can differ)."""
    weights = dict(projected)
    if config["tied"] and kind in ("embed_tokens", "lm_head"):
        weights["lm_head"] = latent["embed_tokens"] if kind == "lm_head" else projected["embed_tokens"]
        weights["embed_tokens"] = latent["embed_tokens"] if kind == "embed_tokens" else projected["embed_tokens"]
        return config | {"tied": False}, weights
    return config, weights | {k: latent[k] for k in probe_targets(config, kind)[0]}


def coverage_expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    config = _config(case, inputs["w.embed_tokens"].shape[0])
    latent = {k[2:]: v.astype(np.float64) for k, v in inputs.items() if k.startswith("w.")}
    projected = tt.project(latent, config["group_size"])
    tokens = inputs["tokens"]
    truth = qwen.log_probs(projected, config, tokens)
    bound = bound_for(tt.TOLERANCES["log_probs"], truth, qwen.log_probs(projected, config, tokens, np.float32),
                         np.dtype(np.float32))  # fmt: skip
    sensitivity = {}
    for kind in qwen.KINDS:
        probed = latent | {k[len(f"p.{kind}.") :]: v for k, v in inputs.items() if k.startswith(f"p.{kind}.")}
        moved = [qwen.log_probs(*reversed(_full_precision_variant(config, w, projected, kind)), tokens)
                 for w in (latent, probed)]  # fmt: skip
        sensitivity[kind] = float(np.max(np.abs(moved[0] - moved[1])))
        if sensitivity[kind] < tt.PROBE_MARGIN * tt.PROBE_LIMIT:  # the probe could not tell: a grader bug, not a grade
            raise RuntimeError(f"{case.id}: the {kind} probe moves a full-precision forward by {sensitivity[kind]:.2g}")
    exported = [k for k in qwen.KINDS if not (config["tied"] and k == "lm_head")]
    values: dict[str, Any] = {"log_probs": truth}
    bounds: dict[str, Any] = {"log_probs": Bound(bound.atol, bound.rtol, None)}
    for kind in qwen.KINDS:
        if kind in exported:
            values[f"export {kind}"] = None
            bounds[f"export {kind}"] = AtMost(tt.TERNARY_LIMIT, "largest deviation from our projection (relative)")
        values[f"forward {kind}"] = None
        bounds[f"forward {kind}"] = AtMost(tt.PROBE_LIMIT, "log-prob change under a projection-preserving probe")

    def derive(outputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        figures: dict[str, Any] = {}
        table: dict[str, dict[str, Any]] = {}
        for kind in qwen.KINDS:
            table[kind] = {"sensitivity": sensitivity[kind]}
            if kind in exported:
                keys = [k for k in qwen.ternary_keys(config) if qwen.kind_of(k) == kind]
                got = [outputs.get(f"eff.{k}") for k in keys]
                figures[f"export {kind}"] = max(
                    _relative_error(g, projected[k]) for g, k in zip(got, keys, strict=True)
                )
                usable = all(_usable(g, projected[k].shape) for g, k in zip(got, keys, strict=True))
                ternary = max(tt.ternary_deviation(g, config["group_size"]) for g in got) if usable else math.nan
                table[kind] |= {"export": _plain(figures[f"export {kind}"]), "ternary": _plain(ternary)}
            figures[f"forward {kind}"] = _max_change(outputs.get(f"probe.{kind}"), outputs.get("log_probs"))
            table[kind]["forward"] = _plain(figures[f"forward {kind}"])
        return figures, _json({"coverage": table, "tied": config["tied"]})

    return Expected(values, bounds, derive=derive)


def _relative_error(got: Any, want: np.ndarray) -> float:
    """max |got - want| / max |want|, or NaN when ``got`` is missing, misshapen or not finite."""
    if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype.kind not in "iuf":
        return math.nan
    err = float(np.max(np.abs(got.astype(np.float64) - want))) / max(float(np.max(np.abs(want))), 1e-300)
    return err if math.isfinite(err) else math.nan


def _max_change(probe: Any, base: Any) -> float:
    if not (isinstance(probe, np.ndarray) and isinstance(base, np.ndarray)) or probe.shape != base.shape:
        return math.nan
    change = float(np.max(np.abs(probe.astype(np.float64) - base.astype(np.float64))))
    return change if math.isfinite(change) else math.nan


# --- layer 4: training ------------------------------------------------------------------------------------------------


def training_corpus(rng: np.random.Generator) -> corpora.Corpus:
    if _TRAIN_DATA:
        return corpora.from_file(_TRAIN_DATA[0])
    return corpora.synthetic(tt.TRAIN_TOKENS, tt.HELD_OUT_WINDOWS * tt.EVAL_LENGTH + 1, rng)


def training_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    data = training_corpus(rng)
    _CORPORA[_digest(data.train)] = data
    config = _config(case, data.vocab_size)
    weights = qwen.init_weights(config, rng)
    probe = qwen.windows(data.train, tt.EVAL_LENGTH, 4)[:, :-1]
    inputs = {f"w.{k}": v for k, v in weights.items()}
    return inputs | {"tokens": data.train, "probe_tokens": probe, "seed": np.asarray(rng.integers(2**31))}


class BatchServer:
    """The grader's side of the training stream (service ``batch``), one per request: each call returns the next batch,
    int64 windows (batch_size, seq_len + 1) of the training split at starts drawn by the grader's own generator, the
    same sequence for every submission in a run; a call past ``max_steps`` is refused (a ValueError)."""

    def __init__(self, tokens: np.ndarray, budget: Mapping[str, Any], seed: int):
        self.tokens, self.budget = tokens, budget
        self.rng = np.random.default_rng([seed, BATCH_STREAM])
        self.served = 0

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        del arrays  # a batch takes no arguments: whatever is sent, the grader's stream decides
        if self.served >= self.budget["max_steps"]:
            raise ValueError(f"the training budget of {self.budget['max_steps']} batches is spent")
        self.served += 1
        length = self.budget["seq_len"] + 1
        starts = self.rng.integers(0, len(self.tokens) - length, size=self.budget["batch_size"])
        return {"tokens": np.ascontiguousarray(self.tokens[starts[:, None] + np.arange(length)], dtype=np.int64)}


def budget_figures(budget: Mapping[str, Any], calls: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The grader's count of batch calls as figures: every call up to the budget was served, every later one refused."""
    served = min(calls, budget["max_steps"])
    figures = {BUDGET_CHECK: float(calls - served)}
    return figures, {"steps": served, "max_steps": budget["max_steps"], "refused": calls - served}


def held_out_limit(unigram: float, floor: float | None) -> float:
    """Bits per byte to beat: a share of the way from the unigram baseline to the floor, or the baseline itself."""
    return unigram if floor is None else unigram - tt.HELD_OUT_GAP * (unigram - floor)


def training_expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    data = _CORPORA[_digest(inputs["tokens"])]
    config = _config(case, data.vocab_size)
    sample = data.train[: tt.TRAIN_SAMPLE_WINDOWS * tt.EVAL_LENGTH + 1]
    initial = tt.project({k[2:]: v for k, v in inputs.items() if k.startswith("w.")}, config["group_size"])
    initial_bits = qwen.bits_per_token(initial, config, sample, tt.EVAL_LENGTH)
    unigram = corpora.unigram_bits(data.train, data.held_out, data.vocab_size)
    floor = corpora.source().windowed_floor(tt.EVAL_LENGTH) if data.floor_bits is not None else None
    limit = held_out_limit(unigram, floor)
    kinds = [k for k in qwen.KINDS if not (config["tied"] and k == "lm_head")]
    bounds: dict[str, Any] = {
        f"ternary {k}": AtMost(tt.TERNARY_LIMIT, "largest distance from {-1, 0, 1} x group scale") for k in kinds
    }
    bounds["forward reproduced"] = AtMost(tt.REPRODUCE_LIMIT, "log-prob error of our forward on the exported weights")
    bounds["training loss"] = AtMost(tt.LOSS_RATIO_LIMIT, "final / initial loss on a training sample")
    bounds["held-out bits per byte"] = AtMost(limit, "held-out bits per byte")
    bounds[BUDGET_CHECK] = AtMost(0, "batch requests the grader refused once the training budget was spent")
    shapes = qwen.weight_shapes(config)

    def derive(outputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        weights = {k: outputs.get(f"eff.{k}") for k in shapes}
        bad = [k for k, w in weights.items() if not _usable(w, shapes[k])]
        figures: dict[str, Any] = {
            f"ternary {k}": max((math.nan if key in bad else tt.ternary_deviation(weights[key], config["group_size"])
                                 for key in shapes if qwen.kind_of(key) == k), default=math.nan)
            for k in kinds
        }  # fmt: skip
        details: dict[str, Any] = {"corpus": data.name, "unigram_bits": unigram, "floor_bits": floor}
        details |= {"limit_bits": limit, "train_bits_initial": initial_bits, "unusable": bad}
        details["losses"] = _curve(outputs.get("losses"))
        if bad:
            return figures | {"forward reproduced": math.nan, "training loss": math.nan}, _json(details)
        weights = {k: w.astype(np.float64) for k, w in weights.items()}
        figures["forward reproduced"] = _reproduction_error(outputs.get("log_probs"), weights, config, inputs)
        final_bits = qwen.bits_per_token(weights, config, sample, tt.EVAL_LENGTH)
        figures["training loss"] = final_bits / initial_bits
        held = qwen.bits_per_token(weights, config, data.held_out, tt.EVAL_LENGTH)
        figures["held-out bits per byte"] = held
        details |= {"train_bits_final": final_bits, "held_out_bits": held, "samples": _samples(weights, config, data)}
        return figures, _json(details)

    return Expected(dict.fromkeys(bounds), bounds, derive=derive)


def _usable(w: Any, shape: tuple[int, ...]) -> bool:
    return isinstance(w, np.ndarray) and w.shape == shape and w.dtype.kind == "f" and bool(np.all(np.isfinite(w)))


def _reproduction_error(got: Any, weights: dict[str, np.ndarray], config: dict[str, Any], inputs: Any) -> float:
    """max |submission's log-probs - ours on its exported weights| / max(1, max |ours|) on the probe tokens."""
    ours = qwen.log_probs(weights, config, inputs["probe_tokens"])
    if not isinstance(got, np.ndarray) or got.shape != ours.shape:
        return math.nan
    err = float(np.max(np.abs(got.astype(np.float64) - ours))) / max(1.0, float(np.max(np.abs(ours))))
    return err if math.isfinite(err) else math.nan


def _curve(losses: Any) -> dict[str, Any] | None:
    """The submission's own loss curve, summarised for display only."""
    if not isinstance(losses, np.ndarray) or losses.ndim != 1 or not losses.size:
        return None
    return {"steps": int(losses.size), "first": _plain(float(losses[0])), "last": _plain(float(losses[-1]))}


def _samples(weights: dict[str, np.ndarray], config: dict[str, Any], data: corpora.Corpus) -> list[dict[str, str]]:
    """Greedy continuations of prompts taken from the held-out split, decoded to text."""
    starts = np.linspace(0, len(data.held_out) - PROMPT_LENGTH - 1, PROMPTS).astype(int)
    out = []
    for s in starts:
        prompt = data.held_out[s : s + PROMPT_LENGTH]
        text = qwen.greedy(weights, config, prompt, SAMPLE_LENGTH)
        out.append({"prompt": data.decode(prompt), "continuation": data.decode(text)})
    return out
