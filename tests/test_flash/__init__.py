"""Flash-attention forward and backward: every discovered submission on every hidden case of the reference."""
