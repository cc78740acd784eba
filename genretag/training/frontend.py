"""The MFCC frontend that lives inside every model (and so inside the exported artifact)."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from genretag.schemas import FrontendParams


class MfccFrontend(nn.Module):
    """Waveform ``(batch, samples)`` → features ``(batch, channels, n_mfcc, frames)``.

    Channels are the MFCC plus ``deltas`` orders of time derivatives. Each item is scaled to dB
    on its own (``top_db`` relative to its own maximum), so a clip's features never depend on
    the other clips in its batch.
    """

    def __init__(self, sample_rate: int, params: FrontendParams) -> None:
        super().__init__()
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=params.n_mfcc,
            melkwargs={
                "n_fft": params.n_fft,
                "hop_length": params.hop_length,
                "n_mels": params.n_mels,
                "f_min": params.f_min,
                "f_max": params.f_max,
            },
        )
        self.deltas = params.deltas
        self.compute_deltas = torchaudio.transforms.ComputeDeltas(win_length=5)
        self.channels = 1 + params.deltas

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # (B, 1, T): a 4-D spectrogram makes amplitude_to_DB clamp per item, not per batch.
        feats = self.mfcc(wave.unsqueeze(1))  # (B, 1, n_mfcc, frames)
        if self.deltas >= 1:
            d1 = self.compute_deltas(feats)
            feats = torch.cat([feats, d1], dim=1)
            if self.deltas >= 2:
                feats = torch.cat([feats, self.compute_deltas(d1)], dim=1)
        return feats

    def gain_offset(self) -> torch.Tensor:
        """``(channels, n_mfcc)`` change of the features per +1 dB of input gain.

        A gain of g dB adds g to every mel band in dB (the ``top_db`` floor moves with the
        maximum), so only the MFCC channel moves, by g times the DCT's column sums (mostly
        coefficient 0); deltas and rhythm channels are differences and do not move. Exact
        except where the power is below the ``amin`` floor (-100 dB), i.e. digital silence.
        """
        offset = torch.zeros(self.channels, self.mfcc.dct_mat.shape[1])
        offset[0] = self.mfcc.dct_mat.sum(dim=0)
        return offset

    def frames(self, samples: int) -> int:
        """Number of MFCC frames for ``samples`` input samples (centred STFT)."""
        return samples // self.mfcc.MelSpectrogram.spectrogram.hop_length + 1
