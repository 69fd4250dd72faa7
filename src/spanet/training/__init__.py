"""Training: the loop (one step, one epoch, one run), the optimiser and schedule, distributed helpers, stop
requests, and the ablation runner that chains training runs."""
