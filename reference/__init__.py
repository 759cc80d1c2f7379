"""Trusted references: one contract module per challenge, float64 oracles, input generators and tolerances."""
