"""The lab's thin library: data, models, one training loop, pruning, logging, reporting."""
