"""Flash-attention forward, one query row at a time (demo submission: correct but slow).

The bug is speed only: every value is right and nothing N x N is ever made, but a Python loop walks the N query rows
and each row multiplies against all the keys it may see as a matrix-vector product, so K and V are streamed from
memory once per row instead of once per tile. At the task's N = 4096 this is several times slower than a tiled
matrix-matrix version; it must lose most of the speed points and keep every other point.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def flash_attention_fwd(
    Q: NDArray[np.floating], K: NDArray[np.floating], V: NDArray[np.floating], tile_size: int, causal: bool = True
) -> NDArray[np.floating]:
    del tile_size  # rows are processed one at a time, whatever the tile
    n, d = Q.shape[-2], Q.shape[-1]
    scale = 1.0 / np.sqrt(d)  # softmax scale is 1/sqrt(D)
    out = np.empty(Q.shape, dtype=Q.dtype)
    for i in range(n):
        keys = i + 1 if causal else n  # row i sees keys 0..i under the causal mask
        # (B, H, keys, D) @ (B, H, D, 1): one matrix-vector product per (batch, head), in float64 (the row is
        # promoted; float64 K and V are used in place, float32 ones promoted by the product).
        scores = (K[..., :keys, :] @ Q[..., i, :, None].astype(np.float64))[..., 0] * scale
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))  # the row's own max: no overflow
        row = (weights[..., None, :] @ V[..., :keys, :])[..., 0, :]
        out[..., i, :] = row / weights.sum(axis=-1, keepdims=True)
    return out
