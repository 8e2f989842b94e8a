"""Training (torch): recipes, patch datasets, the loop and checkpoints."""
