"""Trees for DFlash verification cases: the reference tree mask and acceptance rules, a drafter that knows the target,
random trees, every small tree, hand-built scenarios and the grader's speculative loop.

The drafter decides each node's token by its kind, from the target model's greedy predictions along the node's path:
``m`` matches (the target's greedy token after the parent's path), ``x`` is a wrong token, ``n`` is a decoy that
skips ahead (the token the matching child of the parent would predict next, a typical drafter error), ``d`` repeats
the token of the nearest earlier sibling. A node of kind ``m`` under a rejected parent "would have matched": it equals
the target's prediction after a path that is itself wrong.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# name -> (prompt length, parents, kinds); every node's parent comes earlier. Accepted path in the comment, and the
# stop rule's walk (stop_rule_path) where it is shorter.
SCENARIOS: dict[str, tuple[int, list[int], str]] = {
    "chain-all": (9, [-1, 0, 1, 2, 3, 4], "mmmmmm"),  # all 6
    "chain-reject-3": (9, [-1, 0, 1, 2, 3, 4], "mmmxmm"),  # 0 1 2; 4 and 5 would have matched after the wrong 3
    # Roots 0 (right), 1 (wrong), 2 (a decoy carrying the depth-2 token); 0 -> 3 (right) -> 5 (right), 0 -> 4 (wrong).
    "first-root-siblings": (7, [-1, -1, -1, 0, 0, 3], "mxnmxm"),  # 0 3 5; walk 0 (root 1 is eligible and wrong)
    # Roots 0, 1 wrong, root 2 right; 0 -> 3 would have matched; 2 -> 4 (right) -> 6 (right), 2 -> 5 (wrong).
    "later-sibling": (7, [-1, -1, -1, 0, 2, 2, 4], "xxmmmxm"),  # 2 4 6; walk none
    # Root 0 wrong with children 1, 2 (and 2 -> 3) that would have matched; root 4 right, 4 -> 5 wrong.
    "rejected-parent": (6, [-1, 0, 0, 2, -1, 4], "xmmmmx"),  # 4; walk none
    "all-rejected": (6, [-1, 0, 0, -1, 3, 1], "xxnxxx"),  # none: the new token is the greedy token after the prompt
    "single-accepted": (5, [-1], "m"),  # 0
    "single-rejected": (5, [-1], "x"),  # none
    "deep-chain-40": (12, [-1, *range(39)], "m" * 40),  # all 40
    "deep-chain-reject-25": (12, [-1, *range(39)], "m" * 25 + "x" + "m" * 14),  # 0 .. 24
    # Roots 0 and 1 carry the same right token; 0 -> 2 is wrong, 1 -> 3 -> 4 are right: the longest path goes
    # through the second copy (walking only the first matching child would stop after one token).
    "repeated-siblings": (6, [-1, -1, 0, 1, 3], "mdxmm"),  # 1 3 4; walk 0 (root 1 passed over, node 2 wrong)
    # A one-token prompt: 0 -> 1 (wrong) -> 3 (would have matched), 0 -> 2 (right) -> 4 (wrong).
    "prompt-length-1": (1, [-1, 0, 0, 1, 2], "mxmmx"),  # 0 2; walk 0
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


def stop_rule_path(parents: Sequence[int], tokens: Sequence[int], greedy: np.ndarray, prompt_len: int) -> list[int]:
    """Nodes that the rule stop-at-first-rejection is sure to accept: the shorter of two walks, one over the nodes in
    index order and one level by level (depth, then index), so that every reading of "on a rejection, stop processing
    further tree nodes" that takes the nodes in either order accepts at least as many.

    A node is *eligible* when it is a root or its parent was accepted (the others are never looked at). An eligible
    node that matches and hangs off the last accepted node (a root while none is) is accepted. An eligible node that
    does not match is a rejection and ends the walk, even a sibling of a node already accepted (a verifier may test
    it). An eligible node that matches but hangs off an earlier accepted node (a sibling that repeats an accepted
    token) is passed over. Every path a walk takes is a matching path, so :func:`accepted_path` is at least as long."""
    depth = [len(ancestors(parents, i)) for i in range(len(parents))]
    walks = [_walk(parents, tokens, greedy, prompt_len, order) for order in (range(len(parents)), _by_level(depth))]
    return min(walks, key=len)


def _by_level(depth: Sequence[int]) -> list[int]:
    return sorted(range(len(depth)), key=lambda i: (depth[i], i))


def _walk(
    parents: Sequence[int], tokens: Sequence[int], greedy: np.ndarray, prompt_len: int, order: Sequence[int]
) -> list[int]:
    """The stop rule's walk over the nodes in ``order`` (see :func:`stop_rule_path`)."""
    accepted: list[int] = []
    for i in order:
        parent = int(parents[i])
        if parent >= 0 and parent not in accepted:
            continue
        if int(tokens[i]) != int(greedy[prompt_len - 1 if parent < 0 else prompt_len + parent]):
            break
        if parent == (accepted[-1] if accepted else -1):
            accepted.append(i)
    return accepted


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


def tree_shapes(max_nodes: int) -> Iterator[tuple[int, ...]]:
    """Every parents array of 1 .. ``max_nodes`` nodes whose parents come earlier (-1 for a root): 1, 2, 6, 24, 120 of
    1 .. 5 nodes. Index order is part of the shape: verifier bugs that read a wrong row depend on it."""
    for n in range(1, max_nodes + 1):
        yield from itertools.product(*(range(-1, i) for i in range(n)))


def labellings(parents: Sequence[int], alphabet: str) -> list[str]:
    """Every kinds string over ``alphabet``; ``d`` (repeat the nearest earlier sibling) only where there is one."""
    has_sibling = [any(parents[j] == parents[i] for j in range(i)) for i in range(len(parents))]
    options = [[k for k in alphabet if k != "d" or has_sibling[i]] for i in range(len(parents))]
    return ["".join(kinds) for kinds in itertools.product(*options)]


def small_trees(max_nodes: int, decoy_nodes: int) -> list[tuple[tuple[int, ...], str]]:
    """(parents, kinds): every shape up to ``max_nodes`` nodes with every match/mismatch labelling (``m``/``x``), and
    every shape up to ``decoy_nodes`` nodes with every labelling that also uses decoys (``n``: the continuation one
    step ahead, such as a sibling root carrying the token after a matching root; ``d``: a repeated sibling token).
    Chains under a rejected node are the labellings with ``m`` below ``x``. Grouped by shape, in a fixed order."""
    return [
        (parents, kinds)
        for parents in tree_shapes(max_nodes)
        for kinds in labellings(parents, "mxnd" if len(parents) <= decoy_nodes else "mx")
    ]


def draft_batch(
    model: Any, prompts: np.ndarray, parents: Sequence[int], kinds: Sequence[str], rng: np.random.Generator
) -> np.ndarray:
    """:func:`draft_tokens` for n trees of one shape at once: ``prompts`` (n, P), one kinds string per tree; returns
    tokens (n, N). Level by level, one batched tree-masked forward gives the matches and, where a level has decoys,
    one more (with each node of the level set to its match) gives the token one step ahead at the node's own row."""
    n, p = prompts.shape
    depth = [len(ancestors(parents, i)) - 1 for i in range(len(parents))]
    labels = np.array([list(k) for k in kinds]).reshape(n, len(parents))
    tokens = np.zeros((n, len(parents)), dtype=np.int64)
    mask = tree_mask(p, parents)
    for level in range(max(depth) + 1):
        nodes = [i for i in range(len(parents)) if depth[i] == level]
        greedy = model.forward(np.concatenate([prompts, tokens], axis=1), mask).argmax(axis=-1)
        match = {i: greedy[:, p + parents[i] if parents[i] >= 0 else p - 1] for i in nodes}
        ahead = greedy
        if np.any(labels[:, nodes] == "n"):
            trial = tokens.copy()
            for i in nodes:
                trial[:, i] = match[i]
            ahead = model.forward(np.concatenate([prompts, trial], axis=1), mask).argmax(axis=-1)
        for i in nodes:
            wrong = rng.integers(model.vocab_size - 1, size=n)
            wrong += wrong >= match[i]  # uniform over the other tokens
            decoy = np.where(labels[:, i] == "n", ahead[:, p + i], wrong)
            tokens[:, i] = np.where(labels[:, i] == "m", match[i], decoy)
        for i in nodes:  # in index order, after the rest of the level: a repeat may copy an earlier repeat
            earlier = [j for j in range(i - 1, -1, -1) if parents[j] == parents[i]]
            if earlier:
                tokens[:, i] = np.where(labels[:, i] == "d", tokens[:, earlier[0]], tokens[:, i])
    return tokens


def tree_greedy(model: Any, problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """For each (prompt, tree tokens, parents): the argmax at every row of one tree-masked forward over prompt + tree
    (what a verifier compares with). Problems of one shape and prompt length share one batched forward."""
    groups: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    for r, (prompt, _, parents) in enumerate(problems):
        groups[(prompt.size, tuple(int(x) for x in parents))].append(r)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(problems)
    for (p, parents), rows in groups.items():
        seqs = np.stack([np.concatenate([problems[r][0], problems[r][1]]) for r in rows]).astype(np.int64)
        for r, greedy in zip(rows, model.forward(seqs, tree_mask(p, parents)).argmax(axis=-1), strict=True):
            out[r] = greedy
    return out


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
