"""Model properties: shapes, batch consistency, TorchScript equals eager, windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genretag.schemas import FrontendParams
from genretag.training.models import ServingModel, TimeDistributedCNN
from genretag.core.audio.windows import average_by_owner, make_windows, stack_windows

SR = 16000


PARAMS = FrontendParams(n_fft=512, hop_length=256, n_mels=40, chunk_frames=16, deltas=2)


@pytest.fixture(scope="module", params=[False, True], ids=["conv", "conv+stats"])
def model(request: pytest.FixtureRequest) -> TimeDistributedCNN:
    torch.manual_seed(0)
    return TimeDistributedCNN(5, SR, PARAMS, (8, 16), stats=request.param).eval()


@pytest.mark.parametrize("stats", [False, True])
def test_stats_branch_gives_the_head_the_window_statistics(stats: bool) -> None:
    """With the conv path silenced (constant embedding), only the statistics branch can tell
    two windows apart: logits move with the audio's MFCC statistics iff the branch is on."""
    torch.manual_seed(0)
    model = TimeDistributedCNN(3, SR, PARAMS, (8, 16), stats=stats).eval()
    with torch.no_grad():
        for p in model.cnn.parameters():
            p.zero_()
    t = torch.arange(SR * 2) / SR
    low, high = torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 3000 * t)
    with torch.inference_mode():
        out = model(torch.stack([low, high]) * 0.3)
    assert model.head[1].in_features == 16 + (2 * 3 * 20 if stats else 0)
    assert (not torch.allclose(out[0], out[1], atol=1e-4)) is stats


def test_output_shape_and_chunking(model: TimeDistributedCNN) -> None:
    wave = torch.randn(3, SR * 3) * 0.1
    assert model(wave).shape == (3, 5)
    feats = model.frontend(wave)
    assert feats.shape[:3] == (3, 3, 20)  # MFCC + delta + delta-delta
    chunks = model.chunk(feats)
    assert chunks.shape[-1] == 16 and chunks.shape[1] == -(-feats.shape[-1] // 16)


def test_batched_equals_per_item(model: TimeDistributedCNN) -> None:
    wave = torch.randn(4, SR * 2) * torch.tensor([[0.01], [0.1], [1.0], [0.5]])
    with torch.inference_mode():
        batched = model(wave)
        single = torch.cat([model(wave[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_scripted_equals_eager(model: TimeDistributedCNN, activation: str) -> None:
    serving = ServingModel(model, activation).eval()
    scripted = torch.jit.script(serving)
    wave = torch.randn(2, SR * 2) * 0.2
    with torch.inference_mode():
        eager, script = serving(wave), scripted(wave)
    torch.testing.assert_close(eager, script, atol=1e-5, rtol=1e-5)
    assert ((eager >= 0) & (eager <= 1)).all()
    if activation == "softmax":
        torch.testing.assert_close(eager.sum(-1), torch.ones(2))


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_labels"):
        TimeDistributedCNN(0, SR, FrontendParams())
    with pytest.raises(ValueError, match="activation"):
        ServingModel(torch.nn.Identity(), "relu")


def test_make_windows_pads_crops_and_spreads() -> None:
    short = np.ones(50, np.float32)
    w = make_windows(short, 100, 4)
    assert w.shape == (1, 100) and w[0, :50].all() and not w[0, 50:].any()
    long = np.arange(1000, dtype=np.float32)
    w = make_windows(long, 100, 4)
    assert w.shape == (4, 100) and w[0, 0] == 0 and w[-1, -1] == 999
    centre = make_windows(long, 100, 1)
    assert centre[0, 0] == 450


def test_average_by_owner_matches_per_track_mean() -> None:
    per_track = [np.zeros((2, 10), np.float32), np.zeros((1, 10), np.float32), np.zeros((3, 10), np.float32)]
    windows, owner = stack_windows(per_track)
    assert windows.shape == (6, 10) and owner.tolist() == [0, 0, 1, 2, 2, 2]
    probs = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    avg = average_by_owner(probs, owner, 3)
    torch.testing.assert_close(avg[0], probs[:2].mean(0))
    torch.testing.assert_close(avg[2], probs[3:].mean(0))
