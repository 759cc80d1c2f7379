"""Beam search graded by recomputation: the grader rescores the sequences a submission returned and checks that they
form a valid final pool, so that any right answer passes where equal scores allow more than one (see the contract in
``reference/beam_search.py``). Runs in the grader's process only, from its own copy of the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reference import toy_lm

Item = tuple[np.ndarray, tuple[int, int, float, int]]  # a prompt and its call's (K, max_new_tokens, alpha, eos)


def rescore(
    inputs: Mapping[str, np.ndarray],
    items: Sequence[Item],
    reference_tokens: np.ndarray,
    suffixes: Sequence[str],
    outputs: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """In the grader, from its own model (built from ``inputs``): ``rescored{suffix}`` (items, K), the score of each
    returned sequence (0.0 where there is none to score), and ``beams{suffix}``, per item why its beams are not a valid
    final pool ("" where they are). ``reference_tokens`` (items, K, max_new) holds the reference's beams padded with
    -1, as the driver packs the returned ones into ``outputs["tokens{suffix}"]``. Never raises."""
    model = toy_lm.model_from_inputs(inputs)
    figures: dict[str, Any] = {}
    for s in suffixes:
        got = outputs.get(f"tokens{s}")
        rescored, reasons = np.zeros(reference_tokens.shape[:2]), []
        if not isinstance(got, np.ndarray) or got.shape != reference_tokens.shape or got.dtype.kind not in "iu":
            unread = ["tokens not packed as the driver packs them"] * len(items)
            figures |= {f"rescored{s}": rescored, f"beams{s}": unread}
            continue
        for item, (prompt, (_, max_new, alpha, eos)) in enumerate(items):
            beams = _beams(got[item])
            want = sum(b is not None for b in _beams(reference_tokens[item]))
            reasons.append(_invalid(beams, want, max_new, eos, model.vocab_size))
            for j, toks in enumerate(beams):
                if toks is not None and np.all((toks >= 0) & (toks < model.vocab_size)):
                    rescored[item, j] = _score(model, prompt, toks, alpha)
        figures |= {f"rescored{s}": rescored, f"beams{s}": reasons}
    return figures, {}


def _beams(rows: np.ndarray) -> list[np.ndarray | None]:
    """Each slot's tokens (the row up to its last id other than the -1 padding), None for an empty slot."""
    out: list[np.ndarray | None] = []
    for row in rows:
        filled = np.nonzero(row != -1)[0]
        out.append(row[: filled[-1] + 1].astype(np.int64) if filled.size else None)
    return out


def _invalid(beams: list[np.ndarray | None], want: int, max_new: int, eos: int, vocab: int) -> str:
    """Why the returned beams of one item are not a valid final pool of ``want`` beams, or "" when they are."""
    present = [b for b in beams if b is not None]
    gaps = [j for j, b in enumerate(beams[: len(present)]) if b is None]  # `None in beams` would compare arrays
    if gaps:
        return f"beam {gaps[0]} is empty but a later one is not"
    if len(present) != want:
        return f"{len(present)} beams returned, the pool holds {want}"
    seen: dict[tuple[int, ...], int] = {}
    for j, toks in enumerate(present):
        if np.any((toks < 0) | (toks >= vocab)):
            return f"beam {j}: a token outside [0, {vocab})"
        if np.any(toks[:-1] == eos):
            return f"beam {j}: EOS before its last token"
        if toks[-1] != eos and toks.size != max_new:
            return f"beam {j}: unfinished after {toks.size} tokens, before max_new_tokens ({max_new})"
        first = seen.setdefault(tuple(toks.tolist()), j)
        if first != j:
            return f"beams {first} and {j} are the same sequence"
    return ""


def _score(model: Any, prompt: np.ndarray, toks: np.ndarray, alpha: float) -> float:
    """The score of ``toks`` after ``prompt``: the model's log-probs of the tokens added in generation order."""
    rows = toy_lm.log_softmax(model.forward(np.concatenate([prompt, toks]))[prompt.size - 1 : -1])
    logp = 0.0
    for t, token in enumerate(toks):
        logp += float(rows[t, token])
    return logp / toks.size**alpha
