"""Genre models. Every model takes a waveform batch ``(batch, samples)`` and returns logits.

The frontend is part of the module, so the exported TorchScript file needs nothing else.
The time-distributed CNN is the serving model; see ``training/baselines.py`` for the others.
"""

from __future__ import annotations

import torch
from torch import nn

from schemas import FrontendParams
from training.frontend import MfccFrontend


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class AttentionPool(nn.Module):
    """Weighted mean over chunks ``(batch, chunks, dim)`` → ``(batch, dim)``, weights learned."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(x), dim=1)  # (B, C, 1)
        return (weights * x).sum(dim=1)


class TimeDistributedCNN(nn.Module):
    """MFCC → chunks of ``chunk_frames`` → one shared CNN per chunk → attention over chunks.

    Shapes: waveform ``(B, samples)`` → features ``(B, ch, n_mfcc, frames)`` → chunks
    ``(B*C, ch, n_mfcc, chunk_frames)`` → embeddings ``(B, C, D)`` → logits ``(B, n_labels)``.
    """

    def __init__(
        self,
        n_labels: int,
        sample_rate: int,
        frontend: FrontendParams,
        channels: tuple[int, ...] = (32, 64, 128),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"n_labels must be >= 1, got {n_labels}")
        if not channels:
            raise ValueError("channels must not be empty")
        self.frontend = MfccFrontend(sample_rate, frontend)
        self.chunk_frames = frontend.chunk_frames
        self.norm = nn.BatchNorm2d(self.frontend.channels)
        blocks = []
        c_in = self.frontend.channels
        for i, c_out in enumerate(channels):
            blocks.append(conv_block(c_in, c_out, pool=i < len(channels) - 1))
            c_in = c_out
        self.cnn = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.pool = AttentionPool(c_in)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, n_labels))

    def chunk(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, ch, M, F)`` → ``(B, C, ch, M, chunk_frames)``; the last chunk is zero-padded."""
        b, ch, m, f = feats.shape
        n_chunks = (f + self.chunk_frames - 1) // self.chunk_frames
        pad = n_chunks * self.chunk_frames - f
        if pad > 0:
            feats = nn.functional.pad(feats, (0, pad))
        return feats.reshape(b, ch, m, n_chunks, self.chunk_frames).permute(0, 3, 1, 2, 4)

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform → one embedding per clip ``(B, D)`` (before the classifier head)."""
        feats = self.norm(self.frontend(wave))
        chunks = self.chunk(feats)  # (B, C, ch, M, T)
        b, c = chunks.shape[0], chunks.shape[1]
        emb = self.cnn(chunks.reshape(b * c, chunks.shape[2], chunks.shape[3], chunks.shape[4]))
        return self.pool(emb.reshape(b, c, -1))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(wave))


class ServingModel(nn.Module):
    """What gets exported: a model plus its activation, returning probabilities."""

    def __init__(self, model: nn.Module, activation: str) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be sigmoid or softmax, got {activation!r}")
        self.model = model
        self.softmax = activation == "softmax"

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        logits = self.model(wave)
        if self.softmax:
            return torch.softmax(logits, dim=-1)
        return torch.sigmoid(logits)
