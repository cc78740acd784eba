"""The reference study's baselines, as waveform models with the MFCC frontend inside.

* ``logreg``: logistic regression on standardised MFCC statistics (mean and std over time per
  coefficient), fit to convergence by LBFGS (``training/linear.py``);
* ``dense``: a fully connected net on the same statistics, fit the same way;
* ``cnn``: a 2-D CNN over the whole MFCC image, globally pooled;
* ``lstm``: a 2-layer LSTM over MFCC frames.

All are :class:`~genretag.training.models.WaveformClassifier`s: they train on cached features
(``classify``) and export (``torch.jit.script`` through ``ServingModel``) with the frontend inside.
``training/registry.py`` builds them from a ``TrainConfig``.
"""

from __future__ import annotations

import torch
from torch import nn

from genretag.schemas import FrontendParams
from genretag.training.models import WaveformClassifier, conv_stack, row_stats

class StatsClassifier(WaveformClassifier):
    """Mean and std over time per feature row → standardise → MLP (no layers: logreg).

    The standardisation is fixed, not learned: ``mean``/``scale`` buffers set from the
    training statistics (``set_standardisation``), like scikit-learn's ``StandardScaler``.
    """

    embedding_name = "stats"

    def __init__(self, n_labels: int, sample_rate: int, frontend: FrontendParams,
                 hidden: tuple[int, ...] = (), dropout: float = 0.0) -> None:
        super().__init__(n_labels, sample_rate, frontend)
        dim = 2 * self.frontend.channels * frontend.n_mfcc
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.embedding_size = dim
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(dim, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            dim = width
        layers.append(nn.Linear(dim, n_labels))
        self.mlp = nn.Sequential(*layers)

    def stats(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, ch, M, F)`` → ``(B, 2·ch·M)``: mean and std over time of every feature row."""
        return row_stats(feats)

    def set_standardisation(self, stats: torch.Tensor) -> None:
        """Standardise with the mean and std of ``stats`` (training rows); constant columns → 1."""
        self.mean.copy_(stats.mean(dim=0))
        std = stats.std(dim=0) if len(stats) > 1 else torch.ones_like(self.scale)
        self.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def head(self, stats: torch.Tensor) -> torch.Tensor:
        """Statistics → logits (standardised, then the MLP)."""
        return self.mlp((stats - self.mean) / self.scale)

    def represent(self, feats: torch.Tensor) -> torch.Tensor:
        """The standardised statistics (what the MLP reads)."""
        return (self.stats(feats) - self.mean) / self.scale

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(z)


class Cnn2d(WaveformClassifier):
    """Conv blocks (each pooled 2×2) over the whole ``(ch, n_mfcc, frames)`` image → global mean."""

    embedding_name = "pooled"

    def __init__(self, n_labels: int, sample_rate: int, frontend: FrontendParams,
                 channels: tuple[int, ...] = (32, 64, 128), dropout: float = 0.3) -> None:
        super().__init__(n_labels, sample_rate, frontend)
        if not channels:
            raise ValueError("channels must not be empty")
        self.norm = nn.BatchNorm2d(self.frontend.channels)
        self.cnn, c_in = conv_stack(self.frontend.channels, channels)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, n_labels))
        self.embedding_size = c_in

    def represent(self, feats: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.norm(feats))

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)


class LstmClassifier(WaveformClassifier):
    """Frames (mean-pooled by ``stride``) → 2-layer LSTM → [mean over time, last state] → linear."""

    embedding_name = "lstm"

    def __init__(self, n_labels: int, sample_rate: int, frontend: FrontendParams,
                 hidden: int = 128, dropout: float = 0.3, stride: int = 2) -> None:
        super().__init__(n_labels, sample_rate, frontend)
        dim = self.frontend.channels * frontend.n_mfcc
        self.stride = max(1, stride)
        self.mixed_precision = False
        self.norm = nn.BatchNorm1d(dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, dropout=dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, n_labels))
        self.embedding_size = 2 * hidden

    def represent(self, feats: torch.Tensor) -> torch.Tensor:
        """Mean over time and last state of the LSTM's output."""
        seq = self.norm(feats.flatten(1, 2))  # (B, ch*M, F)
        if self.stride > 1:
            seq = nn.functional.avg_pool1d(seq, self.stride, self.stride, ceil_mode=True)
        out, _ = self.lstm(seq.transpose(1, 2))  # (B, F', H)
        return torch.cat([out.mean(dim=1), out[:, -1]], dim=1)

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)
