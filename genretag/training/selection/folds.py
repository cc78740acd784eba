"""Cross-validation folds by group and the paired comparison of two models on the same tracks.

With ~200 tracks one split's validation or test set (20-40 tracks) cannot rank models: their
95 % intervals are ±10-15 points wide. Folds score every track once, out of fold, and two
models scored on the same tracks are compared *paired*, so the interval of their difference is
the pair's, much narrower than two independent intervals.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class _Grouped(Protocol):
    item_id: str
    labels: list[str]
    group: str | None


def group_folds(items: Sequence[_Grouped], folds: int, seed: int) -> np.ndarray:
    """Fold of every item: groups (source pieces, albums) dealt round-robin per label in a
    seeded hash order, so each fold holds about 1/folds of every label and no group is split.
    An item without a group is its own group."""
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    groups_of: dict[str, dict[str, None]] = defaultdict(dict)
    for item in items:
        groups_of[item.labels[0]][item.group or item.item_id] = None
    fold_of_group: dict[str, int] = {}
    start = 0
    for label in sorted(groups_of):
        ordered = sorted(groups_of[label], key=lambda g: hashlib.sha1(
            f"{seed}:{g}".encode()).hexdigest())
        for k, group in enumerate(ordered):
            fold_of_group.setdefault(group, (start + k) % folds)
        start += len(ordered)  # the next label starts where this one stopped: folds even out
    return np.array([fold_of_group[item.group or item.item_id] for item in items], np.int64)


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0,
                      samples: int = 2000) -> dict[str, float | list[float]]:
    """Accuracy of b minus a over the same tracks, with a 95 % bootstrap interval (tracks
    resampled together, so the interval is the pair's, not two independent ones)."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if len(correct_a) == 0:
        return {"difference": 0.0, "ci": [0.0, 0.0]}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct_a), (samples, len(correct_a)))
    diffs = correct_b[idx].mean(1) - correct_a[idx].mean(1)
    return {"difference": float(correct_b.mean() - correct_a.mean()),
            "ci": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]}


def accuracy_interval(correct: np.ndarray, seed: int = 0, samples: int = 2000
                      ) -> list[float]:
    """95 % bootstrap interval of the accuracy of ``correct`` (one bool per track)."""
    correct = np.asarray(correct, bool)
    if len(correct) == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (samples, len(correct)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def fold_roles(fold: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks (training, validation, test) of round ``k``: fold k is test, fold k+1 validation
    (early stopping, ``C``), the others training."""
    n_folds = int(fold.max()) + 1
    val_fold = (k + 1) % n_folds
    test, val = fold == k, fold == val_fold
    return ~(test | val), val, test


__all__: Sequence[str] = ("accuracy_interval", "fold_roles", "group_folds", "paired_difference")
