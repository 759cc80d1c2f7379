"""Scripted models for beam-search cases whose outcome must be pinned down by hand (EOS, ties, length penalty).

Each scenario is a :class:`reference.toy_lm.ScriptedLM` over 16 tokens (EOS = 15) and the prompt (1, 2): rows give the
log-probs of named tokens after a context; the rest of each row's mass is spread over the other tokens in slightly
different shares (no accidental ties, each far below the named ones). The comments give the search by hand; the
self-tests check the reference reproduces it and that the bug each scenario stands for changes the result.
"""

from __future__ import annotations

import math

import numpy as np

from reference.toy_lm import ScriptedLM

VOCAB = 16
EOS = 15
PROMPT = (1, 2)


def row(fixed: dict[int, float]) -> np.ndarray:
    """Log-probs with ``fixed`` tokens pinned; the other tokens share the remaining mass as 1 + 0.01 * rank."""
    rest = [t for t in range(VOCAB) if t not in fixed]
    mass = 1.0 - sum(math.exp(v) for v in fixed.values())
    shares = np.array([1.0 + 0.01 * i for i in range(len(rest))])
    out = np.empty(VOCAB)
    out[rest] = np.log(mass * shares / shares.sum())
    for token, value in fixed.items():
        out[token] = value
    return out


# name -> (rows by generated prefix, default row, K, max_new_tokens, alpha, and what the scenario shows)
SCRIPTED: dict[str, tuple[dict[tuple[int, ...], dict[int, float]], dict[int, float], int, int, float]] = {
    # K = 2, alpha 0. Step 2 pool: (4, 4) -2.0 and (3, EOS) -3.0; the EOS beam then keeps its slot while (4, 4, 4, 4)
    # falls to -5.0: result [(3, EOS) -3.0, (4, 4, 4, 4) -5.0]. Dropping finished beams loses (3, EOS).
    "ended": (
        {(): {4: -0.5, 3: -1.0}, (3,): {EOS: -2.0}, (4,): {4: -1.5}, (4, 4): {4: -1.5}, (4, 4, 4): {4: -1.5}},
        {},
        2,
        4,
        0.0,
    ),
    # K = 2, alpha 0, two steps: (4, 5) -1.427 beats (3, EOS) = log .5 + log .1 = -2.996. Without the EOS log-prob the
    # finished beam would score log .5 = -0.693 and come first.
    "eos_logprob": (
        {(): {3: math.log(0.5), 4: math.log(0.3)}, (3,): {EOS: math.log(0.1)}, (4,): {5: math.log(0.8)}},
        {},
        2,
        2,
        0.0,
    ),
    # K = 3; all three beams finish by step 4: (EOS) -1.5 (length 1), (3, EOS) -2.2 (2), (4, 4, 4, EOS) -3.4 (4).
    # alpha 0: -1.5, -2.2, -3.4; alpha 0.6: (3, EOS) -1.451, (4, 4, 4, EOS) -1.480, (EOS) -1.5; alpha 1: -0.85,
    # -1.1, -1.5. Three different orders; every intermediate pool was checked by hand for all three alphas.
    "length": (
        {
            (): {EOS: -1.5, 3: -1.2, 4: -1.0},
            (3,): {EOS: -1.0},
            (4,): {4: -1.1},
            (4, 4): {4: -1.1},
            (4, 4, 4): {EOS: -0.2},
        },
        {},
        3,
        6,
        0.0,
    ),
    # K = 3, alpha 0: one row everywhere with EOS at 0.5. Step 2 pool: (EOS) -0.69, (3, EOS) -2.30, (4, EOS) -3.00,
    # all finished (the best unfinished, (3, 3), is -3.22), so the search ends with 6 of its 8 steps unused.
    "all_finished": ({}, {EOS: math.log(0.5), 3: math.log(0.2), 4: math.log(0.1)}, 3, 8, 0.0),
    # K = 3, alpha 0: tokens 2, 5 and 9 share 0.25 each in every row, so every candidate built from them ties
    # exactly (same float64 numbers added in the same order). Result [(2, 2), (2, 5), (2, 9)].
    "ties": ({}, {2: math.log(0.25), 5: math.log(0.25), 9: math.log(0.25)}, 3, 2, 0.0),
}


def scripted_model(name: str) -> tuple[ScriptedLM, list[np.ndarray], int, int, float, int]:
    """(model, prompts, K, max_new_tokens, alpha, eos) of a scenario; the prompt is (1, 2)."""
    rows, default, k, max_new, alpha = SCRIPTED[name]
    table = {PROMPT + prefix: row(fixed) for prefix, fixed in rows.items()}
    return ScriptedLM(table, row(default)), [np.array(PROMPT, dtype=np.int64)], k, max_new, alpha, EOS
