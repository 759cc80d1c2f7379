"""Ternary (BitNet b1.58-style) training of a tiny Qwen3-style model in MLX (runs on MLX's CPU build on Linux).

Weights are ternary in the forward pass: groups of ``group_size`` consecutive weights along the input dimension, each
with scale mean(|w|) and codes round(w / scale) clipped to [-1, 1]. A straight-through estimator (``stop_gradient``)
passes the gradient of the dequantized weight to the latent full-precision weight unchanged. Every linear layer, the
embeddings and the LM head are ternary; RMSNorm gains stay in full precision.
"""

import math

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

TERNARY_KINDS = ("embed_tokens", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
ROWS, SEQ_LEN, LR, WARMUP = 8, 64, 3e-3, 20  # small steps: MLX's CPU build multiplies slowly on Linux


def _project(w, group_size):
    """(codes, scales, dequantized) of a 2-D weight; the last partial group is its own group."""
    rows, cols = w.shape
    groups = -(-cols // group_size)
    padded = mx.pad(w, [(0, 0), (0, groups * group_size - cols)]).reshape(rows, groups, group_size)
    counts = mx.array([min(group_size, cols - g * group_size) for g in range(groups)], dtype=mx.float32)
    scales = mx.abs(padded).sum(axis=-1) / counts  # padding zeros add nothing; divide by the real count
    safe = mx.where(scales > 0, scales, 1.0)
    codes = mx.clip(mx.round(padded / safe[..., None]), -1, 1)
    dequantized = (codes * scales[..., None]).reshape(rows, -1)[:, :cols]
    return codes.reshape(rows, -1)[:, :cols], scales, dequantized


def ste(w, group_size):
    """The dequantized ternary weight in the forward; the identity in the backward (scale held constant)."""
    return w + mx.stop_gradient(_project(w, group_size)[2] - w)


def ternarize(w, group_size):
    codes, scales, _ = _project(mx.array(w), group_size)
    return codes.astype(mx.int8), scales


def ternary_linear(x, w, grad_y, group_size):
    x, w, grad_y = mx.array(x), mx.array(w), mx.array(grad_y)

    def forward(x, w):
        return x @ ste(w, group_size).T

    y, (grad_x, grad_w) = mx.vjp(forward, [x, w], [grad_y])
    return y[0], grad_x, grad_w


def _effective(config, latent):
    gs = config["group_size"]
    return {k: ste(v, gs) if k.rsplit(".", 1)[-1] in TERNARY_KINDS else v for k, v in latent.items()}


def _rms(x, gain, eps):
    return x * mx.rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + mx.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin


def _forward(config, latent, tokens):
    c, w = config, _effective(config, latent)
    b, t = tokens.shape
    hd, nh, nkv = c["head_dim"], c["n_heads"], c["n_kv_heads"]
    freq = c["rope_theta"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    angles = np.arange(t)[:, None] * freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    cos, sin = mx.array(np.cos(angles).astype(np.float32)), mx.array(np.sin(angles).astype(np.float32))
    mask = mx.array(np.triu(np.full((t, t), -np.inf, dtype=np.float32), k=1))
    h = w["embed_tokens"][tokens]
    for i in range(c["n_layers"]):
        p = f"layers.{i}."
        x = _rms(h, w[p + "attn_norm"], c["norm_eps"])
        q = (x @ w[p + "q_proj"].T).reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
        k = (x @ w[p + "k_proj"].T).reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        v = (x @ w[p + "v_proj"].T).reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        q = _rotate(_rms(q, w[p + "q_norm"], c["norm_eps"]), cos, sin)
        k = _rotate(_rms(k, w[p + "k_norm"], c["norm_eps"]), cos, sin)
        k, v = mx.repeat(k, nh // nkv, axis=1), mx.repeat(v, nh // nkv, axis=1)
        scores = mx.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + mask, axis=-1)
        h = h + (scores @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * hd) @ w[p + "o_proj"].T
        x = _rms(h, w[p + "mlp_norm"], c["norm_eps"])
        gate = x @ w[p + "gate_proj"].T
        h = h + (gate * mx.sigmoid(gate) * (x @ w[p + "up_proj"].T)) @ w[p + "down_proj"].T
    head = w["embed_tokens"] if c["tied"] else w["lm_head"]
    logits = _rms(h, w["norm"], c["norm_eps"]) @ head.T
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


class Model:
    def __init__(self, config, weights):
        self.config = config
        self.latent = {k: mx.array(np.asarray(v, dtype=np.float32)) for k, v in weights.items()}


def convert(config, weights):
    return Model(config, weights)


def log_probs(model, tokens):
    return _forward(model.config, model.latent, mx.array(np.asarray(tokens)))


def effective_weights(model):
    return _effective(model.config, model.latent)


def train(config, weights, batches, budget):
    mx.random.seed(budget["seed"])
    model = convert(config, weights)
    steps = budget["max_steps"]

    def schedule(step):
        return LR * mx.minimum(1.0, (step + 1) / WARMUP) * 0.5 * (1 + mx.cos(math.pi * step / steps))

    opt = optim.AdamW(learning_rate=schedule, betas=[0.9, 0.95], weight_decay=0.0)

    def loss_fn(latent, inputs, targets):
        lp = _forward(config, latent, inputs)
        return -mx.take_along_axis(lp, targets[..., None], axis=-1).mean()

    grad_fn = mx.value_and_grad(loss_fn)  # not mx.compile: on Linux it builds C++ kernels at the first call (slow)
    losses = []
    for batch in batches:  # one served batch per optimizer step; the stream ends at the budget
        chunk = mx.array(np.asarray(batch)[:ROWS, : SEQ_LEN + 1])  # a part of each batch: allowed, and faster here
        loss, grads = grad_fn(model.latent, chunk[:, :-1], chunk[:, 1:])
        model.latent = opt.apply_gradients(grads, model.latent)
        mx.eval(model.latent, opt.state)
        losses.append(loss.item())
    return model, losses
