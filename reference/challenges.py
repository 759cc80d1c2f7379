"""Every challenge the grader knows, with the folder names submissions use for it.

The folder names include the public challenge scaffold's (``backwards``, ``fuse``, ``kv``) so that a clone of a
model-comparison repo can be graded in place. A challenge with no reference module yet is still listed: its folders are
discovered and reported as "no contract yet" instead of being silently ignored.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from reference.contract import Challenge

# Every challenge id, in report order; its contract is reference/<id>.py once the grader grades it.
_IDS = (
    "layer_norm_bwd",
    "softmax_topk",
    "kv_cache",
    "beam_search",
    "flash_attention",
    "flash_attention_bwd",
    "dflash_verify",
    "ternary_training",
)

_PLACEHOLDERS = (
    Challenge("layer_norm_bwd", "Layer-norm backward", ("layer_norm_bwd", "backwards")),
    Challenge("softmax_topk", "Fused softmax + top-k (CUDA)", ("softmax_topk", "fuse")),
    Challenge("kv_cache", "KV cache", ("kv_cache", "kv")),
    Challenge("beam_search", "Batched beam search", ("beam_search",)),
    Challenge("dflash_verify", "DFlash tree verification", ("dflash_verify",)),
    Challenge("ternary_training", "Ternary training", ("ternary_training",)),
)


def reference_module(challenge_id: str) -> ModuleType | None:
    """The contract module of a challenge, or None when the grader has none for it yet."""
    if challenge_id not in _IDS:
        raise KeyError(challenge_id)
    name = f"reference.{challenge_id}"
    return importlib.import_module(name) if importlib.util.find_spec(name) else None


def all_challenges() -> tuple[Challenge, ...]:
    """All eight challenges in report order; graded ones carry their entry points."""
    by_id = {c.id: c for c in _PLACEHOLDERS}
    for cid in _IDS:
        module = reference_module(cid)
        if module is not None:
            by_id[cid] = module.CHALLENGE
    return tuple(by_id[cid] for cid in _IDS)


def challenge_for_folder(folder_name: str) -> Challenge | None:
    """The challenge a submission folder belongs to, by our id or a scaffold alias."""
    for challenge in all_challenges():
        if folder_name in challenge.folder_names:
            return challenge
    return None
