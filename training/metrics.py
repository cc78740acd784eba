"""Evaluation metrics in numpy: accuracy, per-class precision/recall/F1, thresholds per label."""

from __future__ import annotations

import numpy as np


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Precision/recall/F1/support per class plus macro and weighted averages (single-label)."""
    rows = {}
    for k, name in enumerate(labels):
        tp = int(np.sum((y_pred == k) & (y_true == k)))
        fp = int(np.sum((y_pred == k) & (y_true != k)))
        fn = int(np.sum((y_pred != k) & (y_true == k)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        rows[name] = {"precision": p, "recall": r, "f1": f1, "support": int(np.sum(y_true == k))}
    support = np.array([rows[n]["support"] for n in labels], dtype=float)
    avg = {}
    for key in ("precision", "recall", "f1"):
        values = np.array([rows[n][key] for n in labels])
        avg[f"macro_{key}"] = float(values.mean()) if len(values) else 0.0
        avg[f"weighted_{key}"] = float((values * support).sum() / max(support.sum(), 1))
    accuracy = float(np.mean(y_true == y_pred)) if len(y_true) else 0.0
    return {"accuracy": accuracy, "per_class": rows, **avg}


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, labels: list[str],
                    default: float = 0.5) -> dict[str, float]:
    """Per-label threshold maximising F1 on validation; ``default`` where a label has no positive."""
    grid = np.linspace(0.05, 0.95, 19)
    out: dict[str, float] = {}
    for k, name in enumerate(labels):
        truth = targets[:, k] > 0.5
        if not truth.any():
            out[name] = default
            continue
        f1s = []
        for t in grid:
            pred = probs[:, k] >= t
            tp = np.sum(pred & truth)
            f1s.append(2 * tp / max(pred.sum() + truth.sum(), 1))
        f1s_arr = np.array(f1s)
        # Middle of the best plateau: the most margin on both sides of the decision.
        best = grid[f1s_arr >= f1s_arr.max() - 1e-9]
        out[name] = round(float(np.median(best)), 2)
    return out


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank statistic; None when one class is absent."""
    truth = truth.astype(bool)
    pos, neg = truth.sum(), (~truth).sum()
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks of ties
    for value in np.unique(scores):
        mask = scores == value
        if mask.sum() > 1:
            ranks[mask] = ranks[mask].mean()
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the precision-recall curve (average precision); None without positives."""
    truth = truth.astype(bool)
    if truth.sum() == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    hits = truth[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())
