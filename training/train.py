"""Train a genre model on labelled items and export the serving artifact.

``train_and_export`` is the whole job: decode (worker's decoder) → fit (AdamW, one-cycle LR,
random crop, gain, mixup, SpecAugment masking, early stopping on validation, mixed precision on
GPU) → evaluate on test → tune thresholds on validation → export one TorchScript file with its
manifest → write the run report (JSON, per-class table, confusion matrix, learning curves).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from tqdm import tqdm

from core.logs import get_logger
from schemas import FrontendParams
from training.dataset import DecodedSet, Item, decode_items
from training.export import export_artifact
from training.metrics import (
    average_precision,
    confusion_matrix,
    multilabel_report,
    per_class_report,
    roc_auc,
    tune_thresholds,
)
from training.models import TimeDistributedCNN, WaveformClassifier
from training.report import write_run_report

log = get_logger(__name__)

MODEL_KINDS = ("tdcnn", "logreg", "dense", "cnn", "lstm")


class TrainConfig(BaseModel):
    """Everything that decides a training run (saved in the report and the manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Literal["tdcnn", "logreg", "dense", "cnn", "lstm"] = "tdcnn"
    objective: Literal["single", "multi"] = "single"
    sample_rate: int = 22050
    clip_seconds: float = 30.0
    min_seconds: float = 1.0
    frontend: FrontendParams = Field(default_factory=FrontendParams)
    channels: tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.3
    hidden: int = Field(default=256, ge=2, description="dense: first layer; lstm: 2× hidden size.")
    temporal: Literal["attention", "gru"] = "attention"
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = 3e-3
    weight_decay: float = 1e-2
    patience: int = 6
    mixup: float = Field(default=0.0, ge=0, description="Beta(α, α) mixup of waveforms; 0: off.")
    gain_db: float = 6.0
    spec_mask: bool = True
    train_seconds: float | None = Field(
        default=None, description="Window decoded for training clips (≥ clip); default clip.")
    crop_seconds: float | None = Field(
        default=None, description="Random training crop length (≤ train window); default clip.")
    min_label_count: int = Field(default=1, ge=1, description="multi: drop rarer labels.")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    decode_workers: int = 4
    version: str = ""
    dataset: str = ""

    @model_validator(mode="after")
    def _windows(self) -> TrainConfig:
        if self.train_window < self.clip_seconds:
            raise ValueError("train_seconds must not be shorter than clip_seconds")
        if not 0 < self.crop_window <= self.train_window:
            raise ValueError("crop_seconds must be in (0, train window]")
        return self

    @property
    def train_window(self) -> float:
        """Seconds decoded per training clip."""
        return self.train_seconds or self.clip_seconds

    @property
    def crop_window(self) -> float:
        """Seconds of each random training crop."""
        return self.crop_seconds or self.clip_seconds


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_labels(items: Sequence[Item], objective: str, min_count: int = 1) -> list[str]:
    """Sorted label set: first labels (single) or labels with ≥ ``min_count`` training items."""
    if objective == "single":
        return sorted({item.labels[0] for item in items})
    counts: dict[str, int] = {}
    for item in items:
        if item.split == "training":
            for name in set(item.labels):
                counts[name] = counts.get(name, 0) + 1
    return sorted(name for name, n in counts.items() if n >= min_count)


def targets_for(items: Sequence[Item], labels: list[str], objective: str) -> np.ndarray:
    """Class indices (single) or multi-hot rows (multi; unknown labels ignored)."""
    index = {name: k for k, name in enumerate(labels)}
    if objective == "single":
        return np.array([index[item.labels[0]] for item in items], dtype=np.int64)
    hot = np.zeros((len(items), len(labels)), dtype=np.float32)
    for row, item in enumerate(items):
        for name in item.labels:
            if name in index:
                hot[row, index[name]] = 1.0
    return hot


def build_model(cfg: TrainConfig, n_labels: int) -> nn.Module:
    """The model named by ``cfg.model``, with its frontend inside."""
    if cfg.model == "tdcnn":
        return TimeDistributedCNN(n_labels, cfg.sample_rate, cfg.frontend, cfg.channels,
                                  cfg.dropout, cfg.temporal)
    from training.baselines import build_baseline  # the reference study's other models

    return build_baseline(cfg.model, n_labels, cfg)


def random_crops(waves: np.ndarray, lengths: np.ndarray, crop: int,
                 rng: np.random.Generator) -> np.ndarray:
    """A random ``crop``-sample window of each row, inside its audio where the audio allows.

    Rows no longer than ``crop`` are instead rolled by a random shift within their audio.
    """
    out = np.empty((len(waves), crop), dtype=np.float32)
    for i, (wave, n) in enumerate(zip(waves, lengths)):
        n = int(min(n, wave.shape[0]))
        if wave.shape[0] > crop:
            start = int(rng.integers(0, max(0, n - crop) + 1))
            out[i] = wave[start : start + crop]
        else:
            out[i] = wave[:crop]
            if n > 1:
                out[i, :n] = np.roll(out[i, :n], int(rng.integers(0, n)))
    return out


def random_gain(wave: torch.Tensor, max_db: float) -> torch.Tensor:
    """Scale each clip by a uniform random gain in ±``max_db``."""
    if max_db <= 0:
        return wave
    gain_db = (torch.rand(wave.shape[0], 1, device=wave.device) * 2 - 1) * max_db
    return wave * torch.pow(10.0, gain_db / 20)


def spec_augment(feats: torch.Tensor, freq_width: int, time_width: int,
                 n_time_masks: int = 2) -> torch.Tensor:
    """SpecAugment per clip: one coefficient band and ``n_time_masks`` frame spans are replaced
    by each row's mean over time (shared by all channels of the clip)."""
    b, _, m, f = feats.shape
    device = feats.device
    fill = feats.mean(dim=-1, keepdim=True).expand_as(feats)
    mask = torch.zeros(b, 1, m, f, dtype=torch.bool, device=device)
    rows = torch.arange(m, device=device).view(1, m, 1)
    cols = torch.arange(f, device=device).view(1, 1, f)
    if freq_width > 0:
        width = torch.randint(0, freq_width + 1, (b, 1, 1), device=device)
        start = (torch.rand(b, 1, 1, device=device) * (m - width + 1)).long()
        mask |= ((rows >= start) & (rows < start + width)).unsqueeze(1)
    for _ in range(n_time_masks if time_width > 0 else 0):
        width = torch.randint(0, time_width + 1, (b, 1, 1), device=device)
        start = (torch.rand(b, 1, 1, device=device) * (f - width + 1)).long()
        mask |= ((cols >= start) & (cols < start + width)).unsqueeze(1)
    return torch.where(mask, fill, feats)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip with a random partner: ``λx + (1-λ)x'`` and soft targets alike."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def _loss_fn(objective: str) -> nn.Module:
    # CrossEntropyLoss takes class indices or class probabilities (mixup's soft targets).
    return nn.CrossEntropyLoss() if objective == "single" else nn.BCEWithLogitsLoss()


def predict_probs(model: nn.Module, waves: np.ndarray, objective: str, device: torch.device,
                  batch_size: int = 32) -> np.ndarray:
    """Probabilities ``(n, n_labels)`` for fixed-length clips, in float32, batch by batch."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(waves), batch_size):
            x = torch.from_numpy(np.array(waves[start : start + batch_size], np.float32)).to(device)
            logits = model(x).float()
            out.append((logits.softmax(-1) if objective == "single" else logits.sigmoid()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _batches(x: np.ndarray, lengths: np.ndarray, order: np.ndarray, batch_size: int, crop: int,
             rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(index, cropped waves)`` per batch, the next one gathered in a background thread."""
    chunks = [np.sort(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    seeds = rng.integers(0, 2**31, len(chunks))

    def gather(k: int) -> tuple[np.ndarray, np.ndarray]:
        idx = chunks[k]
        return idx, random_crops(np.asarray(x[idx]), lengths[idx], crop,
                                 np.random.default_rng(int(seeds[k])))

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(gather, 0) if chunks else None
        for k in range(len(chunks)):
            assert pending is not None
            batch = pending.result()
            pending = pool.submit(gather, k + 1) if k + 1 < len(chunks) else None
            yield batch


def fit(model: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        cfg: TrainConfig, device: torch.device, train_lengths: np.ndarray | None = None,
        n_labels: int | None = None) -> list[dict[str, float]]:
    """Train with AdamW + one-cycle LR, early stopping on validation loss; returns the history.

    The weights of the epoch with the lowest validation loss are restored at the end.
    """
    x_train, y_train = train
    x_val, y_val = val
    lengths = (train_lengths if train_lengths is not None
               else np.full(len(x_train), x_train.shape[1]))
    crop = int(round(cfg.crop_window * cfg.sample_rate))
    model.to(device)
    steps = max(1, math.ceil(len(x_train) / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs)
    loss_fn = _loss_fn(cfg.objective)
    # Recurrent layers stay in float32: cuDNN RNNs and low precision do not mix everywhere.
    recurrent = cfg.model == "lstm" or (cfg.model == "tdcnn" and cfg.temporal == "gru")
    use_amp = cfg.amp and device.type == "cuda" and not recurrent
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if n_labels is None:
        n_labels = int(y_train.max()) + 1 if cfg.objective == "single" else y_train.shape[1]
    history: list[dict[str, float]] = []
    best_loss, best_state, bad_epochs = float("inf"), None, 0
    rng = np.random.default_rng(cfg.seed)
    epochs = tqdm(range(cfg.epochs), desc=f"train {cfg.model}", unit="epoch")
    for epoch in epochs:
        model.train()
        started = time.monotonic()
        total, correct, seen = 0.0, 0, 0
        bar = tqdm(_batches(x_train, lengths, rng.permutation(len(x_train)), cfg.batch_size, crop,
                            rng), total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, unit="batch")
        for idx, waves in bar:
            x = random_gain(torch.from_numpy(waves).to(device, non_blocking=True), cfg.gain_db)
            y = torch.from_numpy(y_train[idx]).to(device)
            if cfg.objective == "single":
                y = nn.functional.one_hot(y, n_labels).float()
            if cfg.mixup > 0 and len(idx) > 1:
                x, y = mixup(x, y, cfg.mixup, rng)
            logits = _forward_train(model, x, cfg, use_amp, amp_dtype)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += _hits(logits.detach(), y)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / max(seen, 1):.3f}")
        val_loss, val_acc = _evaluate_loss(model, x_val, y_val, cfg, device)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1),
                        "train_accuracy": correct / max(seen, 1), "val_loss": val_loss,
                        "val_accuracy": val_acc, "lr": float(sched.get_last_lr()[0]),
                        "seconds": round(time.monotonic() - started, 2)})
        log.info("train.epoch", extra={"model": cfg.model, **history[-1]})
        epochs.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if val_loss < best_loss - 1e-4:
            best_loss, bad_epochs = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                log.info("train.early_stop", extra={"epoch": epoch + 1})
                break
    epochs.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def _forward_train(model: nn.Module, x: torch.Tensor, cfg: TrainConfig, use_amp: bool,
                   amp_dtype: torch.dtype) -> torch.Tensor:
    """Features in float32 (the STFT's power overflows float16), masked; the rest under AMP."""
    if not isinstance(model, WaveformClassifier):
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=use_amp):
            return model(x)
    with torch.autocast(x.device.type, enabled=False):
        feats = model.features(x)
        if cfg.spec_mask:
            feats = spec_augment(feats, max(1, feats.shape[2] // 5), max(1, feats.shape[3] // 10))
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=use_amp):
        return model.classify(feats)


def _hits(logits: torch.Tensor, y: torch.Tensor) -> int:
    """Top-1 hits: argmax equals the (dominant) target class, or is one of the true labels."""
    top = logits.argmax(dim=1, keepdim=True)
    if y.dim() == 1:
        return int((top.squeeze(1) == y).sum())
    return int((y.gather(1, top) >= 0.5).sum())


def _evaluate_loss(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig,
                   device: torch.device) -> tuple[float, float]:
    """Validation loss and top-1 accuracy (multi: the top label is one of the true labels)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    probs = predict_probs(model, x, cfg.objective, device, cfg.batch_size)
    p = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7)
    if cfg.objective == "single":
        loss = float(nn.functional.nll_loss(p.log(), torch.from_numpy(y)))
        acc = float(np.mean(probs.argmax(1) == y))
    else:
        loss = float(nn.functional.binary_cross_entropy(p, torch.from_numpy(y)))
        acc = float(np.mean(y[np.arange(len(y)), probs.argmax(1)] > 0.5))
    return loss, acc


def evaluate(probs: np.ndarray, items: Sequence[Item], labels: list[str], objective: str = "single",
             thresholds: dict[str, float] | None = None) -> dict:
    """Test metrics. Single: accuracy, per-class table, confusion matrix, one-vs-rest AUCs.
    Multi: per-label table at ``thresholds``, ROC-AUC / PR-AUC per label, macro and micro."""
    if len(items) == 0:
        return {"n": 0}
    if objective == "multi":
        hot = targets_for(items, labels, "multi")
        report = multilabel_report(probs, hot, labels, thresholds or {n: 0.5 for n in labels})
        report["top1_hit"] = float(np.mean(hot[np.arange(len(hot)), probs.argmax(1)] > 0.5))
        report["n"] = len(items)
        return report
    first = targets_for(items, labels, "single")
    predicted = probs.argmax(1)
    report = per_class_report(first, predicted, labels)
    report["confusion"] = confusion_matrix(first, predicted, len(labels)).tolist()
    hot = targets_for(items, labels, "multi")
    aucs = [roc_auc(probs[:, k], hot[:, k]) for k in range(len(labels))]
    aps = [average_precision(probs[:, k], hot[:, k]) for k in range(len(labels))]
    report["roc_auc_macro"] = _mean([a for a in aucs if a is not None])
    report["pr_auc_macro"] = _mean([a for a in aps if a is not None])
    report["n"] = len(items)
    return report


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available")
    use_cuda = cfg.device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.backends.cudnn.benchmark = True
    return torch.device("cuda" if use_cuda else "cpu")


def decode_splits(items: Sequence[Item], cfg: TrainConfig,
                  cache_dir: Path | None = None) -> dict[str, DecodedSet]:
    """Decode the three splits; training clips get the longer training window."""
    splits: dict[str, DecodedSet] = {}
    for split in ("training", "validation", "test"):
        chosen = [item for item in items if item.split == split]
        seconds = cfg.train_window if split == "training" else cfg.clip_seconds
        splits[split] = decode_items(chosen, cfg.sample_rate, seconds, cfg.min_seconds,
                                     cfg.decode_workers, desc=f"decode {split}",
                                     cache_dir=cache_dir)
    return splits


def train_and_export(items: Sequence[Item], cfg: TrainConfig, out_path: Path,
                     report_dir: Path | None = None, cache_dir: Path | None = None) -> dict:
    """The full job; returns the report (also written as JSON, table and PNGs next to OUT)."""
    seed_everything(cfg.seed)
    started = time.monotonic()
    device = _device(cfg)
    labels = choose_labels(items, cfg.objective, cfg.min_label_count)
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
        (train.waves, targets_for(train.items, labels, cfg.objective)),
        (val.waves, targets_for(val.items, labels, cfg.objective)),
        cfg, device, train.lengths, len(labels),
    )
    fitted_at = time.monotonic()
    val_probs = predict_probs(model, val.waves, cfg.objective, device)
    test_probs = predict_probs(model, test.waves, cfg.objective, device)
    val_hot = targets_for(val.items, labels, "multi")
    thresholds = tune_thresholds(val_probs, val_hot, labels)
    test_report = evaluate(test_probs, test.items, labels, cfg.objective, thresholds)
    val_report = evaluate(val_probs, val.items, labels, cfg.objective, thresholds)
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
