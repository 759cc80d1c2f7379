"""DFlash verification graded by recomputation, in the grader's process: the golden property and acceptance.

Where an acceptance rule allows more than one answer (``stop-at-first-rejection`` guarantees a walk and allows any
longer matching path), the grader checks what every right answer has instead of one answer's tokens:

- **golden**: the accepted tokens are those of a path of drafted nodes from a root, each the target's greedy token
  after the prompt and the path before it, and the new token is the target's greedy token after the whole path. The
  greedy tokens come from the grader's own tree-masked forward over prompt + tree (``tree_greedy``), so accepted
  tokens plus the new token reproduce greedy decoding whatever path was chosen.
- **acceptance**: at least as many tokens accepted as the case's rule guarantees (``accepted_path`` for
  ``longest-path``, ``stop_rule_path`` for ``stop-at-first-rejection``). Accepting more is never a fault: a longer
  path that passes the golden check is one the target itself would have generated.

Under ``longest-path`` the two together hold only for the reference's own answer (every longest matching path carries
the same tokens), so nothing is lost against an exact comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Problem = tuple[np.ndarray, np.ndarray, np.ndarray]  # prompt (P,), tree tokens (N,), parents (N,)


def judge(
    problems: Sequence[Problem],
    greedy: Sequence[np.ndarray],
    guarantees: Sequence[int],
    rule: str,
    outputs: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``golden`` and ``acceptance``: per problem why the returned (accepted_tokens, new_token) break the property, ""
    where it holds. ``outputs`` holds ``accepted`` (R, W), -1-padded, and ``new_token`` (R,) as the driver packs them;
    ``greedy[r]`` is the argmax at every row of problem r's tree-masked forward. Never raises."""
    accepted, new = outputs.get("accepted"), outputs.get("new_token")
    rows = len(problems)
    if not (_ints(accepted, 2) and _ints(new, 1) and accepted.shape[0] == rows and new.shape == (rows,)):
        unread = ["outputs not packed as the driver packs them"] * rows
        return {"golden": unread, "acceptance": unread}, {}
    golden, acceptance = [], []
    for r, ((prompt, tokens, parents), g, least) in enumerate(zip(problems, greedy, guarantees, strict=True)):
        got = _unpadded(accepted[r])
        golden.append(golden_reason(prompt.size, tokens, parents, g, got, int(new[r])))
        short = f"accepted {got.size} tokens, the rule {rule} guarantees {least} on this tree"
        acceptance.append(short if got.size < least else "")
    return {"golden": golden, "acceptance": acceptance}, {}


def golden_reason(
    prompt_len: int,
    tokens: Sequence[int],
    parents: Sequence[int],
    greedy: Sequence[int],
    accepted: Sequence[int],
    new: int,
) -> str:
    """Why ``accepted`` + ``new`` do not reproduce greedy decoding along a drafted path ("" when they do).

    The path is followed through every node that fits: siblings that repeat a token give several paths with the same
    tokens, and any of them will do (their greedy tokens agree up to rounding, so a token equal to any one's passes).
    """
    tokens, parents, greedy = [int(t) for t in tokens], [int(p) for p in parents], [int(g) for g in greedy]
    ends = [-1]  # the nodes the accepted tokens so far may have come through; -1 is the end of the prompt
    for j, token in enumerate(int(t) for t in accepted):
        drafted = [i for i, parent in enumerate(parents) if parent in ends and tokens[i] == token]
        if not drafted:
            return f"accepted token {j} (id {token}) is not drafted there: no node after the accepted path carries it"
        ends = [i for i in drafted if token == greedy[_row(prompt_len, parents[i])]]
        if not ends:
            want = greedy[_row(prompt_len, parents[drafted[0]])]
            return f"accepted token {j} (id {token}) is not the target's greedy token there ({want})"
    wants = sorted({greedy[_row(prompt_len, end)] for end in ends})
    if new not in wants:
        return f"new token {new}, the target's greedy token after the accepted path is {wants[0]}"
    return ""


def _row(prompt_len: int, node: int) -> int:
    """The row whose prediction follows ``node`` (-1: the last prompt token)."""
    return prompt_len - 1 if node < 0 else prompt_len + node


def _ints(x: Any, ndim: int) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == ndim and x.dtype.kind in "iu"


def _unpadded(row: np.ndarray) -> np.ndarray:
    """A padded row up to its last entry other than the -1 padding."""
    filled = np.nonzero(row != -1)[0]
    return row[: filled[-1] + 1] if filled.size else row[:0]
