"""Relational KD (distance, angle), SP, and the embedding structure they keep."""
