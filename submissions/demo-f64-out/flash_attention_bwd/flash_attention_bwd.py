"""FlashAttention-2 style tiled forward and backward passes in NumPy (demo submission: demo-tiled's, returning float64).

The one change: O, dQ, dK and dV are float64 whatever the input dtype (float32 inputs give float64 outputs). The task
never asked float32 to stay float32, so only the robustness case tagged "added" may fail; every core, edge and precision
case must pass.

The forward keeps only the per-row logsumexp L = m + log(l); the backward recomputes each
probability tile P = exp(S - L) instead of storing an N x N matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


def _scores(q: Array, k: Array, qs: int, ks: int, causal: bool) -> Array:
    """Scaled scores of a query tile against a key tile, with keys j > i set to -inf."""
    # Scale after the product, as in the textbook formula: with scores near +-1000 the exp amplifies
    # rounding, so where the scale is applied shows up at the ~1e-11 level.
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    ke, qe = ks + k.shape[-2], qs + q.shape[-2]
    if causal and ke - 1 > qs:  # only tiles straddling the diagonal need a mask
        s = np.where(np.arange(ks, ke)[None, :] > np.arange(qs, qe)[:, None], -np.inf, s)
    return s


def flash_attention_fwd(
    Q: Array, K: Array, V: Array, tile_size: int, causal: bool = True
) -> tuple[Array, dict[str, Any]]:
    B, H, N, D = Q.shape
    n_tiles = -(-N // tile_size)  # the last tile may be partial
    out = np.empty(Q.shape)  # float64 whatever Q's dtype (changed from demo-tiled)
    lse = np.empty((B, H, N))
    for qt in range(n_tiles):
        qs, qe = qt * tile_size, min((qt + 1) * tile_size, N)
        q = Q[..., qs:qe, :].astype(np.float64)  # astype copies: inputs stay untouched
        row_max = np.full((B, H, qe - qs), -np.inf)
        row_sum = np.zeros((B, H, qe - qs))
        acc = np.zeros((B, H, qe - qs, D))
        for kt in range(n_tiles):
            ks, ke = kt * tile_size, min((kt + 1) * tile_size, N)
            if causal and ks >= qe:
                break  # entirely masked key tile (and all later ones)
            s = _scores(q, K[..., ks:ke, :].astype(np.float64), qs, ks, causal)
            new_max = np.maximum(row_max, s.max(axis=-1))
            alpha = np.exp(row_max - new_max)  # rescale the old accumulator down to the new max
            p = np.exp(s - new_max[..., None])
            row_sum = alpha * row_sum + p.sum(axis=-1)
            acc = alpha[..., None] * acc + p @ V[..., ks:ke, :].astype(np.float64)
            row_max = new_max
        out[..., qs:qe, :] = acc / row_sum[..., None]
        lse[..., qs:qe] = row_max + np.log(row_sum)
    return out, {"Q": Q, "K": K, "V": V, "O": out, "L": lse}


def flash_attention_bwd(
    dO: Array, cache: dict[str, Any], tile_size: int, causal: bool = True
) -> tuple[Array, Array, Array]:
    Q, K, V, out, lse = cache["Q"], cache["K"], cache["V"], cache["O"], cache["L"]
    N, D = Q.shape[-2:]
    scale = 1.0 / np.sqrt(D)
    n_tiles = -(-N // tile_size)
    # D_i = rowsum(dO * O) equals rowsum(P * dP), so the softmax backward never needs a full row of P.
    delta = np.einsum("bhnd,bhnd->bhn", dO.astype(np.float64), out.astype(np.float64))
    dQ, dK, dV = np.zeros(Q.shape), np.zeros(K.shape), np.zeros(V.shape)
    for qt in range(n_tiles):
        qs, qe = qt * tile_size, min((qt + 1) * tile_size, N)
        q = Q[..., qs:qe, :].astype(np.float64)
        do = dO[..., qs:qe, :].astype(np.float64)
        for kt in range(n_tiles):
            ks, ke = kt * tile_size, min((kt + 1) * tile_size, N)
            if causal and ks >= qe:
                break
            k = K[..., ks:ke, :].astype(np.float64)
            v = V[..., ks:ke, :].astype(np.float64)
            p = np.exp(_scores(q, k, qs, ks, causal) - lse[..., qs:qe, None])  # masked entries become 0
            dV[..., ks:ke, :] += p.swapaxes(-1, -2) @ do  # accumulated over all query tiles
            ds = p * (do @ v.swapaxes(-1, -2) - delta[..., qs:qe, None])
            dQ[..., qs:qe, :] += (ds @ k) * scale
            dK[..., ks:ke, :] += (ds.swapaxes(-1, -2) @ q) * scale
    return dQ, dK, dV  # float64 whatever the inputs' dtype (changed from demo-tiled)
