"""The training loop: AdamW + one-cycle LR, augmentation, mixed precision on GPU, early stopping.

``fit`` trains in place and restores the best validation epoch; ``predict_probs`` runs a model
over fixed-length clips in batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.logs import get_logger
from training.augment import mixup, random_crops, random_gain, spec_augment
from training.config import TrainConfig
from training.models import WaveformClassifier

log = get_logger(__name__)


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
