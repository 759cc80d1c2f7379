"""Ternary training: every discovered submission on every hidden case of the reference."""
