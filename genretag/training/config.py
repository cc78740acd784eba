"""``TrainConfig``: everything that decides a training run, and the names of models and objectives.

Kept free of torch so the CLI can validate ``--model`` without loading it.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genretag.core.audio.decoders import DEFAULT_DECODER, DecoderName
from genretag.core.settings import WindowSection
from genretag.schemas import FrontendParams

ModelKind = Literal["tdcnn", "logreg", "dense", "cnn", "lstm"]
#: Model names ``build_model`` knows, the default first.
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
#: Windows the worker averages per track by default (the ``windows`` section's ``max_windows``):
#: evaluation averages the same windows.
SERVING_MAX_WINDOWS = WindowSection().max_windows
#: ``single``: one label per item, softmax; ``multi``: multi-hot targets, sigmoid.
Objective = Literal["single", "multi"]


class TrainConfig(BaseModel):
    """Everything that decides a training run (saved in the report and the manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelKind = "tdcnn"
    objective: Objective = "single"
    sample_rate: int = 22050
    clip_seconds: float = 30.0
    min_seconds: float = 1.0
    frontend: FrontendParams = Field(default_factory=FrontendParams)
    channels: tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.3
    hidden: int = Field(default=256, ge=2, description="dense: first layer; lstm: 2× hidden size.")
    temporal: Literal["attention", "gru"] = "attention"
    stats_branch: bool = Field(
        default=False, description="tdcnn: the head also sees each window's per-row mean and "
        "std (the logreg baseline's statistics).")
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = 3e-3
    weight_decay: float = 1e-2
    patience: int = 6
    mixup: float = Field(default=0.0, ge=0, description="Beta(α, α) mixup of features; 0: off.")
    gain_db: float = 6.0
    spec_mask: bool = True
    eval_windows: int = Field(
        default=SERVING_MAX_WINDOWS, ge=1,
        description="Windows averaged per track in evaluation: the worker's max_windows.")
    train_seconds: float | None = Field(
        default=None, description="Audio decoded per training clip (≥ clip); default "
        "clip × eval_windows, what the worker decodes.")
    epoch_windows: int = Field(
        default=0, ge=0, description="Training windows drawn per track each epoch (a fresh "
        "random draw); 0: every window.")
    train_hop_seconds: float | None = Field(
        default=None, gt=0, description="Spacing of training windows; default half a clip.")
    crop_seconds: float | None = Field(
        default=None, description="Random crop of a training window's features (≤ clip); "
        "default the whole window.")
    c: float | None = Field(
        default=None, gt=0, description="logreg/dense: inverse L2 strength (scikit-learn's C); "
        "default chosen on validation.")
    min_label_count: int = Field(default=1, ge=1, description="multi: drop rarer labels.")
    seed: int = 0
    ensemble: int = Field(default=1, ge=1, description="cnn/lstm/tdcnn: members trained from "
                          "seeds seed, seed+1, …; their logits are averaged in the artifact.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    decode_workers: int = 4
    decoder: DecoderName = DEFAULT_DECODER  # recorded in the manifest; the worker's too
    version: str = ""
    dataset: str = ""

    @model_validator(mode="after")
    def _windows(self) -> TrainConfig:
        if self.train_window < self.clip_seconds:
            raise ValueError("train_seconds must not be shorter than clip_seconds")
        if not 0 < self.crop_window <= self.clip_seconds:
            raise ValueError("crop_seconds must be in (0, clip_seconds]")
        return self

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
