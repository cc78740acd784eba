"""The training loop on cached features: AdamW + one-cycle LR, feature-domain augmentation,
mixed precision on GPU, early stopping on track-level validation loss.

Training samples are windows (each labelled with its track's targets); validation and test are
tracks: the mean of their window probabilities, as the worker averages them. Augmentations act
on the cached features (``training/augment.py``): a dB gain shift (exact), a random time crop,
SpecAugment and mixup (approximations of the same operations on audio, documented there).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from genretag.core.audio.windows import average_by_owner
from genretag.core.logs import get_logger
from genretag.training.augment import crop_frames, gain_shift, mixup, spec_augment
from genretag.training.config import TrainConfig
from genretag.training.features import FeatureSet

log = get_logger(__name__)


def _loss_fn(objective: str) -> nn.Module:
    # CrossEntropyLoss takes class indices or class probabilities (mixup's soft targets).
    return nn.CrossEntropyLoss() if objective == "single" else nn.BCEWithLogitsLoss()


def window_logits(model: nn.Module, fs: FeatureSet, device: torch.device,
                  batch_size: int = 64) -> torch.Tensor:
    """Logits ``(n_windows, n_labels)`` of every cached window (float32, on the CPU)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, fs.n_windows, batch_size):
            x = torch.from_numpy(np.array(fs.feats[start:start + batch_size])).to(device)
            out.append(model.classify(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def track_probs(logits: torch.Tensor, owner: np.ndarray, n_tracks: int,
                objective: str) -> np.ndarray:
    """Window logits → per-track probabilities: the mean of window probabilities (serving)."""
    if n_tracks == 0 or len(logits) == 0:
        return np.zeros((n_tracks, logits.shape[1] if logits.dim() == 2 else 0), np.float32)
    probs = logits.softmax(-1) if objective == "single" else logits.sigmoid()
    return average_by_owner(probs, torch.from_numpy(owner), n_tracks).numpy()


def track_metrics(logits: torch.Tensor, owner: np.ndarray, n_tracks: int, y: np.ndarray,
                  objective: str) -> tuple[float, float]:
    """Track-level loss and top-1 accuracy (multi: the top label is one of the true labels)."""
    if n_tracks == 0:
        return float("nan"), float("nan")
    probs = track_probs(logits, owner, n_tracks, objective)
    p = torch.from_numpy(probs).double().clamp(1e-7, 1 - 1e-7)
    if objective == "single":
        loss = float(nn.functional.nll_loss(p.log(), torch.from_numpy(y)))
        acc = float(np.mean(probs.argmax(1) == y))
    else:
        loss = float(nn.functional.binary_cross_entropy(p, torch.from_numpy(y).double()))
        acc = float(np.mean(y[np.arange(len(y)), probs.argmax(1)] > 0.5))
    return loss, acc


def predict_tracks(model: nn.Module, fs: FeatureSet, objective: str,
                   device: torch.device) -> np.ndarray:
    """Per-track probabilities ``(n_items, n_labels)`` from the cached windows."""
    return track_probs(window_logits(model, fs, device), fs.owner, len(fs.items), objective)


def fit(model: nn.Module, train: FeatureSet, y_train: np.ndarray, val: FeatureSet,
        y_val: np.ndarray, cfg: TrainConfig, device: torch.device, n_labels: int,
        gain_offset: torch.Tensor | None = None, progress: bool = False) -> list[dict[str, float]]:
    """Minibatch training on windows; returns the history (one row per epoch).

    ``y_train``/``y_val`` are per track (index or multi-hot rows); windows take their track's.
    The weights of the epoch with the lowest track-level validation loss are restored.
    """
    model.to(device)
    y_windows = y_train[train.owner]
    frames = train.feats.shape[-1] if train.n_windows else 0
    crop = _crop_frames(cfg, frames)
    rng = np.random.default_rng(cfg.seed)
    per_epoch = len(epoch_order(train.owner, cfg.epoch_windows, rng))
    steps = max(1, math.ceil(per_epoch / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs)
    loss_fn = _loss_fn(cfg.objective)
    use_amp = cfg.amp and device.type == "cuda" and getattr(model, "mixed_precision", True)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    offset = gain_offset.to(device) if gain_offset is not None else None
    history: list[dict[str, float]] = []
    best_loss, best_state, bad_epochs = float("inf"), None, 0
    epochs = tqdm(range(cfg.epochs), desc=f"train {cfg.model}", unit="epoch", disable=not progress)
    for epoch in epochs:
        model.train()
        started = time.monotonic()
        total, correct, seen = 0.0, 0, 0
        order = epoch_order(train.owner, cfg.epoch_windows, rng)
        for start in range(0, len(order), cfg.batch_size):
            idx = np.sort(order[start:start + cfg.batch_size])
            if len(idx) < 2 and train.n_windows > 1:
                continue  # batch norm needs two samples; the next epoch's order differs
            x = torch.from_numpy(np.asarray(train.feats[idx])).to(device, non_blocking=True)
            x = _augment(x, cfg, crop, offset, rng)
            y = torch.from_numpy(y_windows[idx]).to(device)
            if cfg.objective == "single":
                y = nn.functional.one_hot(y, n_labels).float()
            if cfg.mixup > 0 and len(idx) > 1:
                x, y = mixup(x, y, cfg.mixup, rng)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model.classify(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += _hits(logits.detach(), y)
            seen += len(idx)
        val_loss, val_acc = track_metrics(window_logits(model, val, device), val.owner,
                                          len(val.items), y_val, cfg.objective)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1),
                        "train_accuracy": correct / max(seen, 1), "val_loss": val_loss,
                        "val_accuracy": val_acc, "lr": float(sched.get_last_lr()[0]),
                        "seconds": round(time.monotonic() - started, 3)})
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


def epoch_order(owner: np.ndarray, per_track: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffled window indices of one epoch: all windows (``per_track`` 0), or up to
    ``per_track`` random windows of every track (a fresh draw each epoch)."""
    if per_track <= 0:
        return rng.permutation(len(owner))
    order = np.lexsort((rng.random(len(owner)), owner))  # by track, random inside a track
    grouped = owner[order]
    rank = np.arange(len(order)) - np.searchsorted(grouped, grouped, side="left")
    return rng.permutation(order[rank < per_track])


def _crop_frames(cfg: TrainConfig, frames: int) -> int:
    """Frames of the random training crop (all of the window when no crop is configured)."""
    if cfg.crop_seconds is None or frames == 0:
        return frames
    hop = cfg.frontend.hop_length
    return max(1, min(frames, int(round(cfg.crop_seconds * cfg.sample_rate / hop)) + 1))


def _augment(x: torch.Tensor, cfg: TrainConfig, crop: int, offset: torch.Tensor | None,
             rng: np.random.Generator) -> torch.Tensor:
    """Crop, gain shift and SpecAugment of a batch of cached window features."""
    if crop < x.shape[-1]:
        x = crop_frames(x, crop, rng)
    if offset is not None and cfg.gain_db > 0:
        x = gain_shift(x, offset, cfg.gain_db)
    if cfg.spec_mask:
        x = spec_augment(x, max(1, x.shape[2] // 5), max(1, x.shape[3] // 10))
    return x


def _hits(logits: torch.Tensor, y: torch.Tensor) -> int:
    """Top-1 hits: argmax equals the (dominant) target class, or is one of the true labels."""
    top = logits.argmax(dim=1, keepdim=True)
    if y.dim() == 1:
        return int((top.squeeze(1) == y).sum())
    return int((y.gather(1, top) >= 0.5).sum())
