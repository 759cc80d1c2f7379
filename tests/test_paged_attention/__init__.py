"""Paged-attention decode (CUDA or Triton): every discovered submission on every hidden case of
reference/paged_attention_decode.py."""
