"""The steps every trainer takes the same way: seeding, the label encoder and the split checks
before decoding, the split checks after it, and the score fields of the report."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from genretag.core.errors import FatalError
from genretag.core.fma.layout import SPLITS
from genretag.core.logs import get_logger
from genretag.training.config import TrainConfig
from genretag.training.features import FeatureSet
from genretag.training.items import Item
from genretag.training.splits import by_split
from genretag.training.targets import TargetEncoder

log = get_logger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EmptySplitError(FatalError):
    """A split has no usable items, so the run could not be scored or validated."""


class LabelKindError(FatalError):
    """``--kind`` names a label the run does not train."""


def check_splits(counts: dict[str, int], allow_empty: bool, when: str) -> None:
    """Refuse an empty split (training and validation always; test unless ``allow_empty``)."""
    empty = [name for name in SPLITS if counts.get(name, 0) == 0]
    if not empty:
        return
    shown = ", ".join(f"{counts.get(n, 0)} {n}" for n in SPLITS)
    if any(name != "test" for name in empty) or not allow_empty:
        raise EmptySplitError(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
            f"{when} ({shown}); add files per label"
            + ("" if any(n != "test" for n in empty) else
               ", or pass --allow-empty-split to train without a test score"))
    log.warning("train.empty_test_split", extra={"counts": counts, "when": when})


def fit_targets(items: Sequence[Item], cfg: TrainConfig, allow_empty_split: bool
                ) -> TargetEncoder:
    """The run's label encoder, after the checks every trainer makes before decoding: at least
    two labels, a tag kind only for a label it trains, and no split left empty (the test
    split only with ``allow_empty_split``)."""
    encoder = TargetEncoder.fit(items, cfg.objective, cfg.min_label_count)
    if len(encoder.labels) < 2:
        raise ValueError(f"need at least 2 labels to train, found {encoder.labels}")
    unknown = sorted(set(cfg.label_kinds) - set(encoder.labels))
    if unknown:
        raise LabelKindError(f"--kind names label(s) {', '.join(unknown)} that the run does not "
                             f"train; its labels are {', '.join(encoder.labels)}")
    check_splits({k: len(v) for k, v in by_split(items).items()}, allow_empty_split,
                 "before decoding")
    return encoder


def decoded_splits(splits: dict[str, FeatureSet], allow_empty_split: bool
                   ) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Items kept per split and the skipped clips (with their split), after refusing a split
    that skipping emptied."""
    counts = {k: len(v.items) for k, v in splits.items()}
    skipped = [{**s, "split": name} for name, v in splits.items() for s in v.skipped]
    if skipped:
        log.warning("train.skipped_clips", extra={"count": len(skipped)})
    check_splits(counts, allow_empty_split, "after skipping broken clips")
    return counts, skipped


def scores(val_report: dict, thresholds: dict[str, float], test_items: Sequence[Item],
           test_probs: np.ndarray, model: nn.Module, test_report: dict) -> dict[str, Any]:
    """The report fields every trainer writes the same way: validation scores, the tuned
    thresholds, the test predictions (for cross-validation and plots), the model's size, and
    the classes no test item has (warned about: their test scores say nothing)."""
    untested = list(test_report.get("untested_labels", []))
    if untested and test_items:
        log.warning("train.untested_classes", extra={
            "classes": untested, "why": "no test item: their scores are left out of macro "
            "averages; add items or merge the class"})
    return {
        "untested_classes": untested,
        "validation_accuracy": val_report.get("accuracy", val_report.get("top1_hit")),
        "validation": {k: v for k, v in val_report.items() if k not in ("per_class", "confusion")},
        "thresholds": thresholds,
        "test_predictions": {"item_ids": [i.item_id for i in test_items],
                             "probs": np.round(test_probs, 6).tolist()},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
