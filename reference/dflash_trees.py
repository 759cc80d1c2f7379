"""Trees for DFlash verification cases: the reference tree mask and acceptance rule, a drafter that knows the target,
random trees, hand-built scenarios and the grader's speculative loop.

The drafter decides each node's token by its kind, from the target model's greedy predictions along the node's path:
``m`` matches (the target's greedy token after the parent's path), ``x`` is a wrong token, ``n`` is a decoy that
skips ahead (the token the matching child of the parent would predict next, a typical drafter error), ``d`` repeats
the token of the nearest earlier sibling. A node of kind ``m`` under a rejected parent "would have matched": it equals
the target's prediction after a path that is itself wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# name -> (prompt length, parents, kinds); every node's parent comes earlier. Accepted path in the comment.
SCENARIOS: dict[str, tuple[int, list[int], str]] = {
    "chain-all": (9, [-1, 0, 1, 2, 3, 4], "mmmmmm"),  # all 6
    "chain-reject-3": (9, [-1, 0, 1, 2, 3, 4], "mmmxmm"),  # 0 1 2; 4 and 5 would have matched after the wrong 3
    # Roots 0 (right), 1 (wrong), 2 (a decoy carrying the depth-2 token); 0 -> 3 (right) -> 5 (right), 0 -> 4 (wrong).
    "first-root-siblings": (7, [-1, -1, -1, 0, 0, 3], "mxnmxm"),  # 0 3 5
    # Roots 0, 1 wrong, root 2 right; 0 -> 3 would have matched; 2 -> 4 (right) -> 6 (right), 2 -> 5 (wrong).
    "later-sibling": (7, [-1, -1, -1, 0, 2, 2, 4], "xxmmmxm"),  # 2 4 6
    # Root 0 wrong with children 1, 2 (and 2 -> 3) that would have matched; root 4 right, 4 -> 5 wrong.
    "rejected-parent": (6, [-1, 0, 0, 2, -1, 4], "xmmmmx"),  # 4
    "all-rejected": (6, [-1, 0, 0, -1, 3, 1], "xxnxxx"),  # none: the new token is the greedy token after the prompt
    "single-accepted": (5, [-1], "m"),  # 0
    "single-rejected": (5, [-1], "x"),  # none
    "deep-chain-40": (12, [-1, *range(39)], "m" * 40),  # all 40
    "deep-chain-reject-25": (12, [-1, *range(39)], "m" * 25 + "x" + "m" * 14),  # 0 .. 24
    # Roots 0 and 1 carry the same right token; 0 -> 2 is wrong, 1 -> 3 -> 4 are right: the longest path goes
    # through the second copy (walking only the first matching child would stop after one token).
    "repeated-siblings": (6, [-1, -1, 0, 1, 3], "mdxmm"),  # 1 3 4
    # A one-token prompt: 0 -> 1 (wrong) -> 3 (would have matched), 0 -> 2 (right) -> 4 (wrong).
    "prompt-length-1": (1, [-1, 0, 0, 1, 2], "mxmmx"),  # 0 2
}


def ancestors(parents: Sequence[int], i: int) -> list[int]:
    """Node i and its ancestors, root first."""
    path = []
    while i >= 0:
        path.append(i)
        i = int(parents[i])
    return path[::-1]


def tree_mask(prompt_len: int, parents: Sequence[int]) -> np.ndarray:
    """(P+N, P+N) bool, True = may attend: the prompt causal; node i sees the prompt, its ancestors and itself."""
    p, n = prompt_len, len(parents)
    mask = np.zeros((p + n, p + n), dtype=bool)
    mask[:p, :p] = np.tri(p, dtype=bool)
    mask[p:, :p] = True
    for i in range(n):
        mask[p + i, [p + j for j in ancestors(parents, i)]] = True
    return mask


def accepted_path(parents: Sequence[int], tokens: Sequence[int], greedy: np.ndarray, prompt_len: int) -> list[int]:
    """Nodes of the longest path from a root whose every node equals the greedy prediction at its parent's position
    (``greedy`` holds the argmax at every position of prompt + tree). Equal lengths: the path ending at the lower
    index (every such path carries the same tokens, so the outputs do not depend on the choice)."""
    ok = [False] * len(parents)
    for i, parent in enumerate(parents):
        at = prompt_len - 1 if parent < 0 else prompt_len + int(parent)
        ok[i] = int(tokens[i]) == int(greedy[at]) and (parent < 0 or ok[int(parent)])
    best: list[int] = []
    for i in range(len(parents)):
        if ok[i] and len(ancestors(parents, i)) > len(best):
            best = ancestors(parents, i)
    return best


def argmax_next(model: Any, context: Sequence[int]) -> int:
    """The target's greedy token after ``context`` (argmax of the raw logits: lowest id on an exact tie)."""
    return int(np.argmax(model.forward(np.asarray(context, dtype=np.int64))[-1]))


def draft_tokens(
    model: Any, prompt: Sequence[int], parents: Sequence[int], kinds: str, rng: np.random.Generator
) -> np.ndarray:
    """Each node's token by its kind (module docstring), from the target's predictions along the node's path.

    Level by level: one tree-masked forward gives the prediction at the prompt's end and at every node whose path is
    already drafted (deeper nodes hold placeholders that no shallower node can see), plus one forward per decoy.
    """
    prompt = [int(t) for t in prompt]
    depth = [len(ancestors(parents, i)) - 1 for i in range(len(parents))]
    tokens = np.zeros(len(parents), dtype=np.int64)
    mask = tree_mask(len(prompt), parents)
    for level in range(max(depth) + 1):
        greedy = model.forward(np.concatenate([prompt, tokens]), mask).argmax(axis=-1)
        for i in (i for i in range(len(parents)) if depth[i] == level):
            match = int(greedy[len(prompt) + parents[i] if parents[i] >= 0 else len(prompt) - 1])
            if kinds[i] == "m":
                tokens[i] = match
            elif kinds[i] == "n":
                path = [int(tokens[j]) for j in ancestors(parents, int(parents[i]))] if parents[i] >= 0 else []
                tokens[i] = argmax_next(model, [*prompt, *path, match])
            elif kinds[i] == "d":
                tokens[i] = next(tokens[j] for j in range(i - 1, -1, -1) if parents[j] == parents[i])
            else:
                wrong = int(rng.integers(model.vocab_size - 1))
                tokens[i] = wrong + (wrong >= match)  # uniform over the other tokens
    return tokens


def random_tree(rng: np.random.Generator, n: int, share: float) -> tuple[np.ndarray, str]:
    """Parents (a root, then chains, branches and a few more roots) and node kinds with ``share`` of them matching."""
    parents = []
    for i in range(n):
        r = rng.random()
        parents.append(-1 if i == 0 or r < 0.1 else i - 1 if r < 0.55 else int(rng.integers(0, i)))
    kinds = "".join(rng.choice(["m", "x", "n"], size=n, p=[share, 0.7 * (1 - share), 0.3 * (1 - share)]))
    return np.array(parents, dtype=np.int64), kinds


Verify = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[list[int], int]]


def speculative_loop(
    verify: Verify, drafter: Any, prompt: np.ndarray, n_new: int, seed: int, max_nodes: int, share: float
) -> tuple[list[int], list[int]]:
    """Draft a random tree, verify it, append the accepted tokens and the bonus token; until ``n_new`` tokens.

    Returns the first ``n_new`` generated tokens and the accepted length of every cycle. Cycle c draws its tree from
    ``default_rng([seed, c])``, so the grader replays exactly what the child drafted whenever the verifier is right.
    """
    seq, generated, accepted = [int(t) for t in prompt], [], []
    while len(generated) < n_new:
        rng = np.random.default_rng([seed, len(accepted)])
        parents, kinds = random_tree(rng, int(rng.integers(1, max_nodes + 1)), share)
        tokens = draft_tokens(drafter, seq, parents, kinds, rng)
        acc, new = verify(np.array(seq, dtype=np.int64), tokens, parents)
        seq += [*acc, new]
        generated += [*acc, new]
        accepted.append(len(acc))
    return generated[:n_new], accepted
