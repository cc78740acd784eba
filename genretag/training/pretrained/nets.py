"""Torch ports of musicnn's two architectures (Pons & Serra, MTG/UPF; ISC licence).

Both take the log-mel patch ``(batch, frames, 96)`` and return logits ``(batch, n_labels)``.
The weights follow ``musicnn/models.py`` of the ``musicnn==0.1.0`` wheel layer for layer (TF
NHWC with H = time, W = mel band, stored here in NCHW): TF's ``same`` padding of an even kernel
puts the extra row after, batch norm uses TF's epsilon 1e-3, flattening is TF's channel-last
order, so converted weights give TF's logits (tests/training/pretrained/test_parity.py).

The parameters keep the checkpoint's layout and names (converter, artifact checksum and
transfer learning's backbone loading are unchanged); the forward pass computes the same
function in a faster order (issue 28, docs/performance-pretrained.md): max before ReLU and batch
norm (:mod:`~genretag.training.pretrained.maxfirst`), musicnn's front end as cache-sized GEMMs on
CPU and batched convolutions elsewhere, its mid end as 1-D convolutions, the three temporal
filters as one, vgg channels-last with its first convolution computed only where the pooling
reads it. The front and mid end are inference-only (running batch-norm statistics, no
gradient); :meth:`Musicnn.tail` stays trainable for transfer learning's fine-tuning. The
layer-for-layer original is ``bench/pretrained_before.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genretag.training.pretrained.maxfirst import (band_max_gemm, bn_affine,
                                                   conv3x3_rowpool_gemm, frames_by_band,
                                                   relu_affine, signs, time_max_gemm)

BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
N_MELS = 96
TIMBRAL_TAPS = 7  # frames of the timbral and mid-end filters (time padded 3 + 3)


def _require_eval(training: bool) -> None:
    """The folded front and mid end have no training form (batch statistics, gradients)."""
    if training:
        raise RuntimeError("the pretrained front and mid end run in inference form only "
                           "(running batch-norm statistics): call .eval() first")


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class _ConvBN(nn.Module):
    """Convolution → ReLU → batch norm, in the checkpoint's layout (``conv``, ``bn``)."""

    def __init__(self, c_in: int, filters: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, filters, kernel)
        self.bn = _bn(filters)

    def post(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sign, bias, scale, shift)`` of :func:`relu_affine` for a max over ``sign·conv``."""
        scale, shift = bn_affine(self.bn.weight, self.bn.bias, self.bn.running_mean,
                                 self.bn.running_var, self.bn.eps)
        bias = self.conv.bias
        assert bias is not None  # every musicnn/vgg convolution has one
        return signs(scale), bias, scale, shift

    def signed_weight(self) -> torch.Tensor:
        """Conv weights with the min-wanting channels negated (see :mod:`maxfirst`)."""
        scale, _ = bn_affine(self.bn.weight, self.bn.bias, self.bn.running_mean,
                             self.bn.running_var, self.bn.eps)
        return self.conv.weight * signs(scale).view(-1, 1, 1, 1)


class _Timbral(_ConvBN):
    """Conv over (7 frames × a share of the mel bands), ReLU, BN, max over frequency."""

    def __init__(self, filters: int, bands: int) -> None:
        super().__init__(1, filters, (TIMBRAL_TAPS, bands))
        self.bands = bands

    def gemm_weight(self) -> torch.Tensor:
        """``(bands·7, filters)``, band-major rows: the GEMM form of :meth:`signed_weight`."""
        w = self.signed_weight()[:, 0]  # (F, 7, bands)
        return w.permute(0, 2, 1).reshape(w.shape[0], -1).t()


class _Temporal(_ConvBN):
    """Conv over ``length`` frames × 1 band with TF ``same`` padding, ReLU, BN, max over freq."""

    def __init__(self, filters: int, length: int) -> None:
        super().__init__(1, filters, (length, 1))
        self.length = length

    def padded_weight(self, longest: int) -> torch.Tensor:
        """``(longest, filters)``: the taps placed inside a ``longest``-frame TF-same window
        (zeros around), so the temporal filters of every length share one GEMM."""
        before = (longest - 1) // 2 - (self.length - 1) // 2
        w = self.signed_weight()[:, 0, :, 0].t()  # (length, F)
        return F.pad(w, (0, 0, before, longest - self.length - before))


class _MidConv(_ConvBN):
    """Conv over 7 frames × all features (time padded 3+3), ReLU, BN: (B, C, T) → (B, F, T)."""

    def __init__(self, in_features: int, filters: int) -> None:
        super().__init__(1, filters, (TIMBRAL_TAPS, in_features))
        self.pad = TIMBRAL_TAPS // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Conv2d(1, F, (7, C)) over (B, 1, T+6, C) is Conv1d(C, F, 7) over (B, C, T).
        y = F.conv1d(x, self.conv.weight[:, 0].permute(0, 2, 1), self.conv.bias,
                     padding=self.pad)
        scale, shift = bn_affine(self.bn.weight, self.bn.bias, self.bn.running_mean,
                                 self.bn.running_var, self.bn.eps)
        return torch.addcmul(shift[:, None], torch.relu(y), scale[:, None])


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
        self.taps = TIMBRAL_TAPS
        #: False runs the batched convolutions CUDA takes on CPU too (tests, benchmarks).
        self.cpu_gemm = True
        self.timbral = nn.ModuleList(
            [_Timbral(timbral, int(0.4 * N_MELS)), _Timbral(timbral, int(0.7 * N_MELS))])
        lengths = (128, 64, 32)
        self.temporal = nn.ModuleList([_Temporal(temporal, n) for n in lengths])
        self.longest = max(lengths)
        self.front_width = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList([_MidConv(self.front_width, midend), _MidConv(midend, midend),
                                  _MidConv(midend, midend)])
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
            front = self.front(logmel).transpose(1, 2)  # (B, 561, T)
            # ---- mid end: three convolutions with residual connections, all layers kept
            c1 = self.mid[0](front)
            c2 = self.mid[1](c1) + c1
            c3 = self.mid[2](c2) + c2
            dense = torch.cat([front, c1, c2, c3], dim=1)  # (B, 753, T)
            # ---- back end: max and mean over time, interleaved per feature as TF flattens them
            pooled = torch.stack([dense.amax(dim=2), dense.mean(dim=2)], dim=2).flatten(1)
        return pooled

    def front(self, logmel: torch.Tensor) -> torch.Tensor:
        """The front end ``(B, T, 561)``: timbral (time padded 3+3, valid conv) and temporal
        (TF same) filters, each maxed over frequency, then bias, ReLU and batch norm."""
        scale, shift = bn_affine(self.input_bn.weight, self.input_bn.bias,
                                 self.input_bn.running_mean, self.input_bn.running_var,
                                 self.input_bn.eps)
        x = logmel * scale + shift  # (B, T, 96)
        timbral_in = F.pad(x, (0, 0, self.taps // 2, self.taps // 2))  # (B, T + 6, 96)
        temporal_in = F.pad(x.transpose(1, 2), ((self.longest - 1) // 2, self.longest // 2))
        temporal_w = torch.cat([block.padded_weight(self.longest) for block in self.temporal],
                               dim=1)  # (128, 153)
        n, frames = x.shape[0], x.shape[1]
        if x.device.type == "cpu" and self.cpu_gemm:
            raw = torch.empty(n * frames, self.front_width, dtype=x.dtype, device=x.device)
            rows = frames_by_band(timbral_in, self.taps)
            col = 0
            for block in self.timbral:
                width = block.conv.out_channels
                band_max_gemm(rows, block.gemm_weight(), block.bands, raw[:, col:col + width])
                col += width
            time_max_gemm(temporal_in.contiguous(), temporal_w, frames, raw[:, col:])
            raw = raw.view(n, frames, self.front_width)
        else:  # CUDA & co: a few batched convolutions beat many small GEMM launches
            parts = [F.conv2d(timbral_in[:, None], block.signed_weight()).amax(dim=3)
                     for block in self.timbral]
            temporal = F.conv1d(temporal_in.reshape(n * x.shape[2], 1, -1),
                                temporal_w.t()[:, None, :])  # (B·96, 153, T)
            parts.append(temporal.view(n, x.shape[2], -1, frames).amax(dim=1))
            raw = torch.cat(parts, dim=1).transpose(1, 2)
        sign, bias, scale, shift = self.front_post()
        return relu_affine(raw, sign, bias, scale, shift)

    def front_post(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_ConvBN.post` of every front-end block, concatenated in feature order."""
        posts = [block.post() for block in self.timbral] + [block.post()
                                                            for block in self.temporal]
        return (torch.cat([p[0] for p in posts]), torch.cat([p[1] for p in posts]),
                torch.cat([p[2] for p in posts]), torch.cat([p[3] for p in posts]))

    def tail(self, pooled: torch.Tensor) -> torch.Tensor:
        """The back end's dense layers on :meth:`pooled` features: the embedding."""
        return self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(logmel))


class _VggBlock(_ConvBN):
    """3×3 same conv, ReLU, BN, max pooling with TF's ``valid`` padding (channels-last)."""

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int],
                 stride: tuple[int, int]) -> None:
        super().__init__(c_in, c_out, (3, 3))
        self.pool, self.stride = pool, stride

    def forward(self, x: torch.Tensor, cpu_gemm: bool = True) -> torch.Tensor:
        sign, bias, scale, shift = self.post()
        if cpu_gemm and x.device.type == "cpu" and x.shape[1] == 1 and self.pool[1] == 1:
            weight = self.signed_weight().reshape(self.conv.out_channels, 9).t()
            return conv3x3_rowpool_gemm(F.pad(x[:, 0], (1, 1, 1, 1)), weight, self.pool[0],
                                        self.stride, [sign, bias, scale, shift])
        weight = self.signed_weight().contiguous(memory_format=torch.channels_last)
        if self.pool[1] == 1:  # the pooling reads every stride-th column only: compute those
            z = F.conv2d(x, weight, None, (1, self.stride[1]), 1)
            m = F.max_pool2d(z, self.pool, (self.stride[0], 1))
        else:
            m = F.max_pool2d(F.conv2d(x, weight, None, 1, 1), self.pool, self.stride)
        return relu_affine(m, sign.view(1, -1, 1, 1), bias.view(1, -1, 1, 1),
                           scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1))


class Vgg(nn.Module):
    """musicnn's VGG baseline: five 3×3 conv/BN/max-pool blocks, dense output (3 s input only)."""

    POOLS = ((4, 1), (2, 2), (2, 2), (2, 2), (4, 4))
    STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (4, 4))

    def __init__(self, n_labels: int, filters: int = 128, flat: int = 256) -> None:
        super().__init__()
        if n_labels < 1 or filters < 1:
            raise ValueError(f"n_labels={n_labels}, filters={filters} must be >= 1")
        self.input_bn = _bn(1)
        #: False runs the convolution CUDA takes on CPU too (tests, benchmarks).
        self.cpu_gemm = True
        self.blocks = nn.ModuleList([
            _VggBlock(1 if i == 0 else filters, filters, pool, stride)
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
            for block in self.blocks:
                x = block(x, self.cpu_gemm)
            flat = x.permute(0, 2, 3, 1).flatten(1)  # TF flattens (time, freq, channel)
        return flat

    def pooled(self, logmel: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`: vgg has no dense layer before its output."""
        return self.embed(logmel)

    def tail(self, pooled: torch.Tensor) -> torch.Tensor:
        """Identity: vgg's embedding is its last pooling."""
        return pooled

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(logmel))
