"""BUG (demo): no straight-through estimator: the forward uses a detached projection, so no gradient reaches the
latent weights (they never move; only the norm gains train).

Ternary (BitNet b1.58-style) training of a tiny Qwen3-style model in PyTorch.

Weights are ternary in the forward pass: groups of ``group_size`` consecutive weights along the input dimension, each
with scale mean(|w|) and codes round(w / scale) clipped to [-1, 1]. A straight-through estimator passes the gradient
of the dequantized weight to the latent full-precision weight unchanged, so the optimizer trains the latent weights.
Every linear layer, the embeddings and the LM head are ternary; RMSNorm gains stay in full precision.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

TERNARY_KINDS = ("embed_tokens", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
LR, WARMUP = 3e-3, 20


def _project(w, group_size):
    """(codes, scales, dequantized) of a 2-D weight; the last partial group is its own group."""
    rows, cols = w.shape
    groups = -(-cols // group_size)
    padded = F.pad(w, (0, groups * group_size - cols)).reshape(rows, groups, group_size)
    counts = torch.full((groups,), float(group_size), dtype=w.dtype, device=w.device)
    counts[-1] = cols - (groups - 1) * group_size  # the padding zeros add nothing to the sum; divide by the real count
    scales = padded.abs().sum(dim=-1) / counts
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.clamp(torch.round(padded / safe[..., None]), -1, 1)
    dequantized = (codes * scales[..., None]).reshape(rows, -1)[:, :cols]
    return codes.reshape(rows, -1)[:, :cols], scales, dequantized


def ste(w, group_size):
    """The dequantized ternary weight in the forward; the identity in the backward (scale held constant)."""
    with torch.no_grad():
        _, _, dequantized = _project(w, group_size)
    return dequantized


def ternarize(w, group_size):
    codes, scales, _ = _project(torch.as_tensor(w, dtype=torch.float32), group_size)
    return codes.to(torch.int8), scales


def ternary_linear(x, w, grad_y, group_size):
    x = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    w = torch.tensor(w, dtype=torch.float32, requires_grad=True)
    y = F.linear(x, ste(w, group_size))
    y.backward(torch.as_tensor(grad_y, dtype=torch.float32))
    return y.detach(), x.grad, w.grad


class TernaryQwen3:
    """Latent weights by key; the forward projects every ternary kind through the straight-through estimator."""

    def __init__(self, config, weights):
        self.config = config
        self.device = torch.device(config.get("device", "cpu"))
        self.latent = {
            k: torch.tensor(np.asarray(v), dtype=torch.float32, device=self.device).requires_grad_(True)
            for k, v in weights.items()
        }

    def effective(self):
        gs = self.config["group_size"]
        return {k: ste(v, gs) if k.rsplit(".", 1)[-1] in TERNARY_KINDS else v for k, v in self.latent.items()}

    def forward(self, tokens):
        c, w = self.config, self.effective()
        b, t = tokens.shape
        hd, nh, nkv = c["head_dim"], c["n_heads"], c["n_kv_heads"]
        cos, sin = _rope(t, hd, c["rope_theta"], self.device)
        h = F.embedding(tokens, w["embed_tokens"])
        for i in range(c["n_layers"]):
            p = f"layers.{i}."
            x = _rms(h, w[p + "attn_norm"], c["norm_eps"])
            q = (x @ w[p + "q_proj"].T).view(b, t, nh, hd).transpose(1, 2)
            k = (x @ w[p + "k_proj"].T).view(b, t, nkv, hd).transpose(1, 2)
            v = (x @ w[p + "v_proj"].T).view(b, t, nkv, hd).transpose(1, 2)
            q = _rotate(_rms(q, w[p + "q_norm"], c["norm_eps"]), cos, sin)
            k = _rotate(_rms(k, w[p + "k_norm"], c["norm_eps"]), cos, sin)
            k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + attn.transpose(1, 2).reshape(b, t, nh * hd) @ w[p + "o_proj"].T
            x = _rms(h, w[p + "mlp_norm"], c["norm_eps"])
            h = h + (F.silu(x @ w[p + "gate_proj"].T) * (x @ w[p + "up_proj"].T)) @ w[p + "down_proj"].T
        head = w["embed_tokens"] if c["tied"] else w["lm_head"]
        return F.log_softmax(_rms(h, w["norm"], c["norm_eps"]) @ head.T, dim=-1)


def _rms(x, gain, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * gain


def _rope(t, head_dim, theta, device):
    freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float().to(device), angles.sin().float().to(device)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def convert(config, weights):
    return TernaryQwen3(config, weights)


def log_probs(model, tokens):
    with torch.no_grad():
        return model.forward(torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=model.device))


def effective_weights(model):
    with torch.no_grad():
        return {k: v.detach().clone() for k, v in model.effective().items()}


def train(config, weights, batches, budget):
    torch.manual_seed(budget["seed"])
    model = convert(config, weights)
    params = list(model.latent.values())
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    steps, losses = budget["max_steps"], []
    for step, batch in enumerate(batches):  # one served batch per optimizer step; the stream ends at the budget
        lr = LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        chunk = torch.as_tensor(np.asarray(batch), dtype=torch.long, device=model.device)
        lp = model.forward(chunk[:, :-1])
        loss = F.nll_loss(lp.reshape(-1, lp.shape[-1]), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses
