"""The rewritten musicnn/vgg ports compute what the layer-for-layer ports computed (issue 28).

``bench/pretrained_before.py`` is the port as it was (each layer as TF wrote it); the rewrite
skips dead filters, takes the max before ReLU and batch norm, runs vgg's first block as a GEMM
on CPU (a convolution on CUDA) and must give the same logits, embeddings and pooled features:
on random weights with negative batch-norm scales and dead filters (no download needed) and on
the four real checkpoints. The TF parity itself is tests/training/pretrained/test_parity.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bench import pretrained_before as before
from genretag.training.pretrained.catalog import MODELS
from genretag.training.pretrained.convert import PretrainedTagger, convert, read_wheel_checkpoint
from genretag.training.pretrained.maxfirst import live_filters
from genretag.training.pretrained.nets import Musicnn, Vgg
from genretag.worker.infer import optimize_for_cpu

#: Same function, other summation order: float32 rounding only (logits are O(10)).
ATOL = 5e-5


def _randomise(net: torch.nn.Module, seed: int, dead: float = 0.4) -> torch.nn.Module:
    """Random weights (variance-preserving, as trained nets are) and batch-norm statistics,
    a third of the BN scales negative, and a share ``dead`` of the convolution filters dead
    as training leaves them (every weight ~1e-30, so the next layer sees a constant)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith("bn.weight") or name.endswith("input_bn.weight"):
                p.copy_((torch.rand(p.shape, generator=gen) + 0.5)
                        * torch.where(torch.rand(p.shape, generator=gen) < 0.33, -1.0, 1.0))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / (p[0].numel() ** 0.5))
                if name.endswith("conv.weight"):
                    p[torch.rand(p.shape[0], generator=gen) < dead] *= 1e-30
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


def _pair(new: torch.nn.Module, old_cls: type, **kwargs) -> torch.nn.Module:
    old = old_cls(**kwargs).eval()
    old.load_state_dict(new.state_dict())  # same names and shapes: the checkpoint layout
    return old


def _paths(net: torch.nn.Module) -> list[torch.nn.Module]:
    """The net on each of its paths: vgg's first block is a GEMM on CPU and a convolution
    elsewhere (CUDA); ``cpu_gemm=False`` runs the latter on CPU."""
    if not hasattr(net, "cpu_gemm"):
        return [net]
    conv = copy.deepcopy(net)
    conv.cpu_gemm = False
    return [net, conv]


def _logmel(batch: int, frames: int = 187, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 96, generator=gen) * 4  # log10(10000·mel + 1) range


@pytest.mark.parametrize("kwargs", [dict(n_labels=5), dict(n_labels=3, midend=8, backend=16,
                                                          frontend_scale=0.1)])
@pytest.mark.parametrize("batch,frames", [(1, 187), (3, 187), (2, 40)])
def test_musicnn_equals_the_layer_for_layer_port(kwargs, batch, frames) -> None:
    new = _randomise(Musicnn(**kwargs), seed=batch + frames)
    old = _pair(new, before.Musicnn, **kwargs)
    x = _logmel(batch, frames)
    with torch.inference_mode():
        want_pooled, want = old.pooled(x), old(x)
        for net in _paths(new):
            torch.testing.assert_close(net.pooled(x), want_pooled, atol=ATOL, rtol=1e-5)
            torch.testing.assert_close(net(x), want, atol=ATOL, rtol=1e-5)
            torch.testing.assert_close(net.embed(x), old.embed(x), atol=ATOL, rtol=1e-5)
    assert want.abs().max() > 0.1 and want_pooled.std() > 0.1  # not a degenerate network


@pytest.mark.parametrize("batch", [1, 3])
def test_vgg_equals_the_layer_for_layer_port(batch) -> None:
    new = _randomise(Vgg(4, filters=8, flat=16), seed=batch)
    old = _pair(new, before.Vgg, n_labels=4, filters=8, flat=16)
    x = _logmel(batch)
    with torch.inference_mode():
        want = old(x)
        for net in _paths(new):
            torch.testing.assert_close(net.embed(x), old.embed(x), atol=ATOL, rtol=1e-5)
            torch.testing.assert_close(net(x), want, atol=ATOL, rtol=1e-5)
    assert want.abs().max() > 0.1


def test_negative_scales_and_dead_filters_are_exercised() -> None:
    """The random nets above really have what the rewrite treats apart: negative batch-norm
    scales (max of the negated convolution) and dead filters (not computed)."""
    new = _randomise(Musicnn(3, midend=8, backend=16, frontend_scale=0.1), seed=7)
    block = new.timbral[0]
    assert (block.bn.weight < 0).any() and (block.bn.weight > 0).any()
    alive = live_filters(block.conv.weight).numel()
    assert 0 < alive < block.conv.out_channels
    vgg = _randomise(Vgg(4, filters=8, flat=16), seed=1)
    assert all(0 < live_filters(b.conv.weight).numel() < 8 for b in vgg.blocks[:4])
    old = _pair(new, before.Musicnn, n_labels=3, midend=8, backend=16, frontend_scale=0.1)
    with torch.inference_mode():
        torch.testing.assert_close(new.front(_logmel(2)), _old_front(old, _logmel(2)),
                                   atol=ATOL, rtol=1e-5)


def _old_front(old: before.Musicnn, logmel: torch.Tensor) -> torch.Tensor:
    """The old port's front end ``(B, 561, T)``, layer by layer."""
    x = old.input_bn(logmel.unsqueeze(1))
    padded = torch.nn.functional.pad(x, (0, 0, 3, 3))
    return torch.cat([b(padded) for b in old.timbral] + [b(x) for b in old.temporal], dim=1)


def test_front_end_is_inference_only_and_the_tail_still_trains() -> None:
    net = _randomise(Musicnn(3, midend=8, backend=16, frontend_scale=0.1), seed=3)
    pooled = net.pooled(_logmel(2))  # autograd on: the front end runs without it
    assert not pooled.requires_grad
    net.tail(pooled).sum().backward()  # transfer learning fine-tunes the back end
    assert net.dense.weight.grad is not None
    with pytest.raises(RuntimeError, match="inference form only"):
        net.train().pooled(_logmel(1))
    with pytest.raises(RuntimeError, match="inference form only"):
        _randomise(Vgg(2, filters=4, flat=8), seed=1).train().embed(_logmel(1))


@pytest.mark.parametrize("name", list(MODELS))
def test_real_checkpoints_serve_the_same_probabilities(name, musicnn_wheel, tmp_path) -> None:
    """Converted weights, as served: scripted, and frozen + optimised as the worker loads it."""
    spec = MODELS[name]
    new = convert(spec, read_wheel_checkpoint(musicnn_wheel, spec, tmp_path))
    old = _pair(new, before.Musicnn if spec.arch == "musicnn" else before.Vgg,
                n_labels=len(spec.tags))
    gen = torch.Generator().manual_seed(5)
    wave = torch.randn(5, 48000, generator=gen) * 0.1
    wave[1] = 0.9 * torch.sin(2 * torch.pi * 110.0 * torch.arange(48000) / 16000)  # loud
    served = torch.jit.script(PretrainedTagger(new).eval())
    with torch.inference_mode():
        want = PretrainedTagger(old).eval()(wave)
        assert torch.allclose(served(wave), want, atol=1e-5)
        assert torch.allclose(optimize_for_cpu(served)(wave), want, atol=1e-5)
        logmel = PretrainedTagger(old).logmel(wave)
        assert torch.allclose(new(logmel), old(logmel), atol=ATOL)


@pytest.mark.parametrize("name", ["musicnn-msd", "vgg-msd"])
def test_cuda_path_runs_under_float16_autocast(name, musicnn_wheel, tmp_path) -> None:
    """GPU-ready without a GPU: the path CUDA takes, scripted, under the worker's float16
    autocast (CPU autocast here) keeps every window's top-5 tags and float32 outputs."""
    spec = MODELS[name]
    net = convert(spec, read_wheel_checkpoint(musicnn_wheel, spec, tmp_path))
    served = torch.jit.script(PretrainedTagger(_paths(net)[-1]).eval())
    gen = torch.Generator().manual_seed(6)
    t = torch.arange(48000) / 16000
    wave = torch.stack([torch.randn(48000, generator=gen) * 0.1,
                        0.9 * torch.sin(2 * torch.pi * 110.0 * t),  # loud: float16's range
                        0.3 * torch.sin(2 * torch.pi * 440.0 * t) * torch.sin(2 * torch.pi * t)])
    with torch.inference_mode():
        full = served(wave)
        with torch.autocast("cpu", dtype=torch.float16):
            half = served(wave).float()
    assert torch.isfinite(half).all() and (half - full).abs().max() < 0.05
    for a, b in zip(full, half, strict=True):
        assert set(a.topk(5).indices.tolist()) == set(b.topk(5).indices.tolist())
