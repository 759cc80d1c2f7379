"""BUG (demo-dflash-root-continues): a root that comes right after an accepted node is taken as that node's child, so
a sibling root carrying the token that follows a matching root is accepted as if it continued it.

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
    # depth_ok[i]: length of the matching path ending at node i (0 when node i or an ancestor is rejected).
    depth_ok = np.zeros(n, dtype=np.int64)
    for i in range(n):
        parent = int(tree_parents[i])
        if parent < 0 and i > 0 and depth_ok[i - 1] > 0:
            parent = i - 1  # BUG: a root is a root wherever it sits; only tree_parents says what a node continues
        at = p - 1 if parent < 0 else p + parent
        if tokens[i] == greedy[at] and (parent < 0 or depth_ok[parent] > 0):
            depth_ok[i] = 1 if parent < 0 else depth_ok[parent] + 1
    if depth_ok.max(initial=0) == 0:
        return np.zeros(0, dtype=np.int64), int(greedy[p - 1])
    last = int(np.argmax(depth_ok))  # the longest path; the lowest index on equal length
    path = []
    node = last
    while node >= 0:
        path.append(node)
        node = int(tree_parents[node])
    return tokens[path[::-1]], int(greedy[p + last])
