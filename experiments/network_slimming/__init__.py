"""Network Slimming (Liu et al. ICCV 2017): BN-γ sparsity training, global channel pruning, fine-tuning."""
