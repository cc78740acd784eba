"""Max first, then ReLU and batch norm: the building blocks of the fast musicnn/vgg ports.

musicnn follows every front-end convolution with ReLU, batch norm and a max over frequency
(vgg: a max pooling). ReLU and an affine map with a positive scale are monotone, so the max can
be taken first, ``max_f(a·relu(z_f + c) + b) = a·relu(max_f z_f + c) + b``, and the elementwise
work then runs on a tensor up to 59× smaller. A channel whose batch-norm scale is negative wants
the *min* instead: its convolution weights are negated (exact in floating point), so one max
serves every channel and :func:`relu_affine` flips the sign back.

Every step is one batched operation per call (no per-chunk loops): a loaded machine preempts
intra-op threads, and each parallel operation can then cost a scheduler time slice, so the
count of operations per call, not only their FLOPs, decides the speed there
(docs/performance-pretrained.md).

Dead filters are not computed: training left 80-90 % of musicnn-msd's timbral filters and 59 %
of vgg-msd's second convolution with every weight below 1e-20 (weight decay), so their output
is their bias to float32 precision (:func:`live_filters`). A dead channel is a constant to the
next layer, whose convolution then skips it and adds its (border-dependent) constant instead
(:func:`constant_map_3x3`). Every function here is TorchScript, so the artifact carries it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: A filter whose every weight is below this in magnitude is dead: with activations below 1e3
#: and at most 4k taps its output moves by < 1e-14, far below float32 resolution of anything.
DEAD_BELOW = 1e-20


def bn_affine(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor | None,
              var: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference batch norm as ``(scale, shift)``: ``bn(y) = scale·y + shift``."""
    assert mean is not None and var is not None, "batch norm without running statistics"
    scale = weight / torch.sqrt(var + eps)
    return scale, bias - mean * scale


def signs(scale: torch.Tensor) -> torch.Tensor:
    """+1 where ``scale >= 0``, −1 where it is negative (the channels that want a min)."""
    return 1.0 - 2.0 * (scale < 0).to(scale.dtype)


def relu_affine(reduced: torch.Tensor, sign: torch.Tensor, bias: torch.Tensor,
                scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``scale·relu(sign·reduced + bias) + shift``: conv bias, ReLU and batch norm after the max.

    ``reduced`` is the max of the sign-flipped convolution without its bias; the vectors are
    shaped to broadcast along its channel axis.
    """
    return torch.addcmul(shift, torch.relu(torch.addcmul(bias, reduced, sign)), scale)


def conv3x3_rowpool_gemm(padded: torch.Tensor, weight: torch.Tensor, pool: int,
                         stride: tuple[int, int], post: list[torch.Tensor]) -> torch.Tensor:
    """vgg's first block on CPU: 3×3 conv of one channel, max pooling ``(pool, 1)``, then
    :func:`relu_affine`, as one GEMM (9 taps: the im2col copy is 9 floats per position).

    ``padded`` is ``(B, H + 2, W + 2)`` (the input zero-padded by one), ``weight`` is
    ``(9, F)`` (sign-flipped, row-major taps), ``post`` is ``[sign, bias, scale, shift]``. Only
    the columns the pooling reads (every ``stride[1]``-th) are computed. Returns ``(B, F, Hp,
    Wp)`` with channels-last memory.
    """
    n_batch, h_pad, w_pad = padded.shape
    step, col_step = stride
    rows, cols = h_pad - 2, (w_pad - 3) // col_step + 1
    pooled_rows = (rows - pool) // step + 1
    filters = weight.shape[1]
    patches = padded.as_strided((n_batch, rows, cols, 3, 3),
                                (h_pad * w_pad, w_pad, col_step, w_pad, 1),
                                padded.storage_offset())
    conv = torch.mm(patches.reshape(-1, 9), weight).view(n_batch, rows, cols * filters)
    last = step * (pooled_rows - 1) + 1
    pooled = conv[:, 0:last:step]
    for k in range(1, pool):
        pooled = torch.maximum(pooled, conv[:, k:k + last:step])
    out = relu_affine(pooled.view(n_batch, pooled_rows, cols, filters), post[0], post[1],
                      post[2], post[3])
    return out.permute(0, 3, 1, 2)


def live_filters(weight: torch.Tensor, dead_below: float = DEAD_BELOW) -> torch.Tensor:
    """Indices of the output filters (dim 0) that have a weight of at least ``dead_below`` in
    magnitude; the others are dead: their convolution is 0 to float32 precision."""
    return (weight.flatten(1).abs() >= dead_below).any(dim=1).nonzero().flatten()


def others(indices: torch.Tensor, size: int) -> torch.Tensor:
    """``range(size)`` without ``indices`` (the dead channels of a live set)."""
    keep = torch.ones(size, dtype=torch.bool, device=indices.device)
    keep[indices] = False
    return keep.nonzero().flatten()


def constant_map_3x3(weight: torch.Tensor, values: torch.Tensor, height: int,
                     width: int) -> torch.Tensor:
    """``(F, height, width)``: what input channels held at constant ``values`` add to a 3×3
    zero-padded convolution with ``weight`` ``(F, D, 3, 3)`` at each output position.

    Only the one-pixel border differs from the interior, so the map is computed on an image of
    at most 3×3 and its middle row and column are repeated.
    """
    h, w = min(height, 3), min(width, 3)
    image = values.view(1, -1, 1, 1).expand(1, values.numel(), h, w).contiguous()
    small = F.conv2d(image, weight, None, 1, 1)[0]  # (F, h, w)
    return small.index_select(1, _edges(height, small.device)).index_select(
        2, _edges(width, small.device))


def _edges(n: int, device: torch.device) -> torch.Tensor:
    """Row indices into a ≤3-row map: first, middle repeated, last (or all when n ≤ 3)."""
    if n <= 3:
        return torch.arange(n, device=device)
    middle = torch.ones(n - 2, dtype=torch.long, device=device)
    return torch.cat([torch.zeros(1, dtype=torch.long, device=device), middle,
                      torch.full((1,), 2, dtype=torch.long, device=device)])
