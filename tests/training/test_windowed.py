"""Training's whole-track evaluation decodes with the run's decoder, as the worker will serve.

The windows of a track longer than a clip are reached by seeking, where the two decoders' samples
differ slightly (tests/core/audio/test_libav_windows.py): so the probabilities tell which decoder
produced them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genretag.core.audio.aggregate import aggregate, silent_windows
from genretag.core.audio.decoders import open_decoder
from genretag.core.audio.placement import Placement
from genretag.core.settings import WindowSection
from genretag.core.audio.uri import AudioSource
from genretag.training.items import LabelledItem
from genretag.training.synth import synth_clip
from genretag.training.windowed import predict_probs, windowed_probs

SR, CLIP = 16000, 3.0


class Loudness(nn.Module):
    """A stand-in model whose outputs follow the samples closely (levels of each window)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.abs().mean(1) * 50, x.std(1) * 50, x[:, :4096].abs().sum(1)], 1)


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[LabelledItem]:
    root = tmp_path_factory.mktemp("windowed")
    return [LabelledItem(f"t{k}", synth_clip(root / f"t{k}.mp3", label, 40.0, seed=k),
                         [label], "test") for k, label in enumerate(("chiptune", "techno"))]


def _expected(name: str, items: list[LabelledItem]) -> np.ndarray:
    """What the worker's decoder ``name`` gives these items, aggregated as the worker does."""
    decoder = open_decoder(name)
    try:
        decoded = decoder.decode_tracks([AudioSource(str(i.path), is_local=True) for i in items],
                                        SR, Placement(CLIP, 4, 10.0, 10.0))
    finally:
        decoder.close()
    rows = []
    for audio in decoded:
        assert not isinstance(audio, Exception), audio
        probs = predict_probs(Loudness(), audio.windows, "multi", torch.device("cpu"))
        rows.append(aggregate(probs, silent_windows(audio.windows, audio.lengths), "mean"))
    return np.stack(rows).astype(np.float32)


def test_whole_track_evaluation_uses_the_configured_decoder(items) -> None:
    got = {name: windowed_probs(Loudness(), items, SR, CLIP, "multi", torch.device("cpu"),
                                WindowSection(max_windows=4, skip_start_s=10.0,
                                              skip_end_s=10.0), decoder=name)
           for name in ("libav", "ffmpeg")}
    want = {name: _expected(name, items) for name in got}
    for name, (probs, kept) in got.items():
        assert kept == [0, 1]
        np.testing.assert_array_equal(probs, want[name])
    # The two decoders' seeked windows differ, so the check above tells them apart.
    assert not np.array_equal(want["libav"], want["ffmpeg"])
