"""Cut decoded tracks into fixed-length model windows and stack them into one batch.

Training evaluation and serving share :func:`make_windows`: a track shorter than a clip is
zero-padded, a longer one gives up to ``max_windows`` evenly spaced clips whose predictions
are averaged (see :func:`average_by_owner`).
"""

from __future__ import annotations


import numpy as np
import torch

from genretag.core.audio.placement import windows_for


def make_windows(wave: np.ndarray, clip_samples: int, max_windows: int = 1) -> np.ndarray:
    """``(n_windows, clip_samples)`` float32 windows covering ``wave`` evenly."""
    if clip_samples <= 0 or max_windows <= 0:
        raise ValueError(f"clip_samples={clip_samples}, max_windows={max_windows} must be > 0")
    n = len(wave)
    if n <= clip_samples:
        out = np.zeros((1, clip_samples), dtype=np.float32)
        out[0, :n] = wave
        return out
    count = min(max_windows, windows_for(n, clip_samples))  # the worker's count
    if count == 1:
        start = (n - clip_samples) // 2  # the middle of the track: intros/outros are atypical
        return np.ascontiguousarray(wave[start : start + clip_samples], dtype=np.float32)[None]
    starts = np.linspace(0, n - clip_samples, count).round().astype(np.int64)
    return np.stack([wave[s : s + clip_samples] for s in starts]).astype(np.float32, copy=False)


def stack_windows(per_track: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate each track's windows: returns ``(windows, owner)`` with owner[i] = track index."""
    counts = [w.shape[0] for w in per_track]
    windows = torch.from_numpy(np.concatenate(per_track, axis=0))
    owner = torch.repeat_interleave(torch.arange(len(per_track)), torch.tensor(counts))
    return windows, owner


def average_by_owner(probs: torch.Tensor, owner: torch.Tensor, n_tracks: int) -> torch.Tensor:
    """Mean of window probabilities per track: ``(n_windows, L)`` → ``(n_tracks, L)``."""
    sums = torch.zeros(n_tracks, probs.shape[1], dtype=probs.dtype, device=probs.device)
    sums.index_add_(0, owner.to(probs.device), probs)
    counts = torch.bincount(owner, minlength=n_tracks).clamp_min(1).to(probs.device, probs.dtype)
    return sums / counts[:, None]
