"""Quantization (Krishnamoorthi 2018): PTQ, QAT, int8 execution and the precision curve."""
