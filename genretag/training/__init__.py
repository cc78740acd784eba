"""Training: FMA and custom datasets → models → one TorchScript artifact for the worker."""
