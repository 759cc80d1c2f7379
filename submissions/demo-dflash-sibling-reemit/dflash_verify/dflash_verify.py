"""BUG (demo-dflash-sibling-reemit): walks the nodes in index order and accepts any node that matches the last
prediction, whether or not its parent was the node just accepted (so a sibling or cousin is taken after a node).

DFlash tree verification (greedy): one masked forward over prompt + tree, then the longest matching path."""

from __future__ import annotations

import numpy as np


def build_tree_mask(prompt_len, tree_parents):
    """Boolean (P+N, P+N): causal prompt; node i sees the prompt, its ancestors and itself."""
    p, n = prompt_len, len(tree_parents)
    mask = np.zeros((p + n, p + n), dtype=bool)
    mask[:p, :p] = np.tril(np.ones((p, p), dtype=bool))
    mask[p:, :p] = True
    for i in range(n):
        # Parents come earlier, so node i's row is its parent's row plus itself.
        parent = int(tree_parents[i])
        if parent >= 0:
            mask[p + i, p : p + n] = mask[p + parent, p : p + n]
        mask[p + i, p + i] = True
    return mask


def verify_and_accept(prompt_tokens, tree_tokens, tree_parents, target_model, temperature=0):
    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    tokens = np.asarray(tree_tokens, dtype=np.int64)
    p, n = prompt.size, tokens.size
    logits = target_model.forward(np.concatenate([prompt, tokens]), build_tree_mask(p, tree_parents))
    greedy = logits.argmax(axis=-1)
    accepted, expect = [], int(greedy[p - 1])
    for i in range(n):
        if tokens[i] == expect:  # BUG: must also require that node i's parent is the node accepted last
            accepted.append(int(tokens[i]))
            expect = int(greedy[p + i])
    return np.array(accepted, dtype=np.int64), expect
