"""Which torch device a process runs on: one rule for the worker and the trainer."""

from __future__ import annotations

import torch


def pick_device(requested: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is a clear error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but CUDA is not available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
