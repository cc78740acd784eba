"""Test and validation metrics of a trained model's probabilities, per objective."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genretag.training.metrics import (
    average_precision,
    confusion_matrix,
    multilabel_report,
    per_class_report,
    roc_auc,
)
from genretag.training.targets import Labelled, TargetEncoder


#: Bootstrap resamples of the test tracks for the confidence intervals.
BOOTSTRAP_SAMPLES = 1000


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, seed: int = 0,
                 samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals of accuracy and macro F1 over tracks resampled with replacement."""
    n = len(y_true)
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (samples, n))
    t, p = y_true[idx], y_pred[idx]
    acc = (t == p).mean(axis=1)
    f1s = []
    for k in range(n_labels):
        tp = ((p == k) & (t == k)).sum(axis=1)
        denom = (p == k).sum(axis=1) + (t == k).sum(axis=1)
        present = (t == k).any(axis=1) | (p == k).any(axis=1)
        f1s.append(np.where(present, 2 * tp / np.maximum(denom, 1), np.nan))
    # macro over the classes present in the resample (as sklearn with its labels)
    macro = np.nanmean(np.stack(f1s), axis=0)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {"accuracy_ci": [float(np.percentile(acc, lo)), float(np.percentile(acc, hi))],
            "macro_f1_ci": [float(np.percentile(macro, lo)), float(np.percentile(macro, hi))],
            "ci_level": level, "bootstrap_samples": samples}


def evaluate(probs: np.ndarray, items: Sequence[Labelled], encoder: TargetEncoder,
             thresholds: dict[str, float] | None = None, seed: int = 0) -> dict:
    """Test metrics. Single: accuracy, per-class table, confusion matrix, one-vs-rest AUCs and
    95 % bootstrap intervals (over tracks) of accuracy and macro F1. Multi: per-label table at
    ``thresholds``, ROC-AUC / PR-AUC per label, macro and micro."""
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
    report.update(bootstrap_ci(first, predicted, len(labels), seed))
    report["n"] = len(items)
    return report


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
