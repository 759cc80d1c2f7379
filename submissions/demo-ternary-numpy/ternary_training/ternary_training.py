"""Ternary (BitNet b1.58-style) training of a tiny Qwen3-style model in plain NumPy (float32, hand-written backward).

Weights are ternary in the forward pass: groups of ``group_size`` consecutive weights along the input dimension, each
with scale mean(|w|) and codes round(w / scale) clipped to [-1, 1]. The straight-through estimator is explicit here:
the gradient computed for the dequantized weight is applied, unchanged, to the latent full-precision weight. Every
linear layer, the embeddings and the LM head are ternary; RMSNorm gains stay in full precision.
"""

import math

import numpy as np

TERNARY_KINDS = ("embed_tokens", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
LR, WARMUP = 3e-3, 20


def _project(w, group_size):
    """(codes, scales, dequantized) of a 2-D weight; the last partial group is its own group."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    starts = np.arange(0, cols, group_size)
    counts = np.minimum(group_size, cols - starts).astype(np.float32)
    scales = np.add.reduceat(np.abs(w), starts, axis=1) / counts
    full = np.repeat(scales, counts.astype(int), axis=1)
    safe = np.where(full > 0, full, 1.0).astype(np.float32)
    codes = np.clip(np.round(w / safe), -1, 1)
    return codes.astype(np.int8), scales, (codes * full).astype(np.float32)


def ternarize(w, group_size):
    codes, scales, _ = _project(w, group_size)
    return codes, scales


def ternary_linear(x, w, grad_y, group_size):
    wq = _project(w, group_size)[2]
    return x @ wq.T, grad_y @ wq, grad_y.T @ x  # straight-through: grad_w is the gradient of the dequantized weight


def _is_ternary(key):
    return key.rsplit(".", 1)[-1] in TERNARY_KINDS


class Model:
    def __init__(self, config, weights):
        self.config = config
        self.latent = {k: np.array(v, dtype=np.float32) for k, v in weights.items()}

    def effective(self):
        gs = self.config["group_size"]
        return {k: _project(v, gs)[2] if _is_ternary(k) else v for k, v in self.latent.items()}


# --- layers with their backward -------------------------------------------------------------------------------------


def _rms(x, g, eps):
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * r * g, (x * r, r, g)


def _rms_back(dy, cache):
    xn, r, g = cache
    dxn = dy * g
    dg = (dy * xn).reshape(-1, xn.shape[-1]).sum(axis=0)
    return r * (dxn - xn * np.mean(dxn * xn, axis=-1, keepdims=True)), dg


def _rope_tables(t, hd, theta):
    freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(t, dtype=np.float64)[:, None] * freq[None, :]
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _rot(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def _rot_t(x):  # the transpose of _rot
    h = x.shape[-1] // 2
    return np.concatenate([x[..., h:], -x[..., :h]], axis=-1)


def _attention(q, k, v):
    t, hd = q.shape[-2], q.shape[-1]
    s = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(hd))
    s = np.where(np.tri(t, dtype=bool), s, np.float32(-np.inf))
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v, p


def _attention_back(do, q, k, v, p):
    scale = np.float32(1.0 / math.sqrt(q.shape[-1]))
    dv = p.transpose(0, 1, 3, 2) @ do
    dp = do @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    return ds @ k * scale, ds.transpose(0, 1, 3, 2) @ q * scale, dv


def _silu(a):
    sig = 1.0 / (1.0 + np.exp(-a))
    return a * sig, sig


def forward(config, w, tokens, keep=False):
    """Log-probabilities (B, T, V); with ``keep`` also everything the backward needs."""
    c, eps = config, config["norm_eps"]
    b, t = tokens.shape
    hd, nh, nkv = c["head_dim"], c["n_heads"], c["n_kv_heads"]
    rep = nh // nkv
    cos, sin = _rope_tables(t, hd, c["rope_theta"])
    h = w["embed_tokens"][tokens]
    caches = []
    for i in range(c["n_layers"]):
        p = f"layers.{i}."
        x1, n1 = _rms(h, w[p + "attn_norm"], eps)
        q = (x1 @ w[p + "q_proj"].T).reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
        k = (x1 @ w[p + "k_proj"].T).reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        v = (x1 @ w[p + "v_proj"].T).reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        qn, nq = _rms(q, w[p + "q_norm"], eps)
        kn, nk = _rms(k, w[p + "k_norm"], eps)
        qr, kr = qn * cos + _rot(qn) * sin, kn * cos + _rot(kn) * sin
        kx, vx = np.repeat(kr, rep, axis=1), np.repeat(v, rep, axis=1)
        o, probs = _attention(qr, kx, vx)
        of = o.transpose(0, 2, 1, 3).reshape(b, t, nh * hd)
        h = h + of @ w[p + "o_proj"].T
        x2, n2 = _rms(h, w[p + "mlp_norm"], eps)
        a, up = x2 @ w[p + "gate_proj"].T, x2 @ w[p + "up_proj"].T
        s, sig = _silu(a)
        m = s * up
        h = h + m @ w[p + "down_proj"].T
        if keep:
            caches.append((x1, n1, nq, nk, qr, kx, vx, probs, of, x2, n2, a, up, s, sig, m))
    hn, nf = _rms(h, w["norm"], eps)
    head = w["embed_tokens"] if c["tied"] else w["lm_head"]
    logits = hn @ head.T
    logits = logits - logits.max(axis=-1, keepdims=True)
    lp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return (lp, (caches, hn, nf, cos, sin)) if keep else lp


def backward(config, w, tokens, dlogits, cache):
    """Gradients of every weight the forward used (the dequantized ones, for the ternary kinds)."""
    c = config
    caches, hn, nf, cos, sin = cache
    b, t = tokens.shape
    hd, nh, nkv = c["head_dim"], c["n_heads"], c["n_kv_heads"]
    rep = nh // nkv
    g = {k: np.zeros_like(v) for k, v in w.items()}
    head_key = "embed_tokens" if c["tied"] else "lm_head"
    flat = dlogits.reshape(-1, dlogits.shape[-1])
    g[head_key] += flat.T @ hn.reshape(-1, hn.shape[-1])
    dh, g["norm"] = _rms_back(dlogits @ w[head_key], nf)
    for i in reversed(range(c["n_layers"])):
        p = f"layers.{i}."
        x1, n1, nq, nk, qr, kx, vx, probs, of, x2, n2, a, up, s, sig, m = caches[i]
        dm = dh @ w[p + "down_proj"]
        g[p + "down_proj"] = dh.reshape(-1, dh.shape[-1]).T @ m.reshape(-1, m.shape[-1])
        da = dm * up * (sig + a * sig * (1 - sig))
        dup = dm * s
        x2f = x2.reshape(-1, x2.shape[-1])
        g[p + "gate_proj"] = da.reshape(-1, da.shape[-1]).T @ x2f
        g[p + "up_proj"] = dup.reshape(-1, dup.shape[-1]).T @ x2f
        dx2 = da @ w[p + "gate_proj"] + dup @ w[p + "up_proj"]
        dres, g[p + "mlp_norm"] = _rms_back(dx2, n2)
        dh = dh + dres
        g[p + "o_proj"] = dh.reshape(-1, dh.shape[-1]).T @ of.reshape(-1, of.shape[-1])
        do = (dh @ w[p + "o_proj"]).reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
        dqr, dkx, dvx = _attention_back(do, qr, kx, vx, probs)
        dkr = dkx.reshape(b, nkv, rep, t, hd).sum(axis=2)
        dv = dvx.reshape(b, nkv, rep, t, hd).sum(axis=2)
        dqn, g[p + "q_norm"] = _rms_back(dqr * cos + _rot_t(dqr * sin), nq)
        dkn, g[p + "k_norm"] = _rms_back(dkr * cos + _rot_t(dkr * sin), nk)
        x1f = x1.reshape(-1, x1.shape[-1])
        dx1 = np.zeros_like(x1)
        for key, grad in (("q_proj", dqn), ("k_proj", dkn), ("v_proj", dv)):
            gf = grad.transpose(0, 2, 1, 3).reshape(b * t, -1)
            g[p + key] = gf.T @ x1f
            dx1 += (gf @ w[p + key]).reshape(x1.shape)
        dres, g[p + "attn_norm"] = _rms_back(dx1, n1)
        dh = dh + dres
    np.add.at(g["embed_tokens"], tokens, dh)
    return g


def convert(config, weights):
    return Model(config, weights)


def log_probs(model, tokens):
    return forward(model.config, model.effective(), np.asarray(tokens))


def effective_weights(model):
    return model.effective()


def train(config, weights, batches, budget):
    model = convert(config, weights)
    adam_m = {k: np.zeros_like(v) for k, v in model.latent.items()}
    adam_v = {k: np.zeros_like(v) for k, v in model.latent.items()}
    steps, losses = budget["max_steps"], []
    for step, batch in enumerate(batches):  # one served batch per optimizer step; the stream ends at the budget
        lr = LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / steps))
        chunk = np.asarray(batch)
        inputs, targets = chunk[:, :-1], chunk[:, 1:]
        w = model.effective()
        lp, cache = forward(config, w, inputs, keep=True)
        losses.append(float(-np.take_along_axis(lp, targets[..., None], axis=-1).mean()))
        dlogits = np.exp(lp)
        np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1, -1)
        grads = backward(config, w, inputs, dlogits / np.float32(targets.size), cache)
        for k, grad in grads.items():  # the straight-through step: the dequantized weight's gradient, to the latent
            adam_m[k] = 0.9 * adam_m[k] + 0.1 * grad
            adam_v[k] = 0.95 * adam_v[k] + 0.05 * grad * grad
            m_hat, v_hat = adam_m[k] / (1 - 0.9 ** (step + 1)), adam_v[k] / (1 - 0.95 ** (step + 1))
            model.latent[k] -= (lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
    return model, losses
