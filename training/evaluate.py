"""Test and validation metrics of a trained model's probabilities, per objective."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.metrics import (
    average_precision,
    confusion_matrix,
    multilabel_report,
    per_class_report,
    roc_auc,
)
from training.targets import Labelled, TargetEncoder


def evaluate(probs: np.ndarray, items: Sequence[Labelled], encoder: TargetEncoder,
             thresholds: dict[str, float] | None = None) -> dict:
    """Test metrics. Single: accuracy, per-class table, confusion matrix, one-vs-rest AUCs.
    Multi: per-label table at ``thresholds``, ROC-AUC / PR-AUC per label, macro and micro."""
    if len(items) == 0:
        return {"n": 0}
    labels = encoder.labels
    if encoder.objective == "multi":
        hot = encoder.multi_hot(items)
        report = multilabel_report(probs, hot, labels, thresholds or {n: 0.5 for n in labels})
        report["top1_hit"] = float(np.mean(hot[np.arange(len(hot)), probs.argmax(1)] > 0.5))
        report["n"] = len(items)
        return report
    first = encoder.indices(items)
    predicted = probs.argmax(1)
    report = per_class_report(first, predicted, labels)
    report["confusion"] = confusion_matrix(first, predicted, len(labels)).tolist()
    hot = encoder.multi_hot(items)
    aucs = [roc_auc(probs[:, k], hot[:, k]) for k in range(len(labels))]
    aps = [average_precision(probs[:, k], hot[:, k]) for k in range(len(labels))]
    report["roc_auc_macro"] = _mean([a for a in aucs if a is not None])
    report["pr_auc_macro"] = _mean([a for a in aps if a is not None])
    report["n"] = len(items)
    return report


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
