"""musicnn's log-mel front end in torch: 16 kHz waveform → ``log10(10000·mel + 1)`` patches.

Matches ``musicnn.extractor.batch_data`` with librosa 0.11: centred 512-point STFT (Hann,
zero padding), hop 256, power 2, 96 Slaney mel bands (librosa's default filterbank), 187 frames
per 3 s patch. One deliberate difference: the reference casts the mel spectrogram to float16
before the log, so its log-mel is rounded to float16 (≤ 2e-3 absolute) and *overflows to inf*
wherever ``10000·mel`` exceeds 65504 (mel > 6.55, loud low notes); we compute in float32 and
never overflow. README "Pretrained models" gives the measured effect.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
#: Frames of one 3 s patch: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1.
PATCH_FRAMES = 187
PATCH_SECONDS = 3.0


class LogMel(nn.Module):
    """Waveform ``(batch, samples)`` → log-mel ``(batch, frames, 96)``, time first as musicnn."""

    def __init__(self, frames: int = PATCH_FRAMES) -> None:
        super().__init__()
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.frames = frames
        self.n_fft, self.hop = N_FFT, HOP
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(
            n_freqs=N_FFT // 2 + 1, f_min=0.0, f_max=SAMPLE_RATE / 2, n_mels=N_MELS,
            sample_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
        )  # (257, 96), librosa.filters.mel(sr=16000, n_fft=512, n_mels=96).T
        self.register_buffer("fbank", fbank, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wave.float(), self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)  # (B, 257, T)
        power = spec.real.square() + spec.imag.square()
        # float64 is never autocast: under the worker's float16 autocast (CUDA, half_precision)
        # a float32 matmul would run in float16, where the power (up to ~1e5) overflows to inf.
        mel = torch.matmul(power.transpose(1, 2).double(), self.fbank.double())  # (B, T, 96)
        return torch.log10(10000.0 * mel[:, : self.frames] + 1.0).float()
