"""The run report: what one training run did and scored, one typed model for every trainer.

``report.write_run_report`` writes it as ``<stem>.report.json`` next to the artifact (with the
tables and plots); ``train compare`` reads those files back as plain JSON, so reports of older
versions stay readable. The score dictionaries are ``evaluate``'s (their keys depend on the
objective); history rows are one epoch (AdamW) or one ``C`` (LBFGS) each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from genretag.schemas import LogMelParams, ModelManifest
from genretag.training.config import TrainConfig

#: ``evaluate``'s scores: ``n``, ``accuracy`` (single) or ``top1_hit`` (multi), ``macro_f1``,
#: ``per_class``, bootstrap intervals, AUCs, ``confusion`` (single).
Scores = dict[str, Any]
#: One row of a learning history: epoch, losses, accuracies, seconds (and ``C``, ``selected``).
HistoryRow = dict[str, Any]


def plain(value: Any) -> Any:
    """numpy scalars and arrays inside dicts and lists → Python numbers and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


#: Optional sections of a report: absent from the file when None.
_SECTIONS = ("head_history", "trained_parameters", "test_whole_track_windows",
             "epoch_seconds_median", "backbone", "from_store", "auto")


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SkippedClip(_Part):
    """A clip left out because it could not be decoded (or was too short), with the reason."""

    item_id: str
    path: str
    reason: str
    split: str


class FromStoreInfo(_Part):
    """``--from-store``: the embeddings read instead of decoding, and how many were missing."""

    space: str
    found: int
    missing: int
    redis_key_prefix: str


class TestPredictions(_Part):
    """Test probabilities per track, for cross-validation and plots."""

    item_ids: list[str]
    probs: list[list[float]]


class BackboneInfo(_Part):
    """The pretrained artifact a head was trained on (its rate and clip are in ``config``)."""

    path: str
    name: str
    version: str
    sha256: str
    frontend: LogMelParams


class Candidate(_Part):
    """One model ``--arch auto`` trained: its validation and test scores."""

    model: str
    selected: bool
    validation_accuracy: float | None
    validation_macro_f1: float | None
    test_accuracy: float | None
    test_accuracy_ci: list[float] | None
    test_macro_f1: float | None
    test_macro_f1_ci: list[float] | None
    train_seconds: float
    artifact: str


class AutoSelection(_Part):
    """What ``--arch auto`` chose on validation, among which candidates."""

    selected: str
    candidates: list[Candidate]
    warning: str | None = None


class RunReport(_Part):
    """Everything one run reports (``<stem>.report.json``)."""

    config: TrainConfig
    labels: list[str]
    counts: dict[str, int]
    windows: dict[str, int]
    skipped_count: int
    skipped: list[SkippedClip]
    history: list[HistoryRow]
    member_histories: list[list[HistoryRow]] = []
    head_history: list[HistoryRow] | None = None
    best_epoch: int
    test: Scores
    test_whole_track_windows: Scores | None = None
    validation_accuracy: float | None
    validation: Scores
    thresholds: dict[str, float]
    untested_classes: list[str] = []  # labels no test item has (warned about at training)
    test_predictions: TestPredictions
    parameters: int
    trained_parameters: int | None = None
    train_seconds: float
    decode_seconds: float
    fit_seconds: float
    epoch_seconds_median: float | None = None
    device: str
    backbone: BackboneInfo | None = None
    from_store: FromStoreInfo | None = None
    manifest: ModelManifest
    artifact: str
    files: dict[str, str] = {}
    auto: AutoSelection | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data: Any) -> Any:
        return plain(data) if isinstance(data, dict) else data

    def to_json(self) -> str:
        """The report file's text; the sections a trainer does not write (``auto``, the
        backbone's, the whole-track test) are left out rather than written as null."""
        absent = {name for name in _SECTIONS if getattr(self, name) is None}
        return self.model_dump_json(indent=2, exclude=absent)

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy (single) or top-1 hit rate (multi); None without a test split."""
        return self.test.get("accuracy", self.test.get("top1_hit"))
