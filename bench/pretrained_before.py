"""The musicnn/vgg ports as they were before issue 28: layer for layer, kept for comparison only.

``bench.pretrained`` measures them as "port before" beside the rewrite
(:mod:`genretag.training.pretrained.nets`) and musicnn's TensorFlow graph, and
tests/training/pretrained/test_fast_nets.py checks that the rewrite computes the same outputs.
Same parameter names and shapes as the rewrite, so either loads the other's ``state_dict``.
Not used by genretag itself. Original docstring:

Torch ports of musicnn's two architectures (Pons & Serra, MTG/UPF; ISC licence).

Both take the log-mel patch ``(batch, frames, 96)`` and return logits ``(batch, n_labels)``.
Layer for layer they follow ``musicnn/models.py`` of the ``musicnn==0.1.0`` wheel (TF layout
NHWC with H = time, W = mel band; here NCHW): TF's ``same`` padding of an even kernel puts the
extra row after, batch normalisation uses TF's default epsilon 1e-3, and flattening happens in
TF's channel-last order, so converted weights give the same logits (tests/training/pretrained).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
N_MELS = 96


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class _Timbral(nn.Module):
    """Conv over (7 frames × a share of the mel bands), ReLU, BN, max over frequency."""

    def __init__(self, filters: int, bands: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, (7, bands))
        self.bn = _bn(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, T + 6, 96)
        y = self.bn(F.relu(self.conv(x)))
        return y.amax(dim=3)  # (B, filters, T)


class _Temporal(nn.Module):
    """Conv over ``length`` frames × 1 band with TF ``same`` padding, ReLU, BN, max over freq."""

    def __init__(self, filters: int, length: int) -> None:
        super().__init__()
        self.pad = ((length - 1) // 2, length // 2)  # TF: the odd extra row goes after
        self.conv = nn.Conv2d(1, filters, (length, 1))
        self.bn = _bn(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, T, 96)
        x = F.pad(x, (0, 0, self.pad[0], self.pad[1]))
        return self.bn(F.relu(self.conv(x))).amax(dim=3)  # (B, filters, T)


class _MidConv(nn.Module):
    """Conv over 7 frames × all features (time padded 3+3), ReLU, BN: (B, C, T) → (B, F, T)."""

    def __init__(self, in_features: int, filters: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, (7, in_features))
        self.bn = _bn(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.transpose(1, 2).unsqueeze(1), (0, 0, 3, 3))  # (B, 1, T + 6, C)
        return self.bn(F.relu(self.conv(x))).squeeze(3)


class Musicnn(nn.Module):
    """Musically motivated front end, dense mid end, mean/max temporal pooling back end."""

    def __init__(self, n_labels: int, midend: int = 64, backend: int = 200,
                 frontend_scale: float = 1.6) -> None:
        super().__init__()
        if n_labels < 1 or midend < 1 or backend < 1:
            raise ValueError(
                f"n_labels={n_labels}, midend={midend}, backend={backend} must be >= 1")
        timbral, temporal = int(frontend_scale * 128), int(frontend_scale * 32)
        self.input_bn = _bn(1)
        self.timbral = nn.ModuleList(
            [_Timbral(timbral, int(0.4 * N_MELS)), _Timbral(timbral, int(0.7 * N_MELS))])
        self.temporal = nn.ModuleList([_Temporal(temporal, n) for n in (128, 64, 32)])
        front = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList(
            [_MidConv(front, midend), _MidConv(midend, midend), _MidConv(midend, midend)])
        pooled = 2 * (front + 3 * midend)
        self.pool_bn = nn.BatchNorm1d(pooled, eps=BN_EPS)
        self.dense = nn.Linear(pooled, backend)
        self.dense_bn = nn.BatchNorm1d(backend, eps=BN_EPS)
        self.out = nn.Linear(backend, n_labels)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(batch, backend)`` (musicnn's ``penultimate``)."""
        return self.tail(self.pooled(logmel))

    def pooled(self, logmel: torch.Tensor) -> torch.Tensor:
        """Temporal pooling of the mid end ``(batch, 2·753)``: the input of the dense back end
        (what transfer learning caches, so the back end can be fine-tuned on cached features)."""
        x = self.input_bn(logmel.unsqueeze(1))  # (B, 1, T, 96)
        # ---- front end: timbral (time padded 3+3, valid conv) and temporal (same) filters
        padded = F.pad(x, (0, 0, 3, 3))
        feats: list[torch.Tensor] = []
        for block in self.timbral:
            feats.append(block(padded))
        for block in self.temporal:
            feats.append(block(x))
        front = torch.cat(feats, dim=1)  # (B, 561, T)
        # ---- mid end: three convolutions with residual connections, all layers kept
        c1 = self.mid[0](front)
        c2 = self.mid[1](c1) + c1
        c3 = self.mid[2](c2) + c2
        dense = torch.cat([front, c1, c2, c3], dim=1)  # (B, 753, T)
        # ---- back end: max and mean over time, interleaved per feature as TF flattens them
        return torch.stack([dense.amax(dim=2), dense.mean(dim=2)], dim=2).flatten(1)

    def tail(self, pooled: torch.Tensor) -> torch.Tensor:
        """The back end's dense layers on :meth:`pooled` features: the embedding."""
        return self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(logmel))


class _VggBlock(nn.Module):
    """3×3 same conv, ReLU, BN, max pooling with TF's ``valid`` padding."""

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int],
                 stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = _bn(c_out)
        self.pool = nn.MaxPool2d(pool, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(F.relu(self.conv(x))))


class Vgg(nn.Module):
    """musicnn's VGG baseline: five 3×3 conv/BN/max-pool blocks, dense output (3 s input only)."""

    POOLS = ((4, 1), (2, 2), (2, 2), (2, 2), (4, 4))
    STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (4, 4))

    def __init__(self, n_labels: int, filters: int = 128, flat: int = 256) -> None:
        super().__init__()
        if n_labels < 1 or filters < 1:
            raise ValueError(f"n_labels={n_labels}, filters={filters} must be >= 1")
        self.input_bn = _bn(1)
        self.blocks = nn.ModuleList([
            _VggBlock(1 if i == 0 else filters, filters, pool, stride)
            for i, (pool, stride) in enumerate(zip(self.POOLS, self.STRIDES))])
        self.out = nn.Linear(flat, n_labels)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        """Flattened last pooling ``(batch, 256)`` (musicnn's ``pool5``)."""
        x = self.input_bn(logmel.unsqueeze(1))
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 2, 3, 1).flatten(1)  # TF flattens (time, freq, channel)

    def pooled(self, logmel: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`: vgg has no dense layer before its output."""
        return self.embed(logmel)

    def tail(self, pooled: torch.Tensor) -> torch.Tensor:
        """Identity: vgg's embedding is its last pooling."""
        return pooled

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(logmel))
