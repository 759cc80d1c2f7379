"""FlashAttention-style tiled forward pass in NumPy (demo submission: sample 2 of 2, with ONE deliberate bug).

Deliberate bug: the key-tile loop runs ``range(N // tile_size)``, dropping the final partial key tile (the bug of
demo-buggy's forward). Results are correct whenever N is a multiple of tile_size and wrong otherwise: this sample
passes the core cases and fails the edge cases with uneven tiles, so it does not count as a pass for pass@k.

Query tiles and key tiles of ``tile_size`` rows are combined with an online softmax, so no
N x N score matrix ever exists: the largest temporary is one (B, H, tile, tile) block.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def flash_attention_fwd(
    Q: NDArray[np.floating], K: NDArray[np.floating], V: NDArray[np.floating], tile_size: int, causal: bool = True
) -> NDArray[np.floating]:
    B, H, N, D = Q.shape
    sqrt_d = np.sqrt(D)  # softmax scale is 1/sqrt(D)
    n_tiles = -(-N // tile_size)  # ceiling division: the last tile may be partial
    out = np.empty(Q.shape, dtype=Q.dtype)
    for qt in range(n_tiles):
        qs, qe = qt * tile_size, min((qt + 1) * tile_size, N)
        # Work in float64 one tile at a time; astype copies, so the inputs are never modified.
        q = Q[..., qs:qe, :].astype(np.float64)
        row_max = np.full((B, H, qe - qs), -np.inf)
        row_sum = np.zeros((B, H, qe - qs))  # sum of exp(s - row_max) over the keys seen so far
        acc = np.zeros((B, H, qe - qs, D))  # unnormalised output, relative to row_max
        # DELIBERATE BUG: N // tile_size rounds down, so the last partial key tile is never visited.
        for kt in range(N // tile_size):
            ks, ke = kt * tile_size, min((kt + 1) * tile_size, N)
            if causal and ks >= qe:
                break  # this key tile and all later ones lie entirely above the diagonal
            # Scale after the product, as in the textbook formula: with scores near +-1000 the exp
            # amplifies rounding, so where the scale is applied shows up at the ~1e-11 level.
            s = q @ K[..., ks:ke, :].astype(np.float64).swapaxes(-1, -2) / sqrt_d
            if causal and ke - 1 > qs:  # the tile straddles the diagonal: mask keys j > i
                s = np.where(np.arange(ks, ke)[None, :] > np.arange(qs, qe)[:, None], -np.inf, s)
            # Every row sees key 0 in the first key tile, so new_max is finite from then on.
            new_max = np.maximum(row_max, s.max(axis=-1))
            alpha = np.exp(row_max - new_max)  # <= 1; exactly 0 on the first tile (old max is -inf)
            p = np.exp(s - new_max[..., None])
            row_sum = alpha * row_sum + p.sum(axis=-1)
            acc = alpha[..., None] * acc + p @ V[..., ks:ke, :].astype(np.float64)
            row_max = new_max
        out[..., qs:qe, :] = acc / row_sum[..., None]
    return out
