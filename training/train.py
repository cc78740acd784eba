"""Train a genre model on labelled items and export the serving artifact.

``train_and_export`` is the whole job: decode (worker's decoder) → fit (AdamW, one-cycle LR,
augmentation, early stopping on validation) → evaluate on test → tune thresholds on
validation → export one TorchScript file with its manifest.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchaudio
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from genretag.logs import get_logger
from schemas import FrontendParams, ModelManifest
from training.dataset import DecodedSet, Item, decode_items
from training.export import export_artifact
from training.metrics import average_precision, per_class_report, roc_auc, tune_thresholds
from training.models import TimeDistributedCNN

log = get_logger(__name__)


class TrainConfig(BaseModel):
    """Everything that decides a training run (saved in the report and the manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "tdcnn"
    objective: Literal["single", "multi"] = "single"
    sample_rate: int = 22050
    clip_seconds: float = 30.0
    min_seconds: float = 1.0
    frontend: FrontendParams = Field(default_factory=FrontendParams)
    channels: tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.3
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    patience: int = 6
    mixup: float = 0.0
    gain_db: float = 6.0
    spec_mask: bool = True
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    decode_workers: int = 4
    version: str = ""
    dataset: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def targets_for(items: Sequence[Item], labels: list[str], objective: str) -> np.ndarray:
    """Class indices (single) or multi-hot rows (multi), in ``labels`` order."""
    index = {name: k for k, name in enumerate(labels)}
    if objective == "single":
        return np.array([index[item.labels[0]] for item in items], dtype=np.int64)
    hot = np.zeros((len(items), len(labels)), dtype=np.float32)
    for row, item in enumerate(items):
        for name in item.labels:
            hot[row, index[name]] = 1.0
    return hot


def build_model(cfg: TrainConfig, n_labels: int) -> nn.Module:
    if cfg.model == "tdcnn":
        return TimeDistributedCNN(n_labels, cfg.sample_rate, cfg.frontend, cfg.channels, cfg.dropout)
    from training.baselines import build_baseline  # the reference study's other models

    return build_baseline(cfg.model, n_labels, cfg)


def augment(wave: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Random gain and random circular shift (a cheap random crop of a fixed-length clip)."""
    b = wave.shape[0]
    if cfg.gain_db > 0:
        gain_db = (torch.rand(b, 1, device=wave.device) * 2 - 1) * cfg.gain_db
        wave = wave * torch.pow(10.0, gain_db / 20)
    shift = int(torch.randint(0, wave.shape[1], (1,)))
    return torch.roll(wave, shifts=shift, dims=1)


def _loss_fn(objective: str):
    return nn.CrossEntropyLoss() if objective == "single" else nn.BCEWithLogitsLoss()


def predict_probs(model: nn.Module, waves: np.ndarray, objective: str, device: torch.device,
                  batch_size: int = 32) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(waves), batch_size):
            x = torch.from_numpy(np.asarray(waves[start : start + batch_size])).to(device)
            logits = model(x).float()
            out.append((logits.softmax(-1) if objective == "single" else logits.sigmoid()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def fit(model: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        cfg: TrainConfig, device: torch.device) -> list[dict[str, float]]:
    """Train with AdamW + one-cycle LR, early stopping on validation loss; returns the history."""
    x_train, y_train = train
    x_val, y_val = val
    model.to(device)
    steps = max(1, math.ceil(len(x_train) / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs)
    loss_fn = _loss_fn(cfg.objective)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    masker = nn.Sequential(torchaudio.transforms.FrequencyMasking(4),
                           torchaudio.transforms.TimeMasking(16)) if cfg.spec_mask else None
    history: list[dict[str, float]] = []
    best_loss, best_state, bad_epochs = float("inf"), None, 0
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(x_train))
        total, seen = 0.0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, unit="batch")
        for step in bar:
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            if len(idx) == 0:
                continue
            x = augment(torch.from_numpy(np.asarray(x_train[idx])).to(device), cfg)
            y = torch.from_numpy(y_train[idx]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16,
                                enabled=use_amp):
                logits = _forward_train(model, x, masker)
                loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / max(seen, 1):.3f}")
        val_loss, val_acc = _evaluate_loss(model, x_val, y_val, cfg, device)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1),
                        "val_loss": val_loss, "val_accuracy": val_acc})
        log.info("train.epoch", extra=history[-1])
        if val_loss < best_loss - 1e-4:
            best_loss, bad_epochs = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                log.info("train.early_stop", extra={"epoch": epoch + 1})
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def _forward_train(model: nn.Module, x: torch.Tensor, masker: nn.Module | None) -> torch.Tensor:
    """Forward pass with SpecAugment-style masking on the features when the model allows it."""
    if masker is not None and isinstance(model, TimeDistributedCNN):
        feats = masker(model.frontend(x))
        feats = model.norm(feats)
        chunks = model.chunk(feats)
        b, c = chunks.shape[:2]
        emb = model.cnn(chunks.reshape(b * c, *chunks.shape[2:]))
        return model.head(model.pool(emb.reshape(b, c, -1)))
    return model(x)


def _evaluate_loss(model, x, y, cfg, device) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    probs = predict_probs(model, x, cfg.objective, device, cfg.batch_size)
    p = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7)
    if cfg.objective == "single":
        loss = float(nn.functional.nll_loss(p.log(), torch.from_numpy(y)))
        acc = float(np.mean(probs.argmax(1) == y))
    else:
        loss = float(nn.functional.binary_cross_entropy(p, torch.from_numpy(y)))
        acc = float(np.mean(probs.argmax(1) == y.argmax(1)))
    return loss, acc


def evaluate(probs: np.ndarray, items: Sequence[Item], labels: list[str]) -> dict:
    """Test metrics: top-1 accuracy and per-class table (first label), ROC/PR-AUC per label."""
    if len(items) == 0:
        return {"n": 0}
    first = targets_for(items, labels, "single")
    report = per_class_report(first, probs.argmax(1), labels)
    hot = targets_for(items, labels, "multi")
    aucs = [roc_auc(probs[:, k], hot[:, k]) for k in range(len(labels))]
    aps = [average_precision(probs[:, k], hot[:, k]) for k in range(len(labels))]
    report["roc_auc_macro"] = _mean([a for a in aucs if a is not None])
    report["pr_auc_macro"] = _mean([a for a in aps if a is not None])
    report["n"] = len(items)
    return report


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def train_and_export(items: Sequence[Item], cfg: TrainConfig, out_path: Path,
                     report_dir: Path | None = None, cache_dir: Path | None = None) -> dict:
    """The full job; returns the report (also written as JSON next to the artifact)."""
    seed_everything(cfg.seed)
    started = time.monotonic()
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    labels = sorted({name for item in items for name in item.labels})
    if len(labels) < 2:
        raise ValueError(f"need at least 2 labels to train, found {labels}")
    splits: dict[str, DecodedSet] = {}
    for split in ("training", "validation", "test"):
        chosen = [item for item in items if item.split == split]
        splits[split] = decode_items(chosen, cfg.sample_rate, cfg.clip_seconds, cfg.min_seconds,
                                     cfg.decode_workers, desc=f"decode {split}", cache_dir=cache_dir)
    train, val, test = splits["training"], splits["validation"], splits["test"]
    if len(train.items) == 0 or len(val.items) == 0:
        raise ValueError("training and validation splits must not be empty")
    model = build_model(cfg, len(labels))
    history = fit(
        model,
        (train.waves, targets_for(train.items, labels, cfg.objective)),
        (val.waves, targets_for(val.items, labels, cfg.objective)),
        cfg, device,
    )
    val_probs = predict_probs(model, val.waves, cfg.objective, device)
    test_probs = predict_probs(model, test.waves, cfg.objective, device)
    thresholds = tune_thresholds(val_probs, targets_for(val.items, labels, "multi"), labels)
    test_report = evaluate(test_probs, test.items, labels)
    elapsed = time.monotonic() - started
    report = {
        "config": cfg.model_dump(mode="json"),
        "labels": labels,
        "counts": {k: len(v.items) for k, v in splits.items()},
        "skipped": [s for v in splits.values() for s in v.skipped],
        "history": history,
        "test": test_report,
        "validation_accuracy": float(np.mean(val_probs.argmax(1) == targets_for(val.items, labels, "single"))),
        "train_seconds": elapsed,
        "device": str(device),
    }
    version = cfg.version or f"{cfg.model}-{time.strftime('%Y%m%d%H%M%S')}"
    manifest_metrics = {
        "test_accuracy": test_report.get("accuracy"),
        "test_macro_f1": test_report.get("macro_f1"),
        "validation_accuracy": report["validation_accuracy"],
        "train_seconds": round(elapsed, 1),
        "counts": report["counts"],
    }
    manifest = export_artifact(
        model.cpu(), labels=labels, cfg=cfg, thresholds=thresholds, metrics=manifest_metrics,
        version=version, path=out_path,
    )
    report["manifest"] = manifest.model_dump(mode="json")
    report_dir = Path(report_dir or Path(out_path).parent)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"{Path(out_path).stem}.report.json").write_text(json.dumps(report, indent=2))
    return report
