"""``TrainConfig``: everything that decides a training run, for every trainer and model kind.

Kept free of torch so the CLI can validate it (and generate ``train``'s flags from its fields)
without loading it. The field descriptions are the flags' help.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genretag.core.audio.decoders import DEFAULT_DECODER, DecoderName
from genretag.core.audio.placement import WHOLE_TRACK_CLIPS
from genretag.core.settings import ExpandedPath, WindowSection
from genretag.schemas import FrontendParams
from genretag.schemas.manifest import TagKind
from genretag.training.registry import DEFAULT_KIND, get_spec

#: Windows the worker places, back to back, on a clip up to ``WHOLE_TRACK_CLIPS`` clips long
#: (the coverage policy, capped by the ``windows`` section's ``max_windows``): evaluation averages
#: the same windows of each decoded clip.
SERVING_MAX_WINDOWS = min(WindowSection().max_windows, WHOLE_TRACK_CLIPS)
#: ``single``: one label per item, softmax; ``multi``: multi-hot targets, sigmoid.
Objective = Literal["single", "multi"]


class TrainConfig(BaseModel):
    """Everything that decides a training run (saved in the report and the manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default=DEFAULT_KIND, description="The architecture: a registered kind "
                       "(genretag/training/registry.py).")
    objective: Objective = "single"
    sample_rate: int = Field(default=22050, description="Rate the audio is decoded at (Hz).")
    clip_seconds: float = Field(default=30.0, description="Seconds of one window, the clip the "
                                "model sees and the worker tags.")
    min_seconds: float = Field(default=1.0, description="Clips that decode to less are skipped "
                               "as broken.")
    frontend: FrontendParams = Field(default_factory=FrontendParams)
    channels: tuple[int, ...] = Field(default=(32, 64, 128), description="Convolution widths "
                                      "(cnn, tdcnn), comma-separated.")
    dropout: float = Field(default=0.3, description="Dropout before the classifier.")
    hidden: int = Field(default=256, ge=2, description="dense: first layer; lstm: 2× hidden size.")
    temporal: Literal["attention", "gru"] = Field(default="attention",
                                                  description="TD-CNN pooling over chunks.")
    stats_branch: bool = Field(
        default=False, description="tdcnn: the head also sees each window's per-row mean and "
        "std (the logreg baseline's statistics).")
    epochs: int = Field(default=30, ge=1, description="Most epochs (early stopping ends sooner).")
    batch_size: int = Field(default=32, ge=1, description="Windows per training batch.")
    lr: float = Field(default=3e-3, description="Peak learning rate (one-cycle).")
    weight_decay: float = Field(default=1e-2, description="AdamW weight decay.")
    patience: int = Field(default=6, description="Early stopping: epochs without a better "
                          "validation loss.")
    mixup: float = Field(default=0.0, ge=0, description="Beta(α, α) mixup of features; 0: off.")
    gain_db: float = Field(default=6.0, description="Random gain of training windows, ± dB.")
    spec_mask: bool = Field(default=True, description="SpecAugment time and frequency masks.")
    eval_windows: int = Field(
        default=SERVING_MAX_WINDOWS, ge=1,
        description="Windows averaged per track in evaluation: those the worker places on a "
        "clip analysed end to end.")
    train_seconds: float | None = Field(
        default=None, description="Audio decoded per training clip (≥ clip); default "
        "clip × eval_windows, what the worker decodes.")
    epoch_windows: int = Field(
        default=0, ge=0, description="Training windows drawn per track each epoch (a fresh "
        "random draw); 0: every window.")
    train_hop_seconds: float | None = Field(
        default=None, gt=0, description="Spacing of training windows; default half a clip "
        "(a head on a backbone: the worker's windows).")
    crop_seconds: float | None = Field(
        default=None, description="Random crop of a training window's features (≤ clip; a "
        "longer one is dropped); default the whole window.")
    c: float | None = Field(
        default=None, gt=0, description="logreg/dense/transfer: inverse L2 strength "
        "(scikit-learn's C); default chosen on validation.")
    min_label_count: int = Field(default=1, ge=1, description="Multilabel: drop labels with "
                                 "fewer training items (FMA runs: 20).")
    seed: int = Field(default=0, description="Seed of splits, initialisation and sampling.")
    ensemble: int = Field(default=1, ge=1, description="Kinds fit by AdamW: members trained from "
                          "seeds seed, seed+1, …; their logits are averaged in the artifact.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where to fit.")
    amp: bool = Field(default=True, description="Mixed precision on GPU (never for recurrent "
                      "layers).")
    decode_workers: int = Field(default=4, ge=1, description="Parallel decoders.")
    decoder: DecoderName = Field(
        default=DEFAULT_DECODER, description="Decoder of the training audio, recorded in the "
        "manifest; serve with the same (worker DECODER).")
    version: str = Field(default="", description="Model version; default <kind>-<timestamp>.")
    dataset: str = ""
    backbone: ExpandedPath | None = Field(
        default=None, description="Pretrained artifact (`genretag models pull musicnn-msd`) "
        "for the kinds that put a head on one (transfer, transfer-ft); their rate, clip and "
        "front end are the backbone's. Default none: no transfer kinds.")
    label_kinds: dict[str, TagKind] = Field(
        default_factory=dict, description="Tag kind of each label that is not a genre, "
        "recorded in the manifest.")

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        get_spec(name)  # ValueError naming the registered kinds
        return name

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if get_spec(self.model).needs_backbone:
            if self.backbone is None:
                raise ValueError(f"model {self.model} needs a backbone (a pretrained artifact)")
            return self  # its windows are checked once the backbone's clip is known
        self.check_windows()
        return self

    def check_windows(self) -> None:
        """ValueError unless training windows and crops fit the clip."""
        if self.train_window < self.clip_seconds:
            raise ValueError("train_seconds must not be shorter than clip_seconds")
        if not 0 < self.crop_window <= self.clip_seconds:
            raise ValueError("crop_seconds must be in (0, clip_seconds]")

    @property
    def train_window(self) -> float:
        """Seconds decoded per training clip."""
        return self.train_seconds or self.clip_seconds * self.eval_windows

    @property
    def train_hop(self) -> float:
        """Seconds between consecutive training windows."""
        return self.train_hop_seconds or self.clip_seconds / 2

    @property
    def crop_window(self) -> float:
        """Seconds of each random training crop (of a window's features)."""
        return self.crop_seconds or self.clip_seconds
