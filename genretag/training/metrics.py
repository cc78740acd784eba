"""Evaluation metrics in numpy: accuracy, per-class P/R/F1, confusion, AUCs, thresholds."""

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
    seen = [n for k, n in enumerate(labels) if rows[n]["support"] or np.any(y_pred == k)]
    accuracy = float(np.mean(y_true == y_pred)) if len(y_true) else 0.0
    return {"accuracy": accuracy, "per_class": rows, **_averages(rows, labels, seen),
            "untested_labels": untested(rows)}


def untested(rows: dict[str, dict]) -> list[str]:
    """Labels without a single item in the evaluated split (their scores say nothing)."""
    return [name for name, row in rows.items() if row["support"] == 0]


def _averages(rows: dict[str, dict], labels: list[str], seen: list[str]) -> dict[str, float]:
    """Macro averages over the ``seen`` labels (in the truth or the predictions, as sklearn's
    default labels: a label with no items and no predictions has no F1 to average), weighted
    averages by support."""
    support = np.array([rows[n]["support"] for n in labels], dtype=float)
    avg = {}
    for key in ("precision", "recall", "f1"):
        values = np.array([rows[n][key] for n in labels])
        macro = [rows[n][key] for n in seen]
        avg[f"macro_{key}"] = float(np.mean(macro)) if macro else 0.0
        avg[f"weighted_{key}"] = float((values * support).sum() / max(support.sum(), 1))
    return avg


#: Validation positives a label needs for a threshold of its own (multi-label); a label with
#: fewer gets the shared threshold: an F1 optimum over a handful of tracks is noise.
MIN_THRESHOLD_SUPPORT = 10
#: Thresholds tried (the middle of the best plateau is kept).
THRESHOLD_GRID = np.linspace(0.05, 0.95, 19)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, labels: list[str],
                    objective: str = "multi", default: float = 0.5,
                    min_support: int = MIN_THRESHOLD_SUPPORT) -> dict[str, float]:
    """Each label's threshold, chosen on validation.

    ``single``: one shared threshold for every label (the one maximising F1 over all labels
    pooled), so a label shown is never less probable than one not shown. ``multi``: a label
    with at least ``min_support`` validation positives gets the threshold maximising its own
    F1; the others get the shared one. ``default`` where validation has no positive at all.
    """
    truth = targets > 0.5
    if not truth.any():
        return {name: default for name in labels}
    shared = _best_threshold(probs.ravel(), truth.ravel())
    out: dict[str, float] = {}
    for k, name in enumerate(labels):
        own = objective == "multi" and int(truth[:, k].sum()) >= min_support
        out[name] = _best_threshold(probs[:, k], truth[:, k]) if own else shared
    return out


def _best_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The grid threshold maximising F1 of ``scores >= t`` against ``truth``: the middle of
    the best plateau, the most margin on both sides of the decision."""
    f1s = np.array([2 * np.sum((scores >= t) & truth) / max((scores >= t).sum() + truth.sum(), 1)
                    for t in THRESHOLD_GRID])
    best = THRESHOLD_GRID[f1s >= f1s.max() - 1e-9]
    return round(float(np.median(best)), 2)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """ROC area by the rank statistic (ties averaged); None when a class is absent."""
    truth = truth.astype(bool)
    pos, neg = truth.sum(), (~truth).sum()
    if pos == 0 or neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group (1-based)
    ranks = (upper - (counts - 1) / 2.0)[inverse]
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


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """``(n_labels, n_labels)`` counts: row = true class, column = predicted class."""
    cm = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def multilabel_report(probs: np.ndarray, targets: np.ndarray, labels: list[str],
                      thresholds: dict[str, float]) -> dict:
    """Per-label precision/recall/F1/support at ``thresholds``, ROC-AUC and PR-AUC per label,
    and micro / macro / weighted / samples averages (like sklearn's multilabel report)."""
    truth = targets > 0.5
    cut = np.array([thresholds[name] for name in labels], dtype=np.float64)
    pred = probs >= cut[None, :]
    rows: dict[str, dict] = {}
    for k, name in enumerate(labels):
        tp = int(np.sum(pred[:, k] & truth[:, k]))
        p, r, f1 = _prf(tp, int(pred[:, k].sum()), int(truth[:, k].sum()))
        rows[name] = {"precision": p, "recall": r, "f1": f1, "support": int(truth[:, k].sum()),
                      "roc_auc": roc_auc(probs[:, k], truth[:, k]),
                      "pr_auc": average_precision(probs[:, k], truth[:, k])}
    seen = [n for k, n in enumerate(labels) if truth[:, k].any() or pred[:, k].any()]
    out: dict = {"per_class": rows, **_averages(rows, labels, seen),
                 "untested_labels": untested(rows)}
    micro = _prf(int(np.sum(pred & truth)), int(pred.sum()), int(truth.sum()))
    out.update(micro_precision=micro[0], micro_recall=micro[1], micro_f1=micro[2])
    per_sample = [_prf(int(np.sum(pred[i] & truth[i])), int(pred[i].sum()), int(truth[i].sum()))
                  for i in range(len(truth))]
    for j, key in enumerate(("precision", "recall", "f1")):
        out[f"samples_{key}"] = float(np.mean([s[j] for s in per_sample])) if per_sample else 0.0
    aucs = [rows[n]["roc_auc"] for n in labels if rows[n]["roc_auc"] is not None]
    aps = [rows[n]["pr_auc"] for n in labels if rows[n]["pr_auc"] is not None]
    out["roc_auc_macro"] = float(np.mean(aucs)) if aucs else None
    out["pr_auc_macro"] = float(np.mean(aps)) if aps else None
    out["roc_auc_micro"] = roc_auc(probs.ravel(), truth.ravel())
    out["pr_auc_micro"] = average_precision(probs.ravel(), truth.ravel())
    out["subset_accuracy"] = float(np.mean((pred == truth).all(axis=1))) if len(truth) else 0.0
    return out


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (0 where undefined, like sklearn's zero_division=0)."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)
