"""Genre models. Every model takes a waveform batch ``(batch, samples)`` and returns logits.

The frontend is part of the module, so the exported TorchScript file needs nothing else. Every
model splits into ``features`` (waveform → ``(B, ch, n_mfcc, frames)``) and ``classify``
(features → logits), so training can augment features (SpecAugment) for any model kind.
The time-distributed CNN is the serving model; ``training/baselines.py`` has the others.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genretag.schemas import FrontendParams
from genretag.training.frontend import MfccFrontend

#: Beat periods the tempogram looks at: 0.1 s (600 BPM, subdivisions) to 2 s (30 BPM).
MIN_LAG_SECONDS = 0.1
MAX_LAG_SECONDS = 2.0
TEMPORAL_KINDS = ("attention", "gru")


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """3×3 conv → batch norm → ReLU, then 2×2 max-pool when ``pool``."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def conv_stack(c_in: int, channels: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """Conv blocks (pooled except the last) → global mean → ``(N, channels[-1])``; returns width."""
    if not channels:
        raise ValueError("channels must not be empty")
    blocks = [conv_block(a, b, pool=i < len(channels) - 1)
              for i, (a, b) in enumerate(zip((c_in, *channels[:-1]), channels, strict=True))]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels[-1]


def lag_bins(min_lag: int, max_lag: int, n_bins: int) -> torch.Tensor:
    """``(n_bins, max_lag)`` averaging matrix: lags min_lag..max_lag grouped on a log scale."""
    edges = torch.logspace(math.log10(min_lag), math.log10(max_lag + 1), n_bins + 1,
                           dtype=torch.float64)
    matrix = torch.zeros(n_bins, max_lag)
    for k in range(n_bins):
        lo, hi = float(edges[k]), float(edges[k + 1])
        lags = [lag for lag in range(min_lag, max_lag + 1) if lo <= lag < hi]
        if not lags:  # a bin narrower than one lag takes its nearest lag
            lags = [min(max_lag, max(1, round(math.sqrt(lo * hi))))]
        for lag in lags:
            matrix[k, lag - 1] = 1.0 / len(lags)
    return matrix


class RhythmMfccFrontend(MfccFrontend):
    """MFCC (+ deltas) plus two rhythm channels, computed from the same mel spectrogram.

    * band flux: half-wave rectified frame-to-frame increase of the dB mel spectrogram
      (spectral flux, i.e. onsets), averaged into ``n_mfcc`` bands;
    * tempogram: autocorrelation of the onset-strength envelope (flux summed over bands) in a
      sliding window of ``tempo_window`` frames, normalised by lag 0 and grouped into
      ``n_mfcc`` log-spaced lag bins from 0.1 s to 2 s (600 to 30 BPM).

    Both are ``(B, 1, n_mfcc, frames)`` like the MFCC, so a CNN chunk sees local tempo too.
    """

    def __init__(self, sample_rate: int, params: FrontendParams) -> None:
        super().__init__(sample_rate, params)
        frames_per_second = sample_rate / params.hop_length
        min_lag = max(1, int(round(MIN_LAG_SECONDS * frames_per_second)))
        self.max_lag = max(min_lag + 1, int(round(MAX_LAG_SECONDS * frames_per_second)))
        self.window = params.tempo_window
        self.n_bands = params.n_mfcc
        self.register_buffer("lag_matrix", lag_bins(min_lag, self.max_lag, params.n_mfcc))
        self.channels = 1 + params.deltas + 2

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.mfcc.MelSpectrogram(wave.unsqueeze(1))  # (B, 1, n_mels, F)
        mel_db = self.mfcc.amplitude_to_DB(mel)
        feats = torch.matmul(mel_db.transpose(-1, -2), self.mfcc.dct_mat).transpose(-1, -2)
        if self.deltas >= 1:
            d1 = self.compute_deltas(feats)
            feats = torch.cat([feats, d1], dim=1)
            if self.deltas >= 2:
                feats = torch.cat([feats, self.compute_deltas(d1)], dim=1)
        flux = torch.relu(mel_db[..., 1:] - mel_db[..., :-1])
        flux = nn.functional.pad(flux, (1, 0))  # (B, 1, n_mels, F)
        bands = nn.functional.adaptive_avg_pool2d(flux, [self.n_bands, flux.shape[-1]])
        onset = flux.mean(dim=2).squeeze(1)  # (B, F)
        tempo = self.tempogram(onset - onset.mean(dim=-1, keepdim=True))
        return torch.cat([feats, bands, tempo.unsqueeze(1)], dim=1)

    def tempogram(self, onset: torch.Tensor) -> torch.Tensor:
        """Local autocorrelation ``(B, F)`` → ``(B, n_bins, F)``, normalised by lag 0."""
        frames = onset.shape[-1]
        shifted = nn.functional.pad(onset, (0, self.max_lag)).unfold(1, self.max_lag + 1, 1)
        products = (shifted * onset.unsqueeze(-1)).transpose(1, 2)  # (B, L+1, F)
        local = nn.functional.avg_pool1d(products, self.window, stride=1,
                                         padding=self.window // 2)[..., :frames]
        acf = local[:, 1:] / local[:, :1].clamp_min(1e-6)
        return torch.matmul(self.lag_matrix, acf)


def make_frontend(sample_rate: int, params: FrontendParams) -> MfccFrontend:
    """The MFCC frontend, with rhythm channels when ``params.rhythm``."""
    if params.rhythm:
        return RhythmMfccFrontend(sample_rate, params)
    return MfccFrontend(sample_rate, params)


class AttentionPool(nn.Module):
    """Weighted mean over chunks ``(batch, chunks, dim)`` → ``(batch, dim)``, weights learned."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(x), dim=1)  # (B, C, 1)
        return (weights * x).sum(dim=1)


class RecurrentPool(nn.Module):
    """Bidirectional GRU over chunks, then attention: ``(B, C, dim)`` → ``(B, dim)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)
        self.attend = AttentionPool(2 * (dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.attend(out)


class WaveformClassifier(nn.Module):
    """Base of every model: ``forward(wave) = classify(features(wave))``.

    ``mixed_precision``: whether the AdamW loop may train it in float16/bfloat16 on GPU
    (recurrent layers say no).
    """

    #: The manifest's name of :meth:`represent`'s output (what the output layer reads).
    embedding_name = "penultimate"

    def __init__(self, n_labels: int, sample_rate: int, frontend: FrontendParams) -> None:
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"n_labels must be >= 1, got {n_labels}")
        self.frontend = make_frontend(sample_rate, frontend)
        self.mixed_precision = True

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, samples)`` → ``(B, ch, n_mfcc, frames)``."""
        return self.frontend(wave)

    def represent(self, feats: torch.Tensor) -> torch.Tensor:
        """Features → the window's embedding ``(B, embedding_size)``: what the output layer
        classifies (the artifact's embedding output)."""
        raise NotImplementedError

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        """Embeddings → logits ``(B, n_labels)`` (the output layer)."""
        raise NotImplementedError

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Features → logits ``(B, n_labels)``."""
        return self.decide(self.represent(feats))

    def embedding(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform → embedding (the serving module's ``embed``)."""
        return self.represent(self.features(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(wave))


def row_stats(feats: torch.Tensor) -> torch.Tensor:
    """``(B, ch, M, F)`` → ``(B, 2·ch·M)``: mean and std over time of every feature row."""
    flat = feats.flatten(1, 2)  # (B, ch*M, F)
    return torch.cat([flat.mean(dim=-1), flat.std(dim=-1)], dim=1)


class TimeDistributedCNN(WaveformClassifier):
    """MFCC → chunks of ``chunk_frames`` → one shared CNN per chunk → attention/GRU over chunks.

    Shapes: waveform ``(B, samples)`` → features ``(B, ch, n_mfcc, frames)`` → chunks
    ``(B*C, ch, n_mfcc, chunk_frames)`` → embeddings ``(B, C, D)`` → logits ``(B, n_labels)``.

    With ``stats``, the head also sees the window's per-row mean and std over time (batch
    normalised): the statistics the logistic-regression baseline classifies, so on a small set
    the network starts from what the linear model knows and the CNN adds what it cannot see.
    """

    embedding_name = "pooled"

    def __init__(
        self,
        n_labels: int,
        sample_rate: int,
        frontend: FrontendParams,
        channels: tuple[int, ...] = (32, 64, 128),
        dropout: float = 0.3,
        temporal: str = "attention",
        stats: bool = False,
    ) -> None:
        super().__init__(n_labels, sample_rate, frontend)
        if not channels:
            raise ValueError("channels must not be empty")
        if temporal not in TEMPORAL_KINDS:
            raise ValueError(f"temporal must be one of {TEMPORAL_KINDS}, got {temporal!r}")
        self.chunk_frames = frontend.chunk_frames
        self.mixed_precision = temporal != "gru"
        self.norm = nn.BatchNorm2d(self.frontend.channels)
        self.cnn, c_in = conv_stack(self.frontend.channels, channels)
        self.pool = AttentionPool(c_in) if temporal == "attention" else RecurrentPool(c_in)
        self.use_stats = stats
        n_stats = 2 * self.frontend.channels * frontend.n_mfcc if stats else 0
        # Identity when off keeps one TorchScript-able forward for both shapes.
        self.stats_norm: nn.Module = nn.BatchNorm1d(n_stats) if stats else nn.Identity()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in + n_stats, n_labels))
        self.embedding_size = c_in + n_stats

    def chunk(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, ch, M, F)`` → ``(B, C, ch, M, chunk_frames)``; the last chunk is zero-padded."""
        b, ch, m, f = feats.shape
        n_chunks = (f + self.chunk_frames - 1) // self.chunk_frames
        pad = n_chunks * self.chunk_frames - f
        if pad > 0:
            feats = nn.functional.pad(feats, (0, pad))
        return feats.reshape(b, ch, m, n_chunks, self.chunk_frames).permute(0, 3, 1, 2, 4)

    def embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Features → one embedding per clip ``(B, D)`` (before the classifier head)."""
        chunks = self.chunk(self.norm(feats))  # (B, C, ch, M, T)
        b, c = chunks.shape[0], chunks.shape[1]
        emb = self.cnn(chunks.reshape(b * c, chunks.shape[2], chunks.shape[3], chunks.shape[4]))
        return self.pool(emb.reshape(b, c, -1))

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform → one embedding per clip ``(B, D)``."""
        return self.embed_features(self.features(wave))

    def represent(self, feats: torch.Tensor) -> torch.Tensor:
        """The pooled chunk embeddings (+ the normalised row statistics with ``stats``)."""
        emb = self.embed_features(feats)
        if self.use_stats:
            emb = torch.cat([emb, self.stats_norm(row_stats(feats))], dim=1)
        return emb

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)


class SeedEnsemble(WaveformClassifier):
    """Members trained from different seeds on the same features; logits averaged.

    One frontend (every member's is the same module with the same parameters), so serving
    computes the features once per window. Averaging logits is the geometric mean of the
    members' probabilities, renormalised by the activation.
    """

    embedding_name = "members"

    def __init__(self, members: list[WaveformClassifier]) -> None:
        nn.Module.__init__(self)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.frontend = members[0].frontend
        for m in members:  # the classifier parts only; frontends are identical and unused
            m.frontend = nn.Identity()
        self.members = nn.ModuleList(members)
        self.widths = [int(m.embedding_size) for m in members]
        self.embedding_size = sum(self.widths)

    def represent(self, feats: torch.Tensor) -> torch.Tensor:
        """The members' embeddings side by side (each member's head reads its own part)."""
        parts: list[torch.Tensor] = []
        for member in self.members:
            parts.append(member.represent(feats))
        return torch.cat(parts, dim=1)

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(0)
        start = 0
        for k, member in enumerate(self.members):
            width = self.widths[k]
            logits = member.decide(z[:, start:start + width])
            start += width
            out = logits if k == 0 else out + logits
        return out / len(self.members)


class ServingModel(nn.Module):
    """What gets exported (artifact contract v2): a model plus its activation.

    ``forward(wave)`` gives probabilities; ``embed(wave)`` the window embeddings, ``head(z)``
    their probabilities and ``tag(wave)`` both from one pass, so ``forward == head ∘ embed``
    (the backbone and the head can run apart). The wrapped model provides ``embedding(wave)``
    and ``decide(z)`` (logits).
    """

    def __init__(self, model: nn.Module, activation: str) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be sigmoid or softmax, got {activation!r}")
        self.model = model
        self.softmax = activation == "softmax"

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.softmax:
            return torch.softmax(logits, dim=-1)
        return torch.sigmoid(logits)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.activate(self.model.decide(self.model.embedding(wave)))

    @torch.jit.export
    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Window embeddings ``(B, size)``."""
        return self.model.embedding(wave)

    @torch.jit.export
    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Probabilities of window embeddings."""
        return self.activate(self.model.decide(z))

    @torch.jit.export
    def tag(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and embeddings of one pass."""
        z = self.model.embedding(wave)
        return self.activate(self.model.decide(z)), z
