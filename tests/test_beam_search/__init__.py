"""Batched beam search: every discovered submission on every hidden case of the reference."""
