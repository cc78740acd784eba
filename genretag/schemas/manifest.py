"""The model manifest: everything the worker needs to know about a model artifact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import AwareDatetime, Field, model_validator

from genretag.schemas._base import Contract, utcnow


class FrontendParams(Contract):
    """MFCC frontend parameters; the same numbers build the frontend in training and serving."""

    n_mfcc: int = Field(default=20, ge=1, le=128, description="MFCC coefficients per frame.")
    n_fft: int = Field(default=2048, ge=16, description="FFT size (samples).")
    hop_length: int = Field(default=512, ge=1, description="Samples between frames.")
    n_mels: int = Field(default=128, ge=1, description="Mel bands the MFCC are taken from.")
    f_min: float = Field(default=0.0, ge=0, description="Lowest mel frequency (Hz).")
    f_max: float | None = Field(default=None, description="Highest mel frequency (Hz).")
    chunk_frames: int = Field(default=64, ge=1, description="MFCC frames per time-distributed chunk.")
    deltas: int = Field(default=0, ge=0, le=2, description="0: MFCC; 1: + delta; 2: + delta-delta.")
    rhythm: bool = Field(
        default=False,
        description="Add two rhythm channels: band-wise spectral flux (onsets) and a local "
        "tempogram (autocorrelation of the onset-strength envelope).",
    )
    tempo_window: int = Field(
        default=256, ge=8, description="Frames of onset envelope per local tempogram column."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FrontendParams:
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} must not exceed n_mels={self.n_mels}")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length={self.hop_length} must not exceed n_fft={self.n_fft}")
        return self


class LogMelParams(Contract):
    """Log-mel frontend of the pretrained musicnn/vgg models: ``log10(10000·mel + 1)`` patches."""

    kind: Literal["logmel"] = "logmel"
    n_fft: int = Field(default=512, ge=16)
    hop_length: int = Field(default=256, ge=1)
    n_mels: int = Field(default=96, ge=1)
    patch_frames: int = Field(default=187, ge=1, description="Spectrogram frames per patch.")


#: What a tag describes; the tag store keeps genres in genre sets and the rest beside them.
TagKind = Literal["genre", "mood", "era", "instrument", "voice", "other"]
TAG_KINDS: tuple[str, ...] = ("genre", "mood", "era", "instrument", "voice", "other")


class DecoderInfo(Contract):
    """Which decoder turned the training audio into samples, and its library versions.

    Serving with another decoder (or other versions) may feed the model slightly different
    samples: the worker compares this with its own and warns when they differ.
    """

    name: Literal["libav", "ffmpeg"]
    versions: dict[str, str] = Field(default_factory=dict)


#: How a track's vector is made from its windows' embeddings.
EmbeddingPooling = Literal["mean"]


class EmbeddingSpec(Contract):
    """The artifact's second output (contract v2): one embedding per window, pooled per track.

    Two artifacts whose ``space`` is equal give comparable vectors (same layer of the same
    weights): a transfer head on a pulled backbone shares that backbone's space, so its stored
    vectors, its index and a later shared-backbone model set line up with the backbone's.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                      description="Which layer (musicnn 'penultimate', vgg 'pool5', TD-CNN "
                      "'pooled', …).")
    size: int = Field(ge=1, le=65536, description="Values per embedding.")
    pooling: EmbeddingPooling = Field(
        default="mean", description="Track vector = mean of its non-silent windows' embeddings.")
    backbone: str = Field(min_length=1, max_length=128,
                          description="The network the layer belongs to (model name).")
    backbone_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Weights checksum of the artifact whose layer this is (the backbone's for a "
        "transfer head, the artifact's own otherwise).")

    @property
    def space(self) -> str:
        """Stable id of the vector space: ``backbone.name.sha12`` (index and store key part)."""
        return f"{self.backbone}.{self.name}.{self.backbone_sha256[:12]}"


class ModelManifest(Contract):
    """Describes one TorchScript artifact; embedded in the file as ``manifest.json``.

    Version 1: ``forward(wave) -> probabilities``. Version 2 adds ``embedding`` and the module's
    exported ``embed(wave)``, ``head(embedding)`` and ``tag(wave) -> (probabilities,
    embedding)``, with ``forward(wave) == head(embed(wave))`` (backbone and head apart).
    """

    schema_version: Literal[1, 2] = 1
    name: str = Field(default="tdcnn", min_length=1)
    version: str = Field(min_length=1, description="Tag records carry this version.")
    labels: list[str] = Field(min_length=1)
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    sample_rate: int = Field(ge=4000, le=192000)
    clip_seconds: float = Field(gt=0, le=600)
    min_seconds: float = Field(default=1.0, gt=0)
    frontend: FrontendParams | LogMelParams = Field(default_factory=FrontendParams)
    kinds: dict[str, TagKind] = Field(
        default_factory=dict,
        description="Kind of each label that is not a genre; a label absent here is a genre "
        "(so artifacts written before kinds existed read as all-genre).",
    )
    thresholds: dict[str, float] = Field(description="Per-label decision threshold in [0, 1].")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the weights (state_dict).")
    metrics: dict[str, Any] = Field(default_factory=dict)
    dataset: str = Field(default="", description="What it was trained on (e.g. fma_small).")
    torch_version: str = ""
    torchaudio_version: str = ""
    decoder: DecoderInfo | None = Field(
        default=None,
        description="Training's decoder; None in artifacts made before it was recorded.")
    created_at: AwareDatetime = Field(default_factory=utcnow)
    embedding: EmbeddingSpec | None = Field(
        default=None, description="The per-window embedding output (schema 2); None: tags only.")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def kind_of(self, label: str) -> str:
        """``genre`` unless ``kinds`` says otherwise."""
        return self.kinds.get(label, "genre")

    def primary_genre(self, probabilities: Sequence[float]) -> str | None:
        """The most probable label of kind genre (ties: the first in ``labels``), or None when
        the model has no genre label."""
        genres = [(p, -k, label) for k, (label, p) in enumerate(zip(self.labels, probabilities,
                                                                     strict=True))
                  if self.kind_of(label) == "genre"]
        return max(genres)[2] if genres else None

    @model_validator(mode="after")
    def _thresholds_cover_labels(self) -> ModelManifest:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        missing = [label for label in self.labels if label not in self.thresholds]
        if missing:
            raise ValueError(f"thresholds missing for labels {missing}")
        bad = {k: v for k, v in self.thresholds.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"thresholds outside [0, 1]: {bad}")
        unknown = sorted(set(self.kinds) - set(self.labels))
        if unknown:
            raise ValueError(f"kinds given for labels that are not in labels: {unknown}")
        if self.min_seconds > self.clip_seconds:
            raise ValueError("min_seconds must not exceed clip_seconds")
        if (self.embedding is not None) != (self.schema_version == 2):
            raise ValueError("an embedding needs schema_version 2, and schema 2 an embedding")
        return self
