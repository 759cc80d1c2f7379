"""Bytes held per token, from the grader's own memory samples of a sandbox child: the figure of KV-cache memory cases.

A memory case's driver sends checkpoints at fixed points of its protocol (``run.checkpoint(label)``); at each one the
grader samples the child's process tree from outside (``plugins/isolate/measure.py``, ``TreeMemory.current``) and
records ``{"label", "bytes"}``. This module turns such a record into a growth per token; every contract that measures a
cache (the grader's model, or a model of the submission's own) uses the same function. Runs in the grader; NumPy-free.
"""

from __future__ import annotations

from typing import Any

# Allowed growth per token, in K/V payloads (or in the prefill's own bytes per token, for a model of the submission's
# own): a cache that doubles its room holds at most 2x the tokens, and between two measured lengths (the later at least
# twice the earlier) it can add up to 3 payloads per token; 4 leaves room for a second copy of small per-token state. A
# cache that grows with the square of the length exceeds it many times over.
GROWTH_FACTOR = 4.0


def growth_per_token(
    checkpoints: list[dict[str, Any]], labels: list[str], tokens: list[int]
) -> tuple[float, dict[str, Any]]:
    """Bytes held per added token, from the grader's samples of the child's memory at ``checkpoints`` (``{"label",
    "bytes"}`` in order; the cache holds ``tokens[i]`` tokens at ``labels[i]``): the largest growth since the first
    checkpoint per token added since, over the checkpoints that hold at least twice the first one's tokens (a cache
    that doubles its room then adds at most 3 payloads per token: ``GROWTH_FACTOR``). NaN ("not
    measured") when the checkpoints are not exactly ``labels`` (a request that skipped or added one fails the case) or
    a sample could not be read (bytes < 0). Returns the figure and details for the record; ``details["unmeasured"]``
    says why a figure is NaN."""
    got = [str(c.get("label")) for c in checkpoints]
    if got != labels:
        first = next(
            (i for i, (a, b) in enumerate(zip(got, labels, strict=False)) if a != b), min(len(got), len(labels))
        )
        return float("nan"), {
            "unmeasured": f"memory checkpoints: expected {len(labels)} ({labels[0]} ... {labels[-1]}), got "
            f"{len(got)}; the first difference at checkpoint {first + 1}"
        }
    if any(int(c["bytes"]) < 0 for c in checkpoints):
        return float("nan"), {"unmeasured": "a memory checkpoint could not be read (too many files to walk)"}
    held = [int(c["bytes"]) - int(checkpoints[0]["bytes"]) for c in checkpoints]
    window = [i for i, n in enumerate(tokens) if n >= 2 * tokens[0]]
    if not window:
        raise ValueError("no checkpoint holds twice the first one's tokens: the case cannot measure growth")
    worst = max(window, key=lambda i: held[i] / (tokens[i] - tokens[0]))
    figure = held[worst] / (tokens[worst] - tokens[0])
    details = {"memory growth": {"at": labels[worst], "bytes": held[worst], "tokens": tokens[worst] - tokens[0]}}
    return figure, details
