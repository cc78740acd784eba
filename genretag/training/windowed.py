"""Evaluate a trained model the way the worker tags: windows over each whole track, averaged.

The test metrics of a run are computed on one centre clip per item; :func:`windowed_probs`
gives the worker's view of the same items (placement of :mod:`genretag.core.audio.placement`,
the windows decoded by the run's own decoder, ``TrainConfig.decoder``, as the worker decodes them,
silent windows left out, mean of the rest), so a report shows both and a model is judged on
what serving will do with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from genretag.core.audio.aggregate import aggregate, silent_windows
from genretag.core.audio.decoders import DEFAULT_DECODER, DecoderName, open_decoder
from genretag.core.audio.placement import Placement
from genretag.core.settings import WindowSection
from genretag.core.audio.uri import AudioSource
from genretag.training.items import Item


def predict_probs(model: nn.Module, waves: np.ndarray, objective: str, device: torch.device,
                  batch_size: int = 32) -> np.ndarray:
    """Probabilities ``(n, n_labels)`` of waveform windows through the whole model (frontend
    included, as the exported artifact runs it), in float32, batch by batch."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(waves), batch_size):
            x = torch.from_numpy(np.array(waves[start:start + batch_size], np.float32)).to(device)
            logits = model(x).float()
            out.append((logits.softmax(-1) if objective == "single" else logits.sigmoid()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def windowed_probs(model: nn.Module, items: Sequence[Item], sample_rate: int, clip_seconds: float,
                   objective: str, device: torch.device,
                   windows: WindowSection | None = None, decoder: DecoderName = DEFAULT_DECODER,
                   ) -> tuple[np.ndarray, list[int]]:
    """``(probs, kept)``: per-item probabilities over whole-track windows decoded by
    ``decoder`` (the run's, which the worker will use), and the indices of the items that
    decoded (an item that does not is left out, as the worker would park it)."""
    section = windows or WindowSection()  # the worker's defaults
    placement = Placement.of(clip_seconds, section)
    sources = [AudioSource(str(item.path), is_local=True) for item in items]
    dec = open_decoder(decoder)
    try:
        decoded = dec.decode_tracks(sources, sample_rate, placement)
    finally:
        dec.close()
    kept = [k for k, d in enumerate(decoded) if not isinstance(d, Exception)]
    if not kept:
        return np.zeros((0, 0), np.float32), []
    windows = np.concatenate([decoded[k].windows for k in kept])  # type: ignore[union-attr]
    probs = predict_probs(model, windows, objective, device)
    out, at = [], 0
    for k in kept:
        audio = decoded[k]
        n = len(audio.starts)  # type: ignore[union-attr]
        silent = silent_windows(audio.windows, audio.lengths)  # type: ignore[union-attr]
        out.append(aggregate(probs[at:at + n], silent, section.aggregation))
        at += n
    return np.stack(out).astype(np.float32), kept
