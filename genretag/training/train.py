"""Train a genre model on labelled items and export the serving artifact.

``train_and_export`` is the whole job: build the kind named by ``cfg.model`` (``registry``),
decode (worker's decoder) and run the model's frontend once per window (``features``, cached)
→ fit on the cached features by the kind's recipe (``linear``: LBFGS for the statistics
models; ``fit``: AdamW, one-cycle LR, feature-domain augmentation, early stopping on
track-level validation loss; a head on a backbone: ``transfer``) → evaluate tracks on test
(window probabilities averaged, as the worker does) → tune thresholds on validation → export
one TorchScript file with its manifest → write the run report (``RunReport``: JSON, per-class
table with bootstrap intervals, confusion, curves).
The pieces live beside it: ``config`` (TrainConfig), ``run_steps`` (what every trainer
shares), ``run_report`` (the typed report), ``targets`` (the one target encoder),
``splits``, ``augment``, ``fit`` (the loop), ``evaluate`` (metrics) and ``windowed`` (the test
items evaluated as the worker tags them: windows over each whole track).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genretag.core.device import pick_device
from genretag.core.logs import get_logger
from genretag.training.config import TrainConfig
from genretag.training.evaluate import evaluate
from genretag.training.export import export_artifact
from genretag.training.features import FeatureSet, WindowPlan, compute_features, frontend_key, plans
from genretag.training.fit import fit, predict_tracks
from genretag.training.items import Item
from genretag.training.linear import fit_stats
from genretag.training.metrics import tune_thresholds
from genretag.training.models import SeedEnsemble
from genretag.training.registry import get_spec
from genretag.training.report import write_run_report
from genretag.training.run_report import RunReport
from genretag.training.run_steps import decoded_splits, fit_targets, scores, seed_everything
from genretag.training.splits import by_split
from genretag.training.transfer import train_transfer
from genretag.training.windowed import windowed_probs

log = get_logger(__name__)


def build_model(cfg: TrainConfig, n_labels: int) -> nn.Module:
    """The model of kind ``cfg.model`` (its registered builder), with its frontend inside."""
    return get_spec(cfg.model).build(cfg, n_labels)


def window_plans(cfg: TrainConfig) -> tuple[WindowPlan, WindowPlan, str]:
    """(training plan, evaluation plan, cache key) of ``cfg``: every caller that caches this
    config's features uses the same key, so they share one cache."""
    training_plan, eval_plan = plans(cfg.clip_seconds, cfg.sample_rate, cfg.eval_windows,
                                     cfg.train_window, cfg.train_hop)
    return (training_plan, eval_plan,
            frontend_key(cfg.sample_rate, cfg.frontend.model_dump_json() + cfg.decoder))


def feature_splits(items: Sequence[Item], cfg: TrainConfig, frontend: nn.Module,
                   cache_dir: Path | None = None, progress: bool = False
                   ) -> dict[str, FeatureSet]:
    """Decode each split once and cache its window features (training: denser windows)."""
    training_plan, eval_plan, key = window_plans(cfg)
    return {
        split: compute_features(
            chosen, frontend, training_plan if split == "training" else eval_plan,
            cfg.sample_rate, cfg.min_seconds, cfg.decode_workers, cache_dir, key,
            desc=f"features {split}", progress=progress, decoder=cfg.decoder)
        for split, chosen in by_split(items).items()
    }


def fit_model(model: nn.Module, cfg: TrainConfig, train: FeatureSet, y_train: np.ndarray,
              val: FeatureSet, y_val: np.ndarray, device: torch.device, n_labels: int,
              progress: bool = False
              ) -> tuple[nn.Module, list[dict[str, float]], list[list[dict[str, float]]]]:
    """Fit ``model`` (a fresh ``build_model``) on cached features by its kind's recipe: LBFGS
    on the statistics, or the AdamW loop plus ``cfg.ensemble - 1`` more seeds averaged in a
    :class:`SeedEnsemble`. Returns (fitted model, its history, the other members' histories)."""
    recipe = get_spec(cfg.model).recipe
    if recipe == "lbfgs":
        return model, fit_stats(model, train, y_train, val, y_val, cfg.objective, cfg.c,
                                cfg.seed), []
    if recipe != "adamw":
        raise ValueError(f"{cfg.model}: recipe {recipe} is trained by train_transfer")
    offset = model.frontend.gain_offset()
    history = fit(model, train, y_train, val, y_val, cfg, device, n_labels, offset, progress)
    members, member_histories = [model], []
    for k in range(1, cfg.ensemble):  # more seeds, same features
        seed_everything(cfg.seed + k)
        members.append(build_model(cfg, n_labels))
        member_cfg = cfg.model_copy(update={"seed": cfg.seed + k})
        member_histories.append(fit(members[-1], train, y_train, val, y_val, member_cfg,
                                    device, n_labels, offset, progress))
    return (SeedEnsemble(members) if len(members) > 1 else model), history, member_histories


def train_and_export(items: Sequence[Item], cfg: TrainConfig, out_path: Path,
                     report_dir: Path | None = None, cache_dir: Path | None = None,
                     allow_empty_split: bool = False, progress: bool = False) -> RunReport:
    """The full job for any registered kind; returns the report (also written as JSON, table
    and PNGs next to OUT). A kind that needs a backbone is trained by ``train_transfer``.

    Raises ``run_steps.EmptySplitError`` when a split is empty (test: unless ``allow_empty_split``).
    """
    if get_spec(cfg.model).needs_backbone:
        return train_transfer(items, cfg, out_path, report_dir=report_dir, cache_dir=cache_dir,
                              allow_empty_split=allow_empty_split, progress=progress)
    seed_everything(cfg.seed)
    started = time.monotonic()
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    encoder = fit_targets(items, cfg, allow_empty_split)
    labels = encoder.labels
    model = build_model(cfg, len(labels))
    splits = feature_splits(items, cfg, model.frontend, cache_dir, progress)
    decoded_at = time.monotonic()
    train, val, test = splits["training"], splits["validation"], splits["test"]
    counts, skipped = decoded_splits(splits, allow_empty_split)
    y_train, y_val = encoder.encode(train.items), encoder.encode(val.items)
    model, history, member_histories = fit_model(model, cfg, train, y_train, val, y_val, device,
                                                 len(labels), progress)
    fitted_at = time.monotonic()
    model.to(device)
    val_probs = predict_tracks(model, val, cfg.objective, device)
    test_probs = predict_tracks(model, test, cfg.objective, device)
    thresholds = tune_thresholds(val_probs, encoder.multi_hot(val.items), labels,
                                 cfg.objective)
    test_report = evaluate(test_probs, test.items, encoder, thresholds, seed=cfg.seed)
    val_report = evaluate(val_probs, val.items, encoder, thresholds, seed=cfg.seed)
    # The worker's view of the same test items: windows over each whole track, averaged.
    win_probs, win_kept = windowed_probs(model, test.items, cfg.sample_rate, cfg.clip_seconds,
                                         cfg.objective, device, decoder=cfg.decoder)
    test_windows = evaluate(win_probs, [test.items[k] for k in win_kept], encoder, thresholds,
                            seed=cfg.seed)
    elapsed = time.monotonic() - started
    best = next((h for h in history if h.get("selected")), None) or min(
        history, key=lambda h: h["val_loss"] if h["val_loss"] == h["val_loss"] else 1e9)
    epoch_seconds = [h["seconds"] for h in history]
    fields = {
        "config": cfg, "labels": labels, "counts": counts,
        "windows": {k: v.n_windows for k, v in splits.items()},
        "skipped_count": len(skipped), "skipped": skipped,
        "history": history, "member_histories": member_histories, "best_epoch": best["epoch"],
        "test": test_report,
        "test_whole_track_windows": {k: v for k, v in test_windows.items()
                                     if k not in ("per_class", "confusion")},
        **scores(val_report, thresholds, test.items, test_probs, model, test_report),
        "train_seconds": elapsed, "decode_seconds": decoded_at - started,
        "fit_seconds": fitted_at - decoded_at,
        "epoch_seconds_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "device": str(device),
    }
    version = cfg.version or f"{cfg.model}-{time.strftime('%Y%m%d%H%M%S')}"
    manifest_metrics = {
        "test_accuracy": test_report.get("accuracy"),
        "test_macro_f1": test_report.get("macro_f1"),
        "test_roc_auc_macro": test_report.get("roc_auc_macro"),
        "test_pr_auc_macro": test_report.get("pr_auc_macro"),
        "test_accuracy_whole_track": test_windows.get("accuracy", test_windows.get("top1_hit")),
        "validation_accuracy": fields["validation_accuracy"],
        "train_seconds": round(elapsed, 1),
        "best_epoch": best["epoch"],
        "counts": counts,
        "skipped": len(skipped),
    }
    manifest = export_artifact(
        model.cpu(), labels=labels, cfg=cfg, thresholds=thresholds, metrics=manifest_metrics,
        version=version, path=out_path,
    )
    report = RunReport(**fields, manifest=manifest, artifact=str(out_path))
    report = write_run_report(report, Path(report_dir or Path(out_path).parent),
                              Path(out_path).stem)
    log.info("train.done", extra={"model": cfg.model, "artifact": str(out_path),
                                  "test_accuracy": test_report.get("accuracy"),
                                  "seconds": round(elapsed, 1)})
    return report
