"""musicnn's convolution blocks (conv → ReLU → batch norm), weights in the checkpoint's layout.

Each block keeps TF's ``conv`` and ``bn`` parameters under the original names and shapes and
derives what the fast forward pass needs from them at call time (a frozen module folds these
into constants): batch norm as scale and shift, the sign-flipped weights of the max-first order
and the live filters (:mod:`~genretag.training.pretrained.maxfirst`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genretag.training.pretrained.maxfirst import (bn_affine, constant_map_3x3,
                                                   conv3x3_rowpool_gemm, live_filters, others,
                                                   relu_affine, signs)

BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
TIMBRAL_TAPS = 7  # frames of the timbral and mid-end filters (time padded 3 + 3)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class ConvBN(nn.Module):
    """Convolution → ReLU → batch norm, in the checkpoint's layout (``conv``, ``bn``)."""

    def __init__(self, c_in: int, filters: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, filters, kernel)
        self.bn = batch_norm(filters)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch norm as ``(scale, shift)``."""
        return bn_affine(self.bn.weight, self.bn.bias, self.bn.running_mean,
                         self.bn.running_var, self.bn.eps)

    def post(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sign, bias, scale, shift)`` of :func:`relu_affine` for a max over ``sign·conv``."""
        scale, shift = self.affine()
        bias = self.conv.bias
        assert bias is not None  # every musicnn/vgg convolution has one
        return signs(scale), bias, scale, shift

    def signed_weight(self) -> torch.Tensor:
        """Conv weights with the min-wanting channels negated (see :mod:`maxfirst`)."""
        return self.conv.weight * signs(self.affine()[0]).view(-1, 1, 1, 1)

    def dead_value(self) -> torch.Tensor:
        """Every filter's output were its weights all zero: what a dead filter gives."""
        sign, bias, scale, shift = self.post()
        return scale * torch.relu(bias) + shift


def tf_same(frames: int) -> tuple[int, int]:
    """TF's ``same`` padding of a ``frames``-long kernel: the odd extra frame goes after."""
    return (frames - 1) // 2, frames // 2


class FreqMax(ConvBN):
    """musicnn's front-end filters: conv over (``frames`` × ``bands``) of the log-mel, time
    padded by ``pad``, ReLU, BN, max over frequency. Timbral: 7 frames × a share of the bands,
    padded 3+3; temporal: ``frames`` × 1 band, padded TF ``same``."""

    def __init__(self, filters: int, frames: int, bands: int, pad: tuple[int, int]) -> None:
        super().__init__(1, filters, (frames, bands))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, 96)`` → the live filters' indices and the max over frequency of their
        sign-flipped convolution ``(B, live, T)`` (bias, ReLU and BN come after the max)."""
        live = live_filters(self.conv.weight)
        padded = F.pad(x, (0, 0, self.pad[0], self.pad[1]))[:, None]
        return live, F.conv2d(padded, self.signed_weight().index_select(0, live)).amax(dim=3)


class MidConv(ConvBN):
    """Conv over 7 frames × all features (time padded 3+3), ReLU, BN: (B, C, T) → (B, F, T)."""

    def __init__(self, in_features: int, filters: int) -> None:
        super().__init__(1, filters, (TIMBRAL_TAPS, in_features))
        self.pad = TIMBRAL_TAPS // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Conv2d(1, F, (7, C)) over (B, 1, T+6, C) is Conv1d(C, F, 7) over (B, C, T).
        y = F.conv1d(x, self.conv.weight[:, 0].permute(0, 2, 1), self.conv.bias,
                     padding=self.pad)
        scale, shift = self.affine()
        return torch.addcmul(shift[:, None], torch.relu(y), scale[:, None])


class VggBlock(ConvBN):
    """3×3 same conv, ReLU, BN, max pooling with TF's ``valid`` padding (channels-last).

    Works on live channels only: ``x`` holds the input channels ``live_in``, every other input
    channel is the constant ``const_in[c]`` (a dead filter of the block before); returns the
    live output channels, their indices and every channel's dead value.
    """

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int],
                 stride: tuple[int, int]) -> None:
        super().__init__(c_in, c_out, (3, 3))
        self.pool, self.stride = pool, stride

    def forward(self, x: torch.Tensor, live_in: torch.Tensor, const_in: torch.Tensor,
                cpu_gemm: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weight = self.signed_weight()
        live = live_filters(weight)
        weight = weight.index_select(0, live)
        sign, bias, scale, shift = [t.index_select(0, live) for t in self.post()]
        if cpu_gemm and x.device.type == "cpu" and self.conv.in_channels == 1 \
                and self.pool[1] == 1:
            y = conv3x3_rowpool_gemm(F.pad(x[:, 0], (1, 1, 1, 1)), weight.reshape(-1, 9).t(),
                                     self.pool[0], self.stride, [sign, bias, scale, shift])
            return y, live, self.dead_value()
        # The pooling reads every stride-th column only when it is one column wide.
        step = (1, self.stride[1]) if self.pool[1] == 1 else (1, 1)
        z = F.conv2d(x, weight.index_select(1, live_in).contiguous(
            memory_format=torch.channels_last), None, step, 1)
        dead_in = others(live_in, self.conv.in_channels)
        if dead_in.numel() > 0:
            fill = constant_map_3x3(weight.index_select(1, dead_in),
                                    const_in.index_select(0, dead_in), x.shape[2], x.shape[3])
            z = z + fill[:, :, ::step[1]].unsqueeze(0).contiguous(
                memory_format=torch.channels_last)
        m = F.max_pool2d(z, self.pool, (self.stride[0], 1) if self.pool[1] == 1 else self.stride)
        v = (1, -1, 1, 1)
        return (relu_affine(m, sign.view(v), bias.view(v), scale.view(v), shift.view(v)), live,
                self.dead_value())
