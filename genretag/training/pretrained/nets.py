"""Torch ports of musicnn's two architectures (Pons & Serra, MTG/UPF; ISC licence).

Both take the log-mel patch ``(batch, frames, 96)`` and return logits ``(batch, n_labels)``.
The weights follow ``musicnn/models.py`` of the ``musicnn==0.1.0`` wheel layer for layer (TF
NHWC with H = time, W = mel band, stored here in NCHW): TF's ``same`` padding of an even kernel
puts the extra row after, batch norm uses TF's epsilon 1e-3, flattening is TF's channel-last
order, so converted weights give TF's logits (tests/training/pretrained/test_parity.py).

The parameters keep the checkpoint's layout and names (converter, artifact checksum and
transfer learning's backbone loading are unchanged); the forward pass computes the same
function in a faster order (issue 28, docs/performance-pretrained.md): dead filters (every
weight below 1e-20: most of musicnn-msd's timbral filters) are not computed, the max comes
before ReLU and batch norm (:mod:`~genretag.training.pretrained.maxfirst`), musicnn's mid end is
1-D convolutions, vgg runs channels-last with its first block as one GEMM over the columns the
pooling reads. The front and mid end are inference-only (running batch-norm statistics, no
gradient); :meth:`Musicnn.tail` stays trainable for transfer learning's fine-tuning. The
layer-for-layer original is ``bench/pretrained_before.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genretag.training.pretrained.layers import (BN_EPS, TIMBRAL_TAPS, FreqMax, MidConv,
                                                 VggBlock, batch_norm, tf_same)
from genretag.training.pretrained.maxfirst import bn_affine, relu_affine

N_MELS = 96


def _require_eval(training: bool) -> None:
    """The folded front and mid end have no training form (batch statistics, gradients)."""
    if training:
        raise RuntimeError("the pretrained front and mid end run in inference form only "
                           "(running batch-norm statistics): call .eval() first")


class Musicnn(nn.Module):
    """Musically motivated front end, dense mid end, mean/max temporal pooling back end."""

    def __init__(self, n_labels: int, midend: int = 64, backend: int = 200,
                 frontend_scale: float = 1.6) -> None:
        super().__init__()
        if n_labels < 1 or midend < 1 or backend < 1:
            raise ValueError(
                f"n_labels={n_labels}, midend={midend}, backend={backend} must be >= 1")
        timbral, temporal = int(frontend_scale * 128), int(frontend_scale * 32)
        self.input_bn = batch_norm(1)
        pad = TIMBRAL_TAPS // 2
        self.timbral = nn.ModuleList([FreqMax(timbral, TIMBRAL_TAPS, int(share * N_MELS),
                                              (pad, pad)) for share in (0.4, 0.7)])
        self.temporal = nn.ModuleList([FreqMax(temporal, n, 1, tf_same(n))
                                       for n in (128, 64, 32)])
        self.front_width = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList([MidConv(self.front_width, midend), MidConv(midend, midend),
                                  MidConv(midend, midend)])
        pooled = 2 * (self.front_width + 3 * midend)
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
        _require_eval(self.training)
        with torch.no_grad():
            front = self.front(logmel)  # (B, 561, T)
            # ---- mid end: three convolutions with residual connections, all layers kept
            c1 = self.mid[0](front)
            c2 = self.mid[1](c1) + c1
            c3 = self.mid[2](c2) + c2
            dense = torch.cat([front, c1, c2, c3], dim=1)  # (B, 753, T)
            # ---- back end: max and mean over time, interleaved per feature as TF flattens them
            pooled = torch.stack([dense.amax(dim=2), dense.mean(dim=2)], dim=2).flatten(1)
        return pooled

    def front(self, logmel: torch.Tensor) -> torch.Tensor:
        """The front end ``(B, 561, T)``: timbral and temporal filters, each maxed over
        frequency, then bias, ReLU and batch norm. Dead filters are not computed: their max
        stays 0, so they give their constant dead value."""
        scale, shift = bn_affine(self.input_bn.weight, self.input_bn.bias,
                                 self.input_bn.running_mean, self.input_bn.running_var,
                                 self.input_bn.eps)
        x = logmel * scale + shift  # (B, T, 96)
        raw = torch.zeros(x.shape[0], self.front_width, x.shape[1], dtype=x.dtype,
                          device=x.device)
        col = 0
        for block in self.timbral:
            live, maxima = block(x)
            raw.index_copy_(1, live + col, maxima.to(raw.dtype))
            col += block.conv.out_channels
        for block in self.temporal:  # (a ModuleList is unrolled: one loop per list)
            live, maxima = block(x)
            raw.index_copy_(1, live + col, maxima.to(raw.dtype))
            col += block.conv.out_channels
        sign, bias, scale, shift = self.front_post()
        return relu_affine(raw, sign[:, None], bias[:, None], scale[:, None], shift[:, None])

    def front_post(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`ConvBN.post` of every front-end block, concatenated in feature order."""
        posts = [block.post() for block in self.timbral] + [block.post()
                                                            for block in self.temporal]
        return (torch.cat([p[0] for p in posts]), torch.cat([p[1] for p in posts]),
                torch.cat([p[2] for p in posts]), torch.cat([p[3] for p in posts]))

    def tail(self, pooled: torch.Tensor) -> torch.Tensor:
        """The back end's dense layers on :meth:`pooled` features: the embedding."""
        return self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(logmel))


class Vgg(nn.Module):
    """musicnn's VGG baseline: five 3×3 conv/BN/max-pool blocks, dense output (3 s input only)."""

    POOLS = ((4, 1), (2, 2), (2, 2), (2, 2), (4, 4))
    STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (4, 4))

    def __init__(self, n_labels: int, filters: int = 128, flat: int = 256) -> None:
        super().__init__()
        if n_labels < 1 or filters < 1:
            raise ValueError(f"n_labels={n_labels}, filters={filters} must be >= 1")
        self.input_bn = batch_norm(1)
        #: False runs the convolution CUDA takes on CPU too (tests, benchmarks).
        self.cpu_gemm = True
        self.blocks = nn.ModuleList([
            VggBlock(1 if i == 0 else filters, filters, pool, stride)
            for i, (pool, stride) in enumerate(zip(self.POOLS, self.STRIDES))])
        self.out = nn.Linear(flat, n_labels)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        """Flattened last pooling ``(batch, 256)`` (musicnn's ``pool5``)."""
        _require_eval(self.training)
        with torch.no_grad():
            scale, shift = bn_affine(self.input_bn.weight, self.input_bn.bias,
                                     self.input_bn.running_mean, self.input_bn.running_var,
                                     self.input_bn.eps)
            x = (logmel * scale + shift).unsqueeze(1)
            x = x.contiguous(memory_format=torch.channels_last)
            live = torch.zeros(1, dtype=torch.long, device=x.device)  # the log-mel channel
            dead = torch.zeros(1, dtype=x.dtype, device=x.device)
            for block in self.blocks:  # live channels only; dead ones are constants
                x, live, dead = block(x, live, dead, self.cpu_gemm)
            full = dead.to(x.dtype).view(1, -1, 1, 1).repeat(x.shape[0], 1, x.shape[2],
                                                             x.shape[3])
            full.index_copy_(1, live, x.contiguous())
            flat = full.permute(0, 2, 3, 1).flatten(1)  # TF flattens (time, freq, channel)
        return flat

    def pooled(self, logmel: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`: vgg has no dense layer before its output."""
        return self.embed(logmel)

    def tail(self, pooled: torch.Tensor) -> torch.Tensor:
        """Identity: vgg's embedding is its last pooling."""
        return pooled

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(logmel))
