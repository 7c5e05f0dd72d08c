"""The compression pipeline: teacher -> KD student -> filter pruning -> quantization."""
