"""Feature distillation: FitNet (two-stage and one-stage) and Attention Transfer, alone and with KD."""
