"""One candidate under cross-validation: its features over the whole set once, then one fit per
fold on slices of them, each fold's tracks predicted by a model that never saw their group.

The fits are the trainers' own (``train.fit_model``: LBFGS or the AdamW loop; ``transfer.
fit_transfer``: the head on cached embeddings), scored as served (window probabilities averaged
per track). Features: the training plan over the cross-validation pool (training + validation
items) and the evaluation plan over every item (the test split too, for the winner's refit),
computed together by ``feature_pool`` and cached like the trainers cache them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genretag.core.device import pick_device
from genretag.training.feature_pool import PlanRequest, compute_feature_pool
from genretag.training.features import FeatureSet, cache_paths
from genretag.training.fit import predict_tracks
from genretag.training.items import Item
from genretag.training.run_steps import seed_everything
from genretag.training.selection.candidates import Candidate
from genretag.training.selection.folds import fold_roles
from genretag.training.splits import by_split
from genretag.training.targets import TargetEncoder
from genretag.training.train import fit_model
from genretag.training.transfer import TransferModel, fit_transfer


@dataclass
class Trial:
    """A candidate's cross-validation so far: out-of-fold probabilities (NaN rows for tracks
    not yet scored or skipped), per-fold fit times, and its status in the search."""

    candidate: Candidate
    n_pool: int
    n_labels: int
    probs: np.ndarray = field(init=False)
    pool_feats: FeatureSet | None = None  # training plan over the pool
    eval_feats: FeatureSet | None = None  # evaluation plan over every item
    feature_seconds: float = 0.0
    fold_seconds: list[float] = field(default_factory=list)
    status: str = "running"  # running, done, eliminated, stopped, skipped
    reason: str = ""

    def __post_init__(self) -> None:
        self.probs = np.full((self.n_pool, self.n_labels), np.nan)

    @property
    def name(self) -> str:
        """The candidate's name in tables."""
        return self.candidate.name

    @property
    def folds_done(self) -> int:
        """Folds fitted so far."""
        return len(self.fold_seconds)

    @property
    def mean_fold_seconds(self) -> float:
        """Mean fit time of one fold (0 before the first)."""
        return float(np.mean(self.fold_seconds)) if self.fold_seconds else 0.0


def features_cached(candidate: Candidate, items: Sequence[Item], pool: Sequence[Item],
                    cache_dir: Path | None) -> bool:
    """Whether both of the candidate's feature sets are already in the cache."""
    train_plan, eval_plan, key = candidate.plans()
    cfg = candidate.cfg
    for chosen, plan in ((pool, train_plan), (items, eval_plan)):
        paths = cache_paths(cache_dir, chosen, plan, cfg.sample_rate, cfg.min_seconds, key)
        if not paths or not (paths[0].exists() and paths[1].exists()):
            return False
    return True


def compute_trial_features(trial: Trial, items: Sequence[Item], pool: Sequence[Item],
                           cache_dir: Path | None, progress: bool) -> None:
    """Decode once and cache the candidate's two feature sets (timed)."""
    candidate, cfg = trial.candidate, trial.candidate.cfg
    train_plan, eval_plan, key = candidate.plans()
    started = time.monotonic()
    feats = compute_feature_pool(
        {"pool": PlanRequest(pool, train_plan), "all": PlanRequest(items, eval_plan)},
        candidate.frontend(trial.n_labels), cfg.sample_rate, cfg.min_seconds,
        cfg.decode_workers, cache_dir, key, desc=f"features {candidate.name}",
        progress=progress, decoder=cfg.decoder)
    trial.pool_feats, trial.eval_feats = feats["pool"], feats["all"]
    trial.feature_seconds = time.monotonic() - started


def _subset(fs: FeatureSet, wanted: set[str]) -> FeatureSet:
    return fs.select([j for j, item in enumerate(fs.items) if item.item_id in wanted])


def fit_fold(trial: Trial, pool: Sequence[Item], fold: np.ndarray, k: int,
             encoder: TargetEncoder) -> dict[str, Any]:
    """Fit fold ``k`` (fold k test, k+1 validation, the rest training), store the test
    fold's out-of-fold probabilities; returns the fold's row (sizes, accuracy, epochs, time)."""
    assert trial.pool_feats is not None and trial.eval_feats is not None
    train_mask, val_mask, test_mask = fold_roles(fold, k)
    ids = np.array([item.item_id for item in pool])
    train = _subset(trial.pool_feats, set(ids[train_mask]))
    val = _subset(trial.eval_feats, set(ids[val_mask]))
    test = _subset(trial.eval_feats, set(ids[test_mask]))
    cfg = trial.candidate.cfg
    seed_everything(cfg.seed)
    model = trial.candidate.build(trial.n_labels)
    started = time.monotonic()
    y_train, y_val = encoder.encode(train.items), encoder.encode(val.items)
    others: list = []
    if isinstance(model, TransferModel):
        head, tuned = fit_transfer(model, cfg, train, y_train, val, y_val)
        history, device = tuned or head, torch.device("cpu")
    else:
        device = pick_device(cfg.device)
        model, history, others = fit_model(model, cfg, train, y_train, val, y_val, device,
                                           trial.n_labels)
        model.to(device)
    probs = predict_tracks(model, test, cfg.objective, device)
    position = {item_id: j for j, item_id in enumerate(ids)}
    for item, row in zip(test.items, probs, strict=True):
        trial.probs[position[item.item_id]] = row
    seconds = time.monotonic() - started
    trial.fold_seconds.append(seconds)
    y_test = encoder.encode(test.items)
    hits = (probs.argmax(1) == y_test) if cfg.objective == "single" else (
        y_test[np.arange(len(probs)), probs.argmax(1)] > 0.5)
    return {"fold": k, "train": len(train.items), "validation": len(val.items),
            "test": len(test.items), "test_accuracy": float(hits.mean()) if len(hits) else None,
            "epochs": len(history), "members": 1 + len(others), "fit_seconds": round(seconds, 1)}


def pool_items(items: Sequence[Item]) -> list[Item]:
    """The cross-validation pool: the training and validation items (test stays held out)."""
    splits = by_split(items)
    return [*splits["training"], *splits["validation"]]


def refit_features(trial: Trial, items: Sequence[Item]) -> dict[str, FeatureSet]:
    """The winner's features per split, sliced from what the cross-validation computed (the
    trainers' plans: training windows for training, the worker's for validation and test)."""
    assert trial.pool_feats is not None and trial.eval_feats is not None
    out = {}
    for split, chosen in by_split(items).items():
        source = trial.pool_feats if split == "training" else trial.eval_feats
        wanted = {item.item_id for item in chosen}
        part = _subset(source, wanted)
        part.skipped = [s for s in source.skipped if s["item_id"] in wanted]
        out[split] = part
    return out
