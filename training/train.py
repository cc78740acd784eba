"""Train a genre model on labelled items and export the serving artifact.

``train_and_export`` is the whole job: decode (worker's decoder) → fit (AdamW, one-cycle LR,
random crop, gain, mixup, SpecAugment masking, early stopping on validation, mixed precision on
GPU) → evaluate on test → tune thresholds on validation → export one TorchScript file with its
manifest → write the run report (JSON, per-class table, confusion matrix, learning curves).
The pieces live beside it: ``config`` (TrainConfig), ``targets`` (the one target encoder),
``splits``, ``augment``, ``fit`` (the loop), ``evaluate`` (metrics) and ``windowed`` (the test
items evaluated as the worker tags them: windows over each whole track).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.device import pick_device
from core.logs import get_logger
from training.config import TrainConfig
from training.dataset import DecodedSet, Item, decode_items
from training.evaluate import evaluate
from training.export import export_artifact
from training.fit import fit, predict_probs
from training.metrics import tune_thresholds
from training.models import TimeDistributedCNN
from training.report import write_run_report
from training.splits import by_split
from training.targets import TargetEncoder
from training.windowed import windowed_probs

log = get_logger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, n_labels: int) -> nn.Module:
    """The model named by ``cfg.model``, with its frontend inside."""
    if cfg.model == "tdcnn":
        return TimeDistributedCNN(n_labels, cfg.sample_rate, cfg.frontend, cfg.channels,
                                  cfg.dropout, cfg.temporal)
    from training.baselines import build_baseline  # the reference study's other models

    return build_baseline(cfg.model, n_labels, cfg)


def decode_splits(items: Sequence[Item], cfg: TrainConfig,
                  cache_dir: Path | None = None) -> dict[str, DecodedSet]:
    """Decode the three splits; training clips get the longer training window."""
    splits: dict[str, DecodedSet] = {}
    for split, chosen in by_split(items).items():
        seconds = cfg.train_window if split == "training" else cfg.clip_seconds
        splits[split] = decode_items(chosen, cfg.sample_rate, seconds, cfg.min_seconds,
                                     cfg.decode_workers, desc=f"decode {split}",
                                     cache_dir=cache_dir, decoder=cfg.decoder)
    return splits


def train_and_export(items: Sequence[Item], cfg: TrainConfig, out_path: Path,
                     report_dir: Path | None = None, cache_dir: Path | None = None) -> dict:
    """The full job; returns the report (also written as JSON, table and PNGs next to OUT)."""
    seed_everything(cfg.seed)
    started = time.monotonic()
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    encoder = TargetEncoder.fit(items, cfg.objective, cfg.min_label_count)
    labels = encoder.labels
    if len(labels) < 2:
        raise ValueError(f"need at least 2 labels to train, found {labels}")
    splits = decode_splits(items, cfg, cache_dir)
    decoded_at = time.monotonic()
    train, val, test = splits["training"], splits["validation"], splits["test"]
    if len(train.items) == 0 or len(val.items) == 0:
        raise ValueError("training and validation splits must not be empty")
    skipped = [{**s, "split": name} for name, v in splits.items() for s in v.skipped]
    if skipped:
        log.warning("train.skipped_clips", extra={"count": len(skipped)})
    model = build_model(cfg, len(labels))
    history = fit(
        model,
        (train.waves, encoder.encode(train.items)),
        (val.waves, encoder.encode(val.items)),
        cfg, device, train.lengths, len(labels),
    )
    fitted_at = time.monotonic()
    val_probs = predict_probs(model, val.waves, cfg.objective, device)
    test_probs = predict_probs(model, test.waves, cfg.objective, device)
    thresholds = tune_thresholds(val_probs, encoder.multi_hot(val.items), labels)
    test_report = evaluate(test_probs, test.items, encoder, thresholds)
    val_report = evaluate(val_probs, val.items, encoder, thresholds)
    # The worker's view of the same test items: windows over each whole track, averaged.
    win_probs, win_kept = windowed_probs(model, test.items, cfg.sample_rate, cfg.clip_seconds,
                                         cfg.objective, device)
    test_windows = evaluate(win_probs, [test.items[k] for k in win_kept], encoder, thresholds)
    elapsed = time.monotonic() - started
    best = min(history, key=lambda h: h["val_loss"] if h["val_loss"] == h["val_loss"] else 1e9)
    report = {
        "config": cfg.model_dump(mode="json"),
        "labels": labels,
        "counts": {k: len(v.items) for k, v in splits.items()},
        "skipped_count": len(skipped),
        "skipped": skipped,
        "history": history,
        "best_epoch": best["epoch"],
        "test": test_report,
        "test_whole_track_windows": {k: v for k, v in test_windows.items()
                                     if k not in ("per_class", "confusion")},
        "validation_accuracy": val_report.get("accuracy", val_report.get("top1_hit")),
        "validation": {k: v for k, v in val_report.items() if k not in ("per_class", "confusion")},
        "thresholds": thresholds,
        "test_predictions": {"item_ids": [i.item_id for i in test.items],
                             "probs": np.round(test_probs, 6).tolist()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": elapsed,
        "decode_seconds": decoded_at - started,
        "fit_seconds": fitted_at - decoded_at,
        "device": str(device),
    }
    version = cfg.version or f"{cfg.model}-{time.strftime('%Y%m%d%H%M%S')}"
    manifest_metrics = {
        "test_accuracy": test_report.get("accuracy"),
        "test_macro_f1": test_report.get("macro_f1"),
        "test_roc_auc_macro": test_report.get("roc_auc_macro"),
        "test_pr_auc_macro": test_report.get("pr_auc_macro"),
        "test_accuracy_whole_track": test_windows.get("accuracy", test_windows.get("top1_hit")),
        "validation_accuracy": report["validation_accuracy"],
        "train_seconds": round(elapsed, 1),
        "best_epoch": report["best_epoch"],
        "counts": report["counts"],
        "skipped": len(skipped),
    }
    probe = np.array(val.waves[: min(2, len(val.waves))], np.float32)
    manifest = export_artifact(
        model.cpu(), labels=labels, cfg=cfg, thresholds=thresholds, metrics=manifest_metrics,
        version=version, path=out_path, probe=torch.from_numpy(probe),
    )
    report["manifest"] = manifest.model_dump(mode="json")
    report["artifact"] = str(out_path)
    write_run_report(report, Path(report_dir or Path(out_path).parent), Path(out_path).stem)
    log.info("train.done", extra={"model": cfg.model, "artifact": str(out_path),
                                  "test_accuracy": test_report.get("accuracy"),
                                  "seconds": round(elapsed, 1)})
    return report

