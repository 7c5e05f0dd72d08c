"""Pruning: masks, unstructured criteria, iterative magnitude pruning."""
