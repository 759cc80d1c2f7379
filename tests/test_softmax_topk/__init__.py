"""Fused softmax + top-k (CUDA): every discovered submission on every hidden case of reference/softmax_topk.py."""
