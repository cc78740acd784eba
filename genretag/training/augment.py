"""Training-time augmentation, in the feature domain on cached window features.

* ``gain_shift``: a gain of g dB is exactly a shift of the MFCC channel by g times the
  frontend's ``gain_offset`` (deltas and rhythm channels do not move);
* ``crop_frames``: a random span of a window's frames. An approximation of the features of the
  cropped audio: they differ by the window's dB reference (``top_db`` below the window's maximum),
  the tempogram's mean and a few frames of STFT/delta padding at the edges; the model is always
  evaluated on whole windows, as served;
* ``spec_augment``: masks features by definition;
* ``mixup``: mixes features and targets. Mixing log-features is not the features of the mixed
  audio; it is the feature-space mixup variant, a regulariser like the waveform one.

``random_crops`` and ``random_gain`` act on waveforms (kept for callers that hold audio).
"""

from __future__ import annotations

import numpy as np
import torch


def random_crops(waves: np.ndarray, lengths: np.ndarray, crop: int,
                 rng: np.random.Generator) -> np.ndarray:
    """A random ``crop``-sample window of each row, inside its audio where the audio allows.

    Rows no longer than ``crop`` are instead rolled by a random shift within their audio.
    """
    out = np.empty((len(waves), crop), dtype=np.float32)
    for i, (wave, n) in enumerate(zip(waves, lengths)):
        n = int(min(n, wave.shape[0]))
        if wave.shape[0] > crop:
            start = int(rng.integers(0, max(0, n - crop) + 1))
            out[i] = wave[start : start + crop]
        else:
            out[i] = wave[:crop]
            if n > 1:
                out[i, :n] = np.roll(out[i, :n], int(rng.integers(0, n)))
    return out


def random_gain(wave: torch.Tensor, max_db: float) -> torch.Tensor:
    """Scale each clip by a uniform random gain in ±``max_db``."""
    if max_db <= 0:
        return wave
    gain_db = (torch.rand(wave.shape[0], 1, device=wave.device) * 2 - 1) * max_db
    return wave * torch.pow(10.0, gain_db / 20)


def crop_frames(feats: torch.Tensor, length: int, rng: np.random.Generator) -> torch.Tensor:
    """A random ``length``-frame span of each item of ``(B, ch, M, F)`` features."""
    frames = feats.shape[-1]
    if length >= frames:
        return feats
    starts = torch.from_numpy(rng.integers(0, frames - length + 1, feats.shape[0]))
    index = (starts[:, None] + torch.arange(length)[None, :]).to(feats.device)
    index = index[:, None, None, :].expand(-1, feats.shape[1], feats.shape[2], -1)
    return feats.gather(3, index)


def gain_shift(feats: torch.Tensor, offset: torch.Tensor, max_db: float) -> torch.Tensor:
    """Features of each clip played ±``max_db`` louder (uniform): ``feats + g·offset``.

    ``offset`` is the frontend's ``gain_offset()`` ``(ch, M)``: features per +1 dB.
    """
    if max_db <= 0:
        return feats
    gain_db = (torch.rand(feats.shape[0], device=feats.device) * 2 - 1) * max_db
    return feats + gain_db[:, None, None, None] * offset[None, :, :, None].to(feats.dtype)


def spec_augment(feats: torch.Tensor, freq_width: int, time_width: int,
                 n_time_masks: int = 2) -> torch.Tensor:
    """SpecAugment per clip: one coefficient band and ``n_time_masks`` frame spans are replaced
    by each row's mean over time (shared by all channels of the clip)."""
    b, _, m, f = feats.shape
    device = feats.device
    fill = feats.mean(dim=-1, keepdim=True).expand_as(feats)
    mask = torch.zeros(b, 1, m, f, dtype=torch.bool, device=device)
    rows = torch.arange(m, device=device).view(1, m, 1)
    cols = torch.arange(f, device=device).view(1, 1, f)
    if freq_width > 0:
        width = torch.randint(0, freq_width + 1, (b, 1, 1), device=device)
        start = (torch.rand(b, 1, 1, device=device) * (m - width + 1)).long()
        mask |= ((rows >= start) & (rows < start + width)).unsqueeze(1)
    for _ in range(n_time_masks if time_width > 0 else 0):
        width = torch.randint(0, time_width + 1, (b, 1, 1), device=device)
        start = (torch.rand(b, 1, 1, device=device) * (f - width + 1)).long()
        mask |= ((cols >= start) & (cols < start + width)).unsqueeze(1)
    return torch.where(mask, fill, feats)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip with a random partner: ``λx + (1-λ)x'`` and soft targets alike."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
