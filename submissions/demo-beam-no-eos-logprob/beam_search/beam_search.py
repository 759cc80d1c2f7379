"""BUG (demo-beam-no-eos-logprob): a beam that emits EOS does not add the EOS token's log-prob (length still counts).

Batched beam search: all unfinished beams of all prompts go through one masked forward per step.

Beams of different lengths are left-padded into one (n, T) matrix; the mask hides the padding from every real query
(the pads attend only to themselves), and since the model takes a query's position from its mask, a padded row gives
the same logits as the unpadded sequence.
"""

from __future__ import annotations

import numpy as np

PAD = 0  # any valid token id: masked out


def _next_log_probs(model, sequences):
    """Next-token log-probs (n, V) after each sequence, one forward for all of them."""
    width = max(len(s) for s in sequences)
    tokens = np.full((len(sequences), width), PAD, dtype=np.int64)
    mask = np.zeros((len(sequences), width, width), dtype=bool)
    causal = np.tri(width, dtype=bool)
    for i, seq in enumerate(sequences):
        start = width - len(seq)
        tokens[i, start:] = seq
        mask[i, start:, start:] = causal[: len(seq), : len(seq)]
        mask[i, np.arange(start), np.arange(start)] = True  # pads see themselves only, so no row is empty
    logits = model.forward(tokens, mask)[:, -1, :]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _score(logp, length, alpha):
    return logp / length**alpha


def batched_beam_search(prompts, beam_width, max_new_tokens, alpha, eos_token_id, model):
    k = beam_width
    # pools[b]: list of (tokens tuple, log-prob, finished), best first
    pools = [[((), 0.0, False)] for _ in prompts]
    for _ in range(max_new_tokens):
        live = [(b, beam) for b, pool in enumerate(pools) for beam in pool if not beam[2]]
        if not live:
            break
        sequences = [np.concatenate([np.asarray(prompts[b]), np.array(beam[0], dtype=np.int64)]) for b, beam in live]
        lp = _next_log_probs(model, sequences)
        candidates = [[beam for beam in pool if beam[2]] for pool in pools]  # finished beams stay in the pool
        for (b, (tokens, logp, _)), row in zip(live, lp):
            top = np.lexsort((np.arange(row.size), -row))[: 2 * k]  # log-prob descending, then lower token id
            for t in top:
                gain = 0.0 if int(t) == eos_token_id else float(row[t])  # BUG: EOS's own log-prob must count
                candidates[b].append(((*tokens, int(t)), logp + gain, int(t) == eos_token_id))
        for b, cands in enumerate(candidates):
            if any(not beam[2] for beam in pools[b]):
                pools[b] = sorted(cands, key=lambda c: (-_score(c[1], len(c[0]), alpha), c[0]))[:k]
    return [[(np.array(t, dtype=np.int64), _score(lp, len(t), alpha)) for t, lp, _ in pool] for pool in pools]
