"""Transfer learning: a small head on a pretrained backbone's embeddings (kinds ``transfer``
and ``transfer-ft``, ``train --backbone``).

The backbone is a pulled pretrained artifact (``genretag models pull``: musicnn or vgg with its
log-mel front end). Its temporal pooling (the input of musicnn's dense back end) is computed
once per window and cached like every other feature, so the head trains on cached vectors:
frozen, the embedding (the back end's output) is standardised and a logistic head is fit by
LBFGS, its ``C`` chosen on validation; ``transfer-ft`` then trains the back end's dense layers
(musicnn) together with the head on the same cache (AdamW, early stopping on track-level
validation loss; batch-norm statistics stay frozen). The exported artifact is backbone + head in
one TorchScript file with the backbone's rate and front end, served by the worker unchanged;
its embedding output (contract v2) is the backbone's own, so a frozen head's vectors share the
backbone's space (``EmbeddingSpec.space``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genretag.core.artifact import ArtifactError, MissingArtifact, load_artifact
from genretag.core.logs import get_logger
from genretag.schemas import LogMelParams, ModelManifest
from genretag.training.config import TrainConfig
from genretag.training.features import (
    FeatureSet,
    WindowPlan,
    compute_features,
    frontend_key,
    plans,
)
from genretag.training.fit import track_metrics, track_probs
from genretag.training.items import Item
from genretag.training.linear import lbfgs_fit, select_c
from genretag.training.pretrained.logmel import PATCH_FRAMES, LogMel
from genretag.training.pretrained.nets import Musicnn, Vgg
from genretag.training.registry import get_spec
from genretag.training.head_export import HeadRun, embed_dim, finish_head
from genretag.training.run_report import RunReport
from genretag.training.run_steps import decoded_splits, fit_targets, seed_everything
from genretag.training.splits import by_split

log = get_logger(__name__)
ATOL = 1e-4


class BackboneError(ArtifactError):
    """The --backbone file is not a pretrained musicnn/vgg artifact."""


def load_backbone(path: Path) -> tuple[nn.Module, ModelManifest]:
    """The eager network (weights of the artifact at ``path``) and its manifest."""
    if not Path(path).is_file():
        raise MissingArtifact(f"--backbone {path}: no such file; pull a pretrained model with "
                              "`genretag models pull musicnn-msd`")
    scripted, manifest = load_artifact(Path(path))
    if not isinstance(manifest.frontend, LogMelParams):
        raise BackboneError(f"{path}: not a pretrained backbone (its front end is MFCC; pull "
                            "one with `genretag models pull musicnn-msd`)")
    state = {k[len("net."):]: v for k, v in scripted.state_dict().items() if k.startswith("net.")}
    if "timbral.0.conv.weight" in state:
        net: nn.Module = Musicnn(
            n_labels=state["out.weight"].shape[0], midend=state["mid.0.conv.weight"].shape[0],
            backend=state["dense.weight"].shape[0],
            frontend_scale=state["timbral.0.conv.weight"].shape[0] / 128)
    elif "blocks.0.conv.weight" in state:
        net = Vgg(n_labels=state["out.weight"].shape[0],
                  filters=state["blocks.0.conv.weight"].shape[0],
                  flat=state["out.weight"].shape[1])
    else:
        raise BackboneError(f"{path}: not a musicnn or vgg backbone")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise BackboneError(f"{path}: weights do not fit the architecture: {exc}") from exc
    return net.eval(), manifest


class PooledFrontend(nn.Module):
    """Waveform windows → the backbone's pooled features ``(batch, 1, 1, dim)`` (the cache)."""

    def __init__(self, logmel: LogMel, net: nn.Module) -> None:
        super().__init__()
        self.logmel, self.net = logmel, net

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(self.logmel(wave))[:, None, None, :]


class TransferModel(nn.Module):
    """Backbone (log-mel + net) → embedding → standardised → linear head: logits."""

    def __init__(self, net: nn.Module, n_labels: int) -> None:
        super().__init__()
        self.logmel = LogMel(PATCH_FRAMES)
        self.net = net
        dim = embed_dim(net)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.mlp = nn.Sequential(nn.Linear(dim, n_labels))
        self.frontend = PooledFrontend(self.logmel, self.net)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Standardised embedding of cached pooled features ``(batch, dim)``."""
        return (self.net.tail(pooled) - self.mean) / self.std

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of standardised embeddings (what LBFGS fits)."""
        return self.mlp(z)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits of cached features ``(batch, 1, 1, dim)``."""
        return self.head(self.embed(feats.flatten(1)))

    def embedding(self, wave: torch.Tensor) -> torch.Tensor:
        """The backbone's own embedding of waveform windows (not standardised): the artifact's
        embedding output, in the backbone's vector space while the back end is frozen."""
        return self.net.tail(self.net.pooled(self.logmel(wave)))

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of backbone embeddings (standardised, then the linear head)."""
        return self.head((z - self.mean) / self.std)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.decide(self.embedding(wave))


def _trainable(model: TransferModel, fine_tune: bool) -> list[nn.Parameter]:
    """Head parameters; with ``fine_tune`` also musicnn's dense back end (BN affine included)."""
    for p in model.net.parameters():
        p.requires_grad_(False)
    params = list(model.mlp.parameters())
    if fine_tune:
        if not isinstance(model.net, Musicnn):
            raise ValueError("--fine-tune needs a musicnn backbone (vgg has no dense layer)")
        for part in (model.net.pool_bn, model.net.dense, model.net.dense_bn):
            for p in part.parameters():
                p.requires_grad_(True)
                params.append(p)
    return params


def _feats(fs: FeatureSet, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.array(fs.feats)).flatten(1).to(dtype)


def fit_head(model: TransferModel, train: FeatureSet, y_train: np.ndarray, val: FeatureSet,
             y_val: np.ndarray, objective: str, c: float | None, seed: int
             ) -> list[dict[str, Any]]:
    """Frozen backbone: standardise the embeddings, LBFGS head per ``C``, keep the best on
    validation (accuracy, then loss). One history row per ``C``."""
    model.double().eval()
    with torch.inference_mode():
        emb = model.net.tail(_feats(train, torch.float64))
        val_emb = model.net.tail(_feats(val, torch.float64))
    return fit_head_on_embeddings(model, emb, train, y_train, val_emb, val, y_val, objective,
                                  c, seed)


def fit_head_on_embeddings(model: TransferModel, emb: torch.Tensor, train: FeatureSet,
                           y_train: np.ndarray, val_emb: torch.Tensor, val: FeatureSet,
                           y_val: np.ndarray, objective: str, c: float | None, seed: int,
                           choose_on: int | None = None) -> list[dict[str, Any]]:
    """The head on backbone embeddings ``emb`` (one row per window of ``train``; float64):
    standardise, LBFGS per ``C``, keep the best on validation (``--from-store`` starts here).

    ``choose_on``: with more training items than that (one row each), ``C`` is chosen on a
    seeded sample of that many, then the chosen head is fit on every row from there (a warm
    start): the grid's cost stops growing with the catalog."""
    model.double().eval()
    emb, val_emb = emb.double(), val_emb.double()
    model.mean.copy_(emb.mean(0))
    model.std.copy_(emb.std(0).clamp_min(1e-6) if len(emb) > 1 else torch.ones_like(emb[0]))
    x, vx = (emb - model.mean) / model.std, (val_emb - model.mean) / model.std
    target = torch.from_numpy(y_train[train.owner])
    target = target if objective == "single" else target.double()
    if not choose_on or len(train.items) <= choose_on or train.n_windows != len(train.items):
        history = select_c(model, x, target, vx, train, y_train, val, y_val, objective, c, seed)
    else:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), choose_on, replace=False))
        history = select_c(model, x[pick], target[pick], vx, train.select(pick), y_train[pick],
                           val, y_val, objective, c, seed)
        chosen = next(h for h in history if h.get("selected"))
        started = time.monotonic()
        loss, iterations = lbfgs_fit(model, x, target, objective, chosen["C"], seed, reset=False)
        with torch.inference_mode():
            val_loss, val_acc = track_metrics(model.head(vx).float(), val.owner, len(val.items),
                                              y_val, objective)
        chosen.pop("selected")
        history.append({"epoch": len(history) + 1, "C": chosen["C"], "rows": len(x),
                        "train_loss": loss, "val_loss": val_loss, "val_accuracy": val_acc,
                        "iterations": iterations, "selected": True,
                        "seconds": round(time.monotonic() - started, 3)})
    model.float()
    return history


def fine_tune(model: TransferModel, train: FeatureSet, y_train: np.ndarray, val: FeatureSet,
              y_val: np.ndarray, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Train musicnn's dense back end + head on the cached pooled features (BN frozen):
    AdamW (``cfg.lr``, ``cfg.weight_decay``), early stopping after ``cfg.patience`` epochs."""
    objective = cfg.objective
    params = _trainable(model, True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss() if objective == "single" else nn.BCEWithLogitsLoss()
    x, vx = _feats(train), _feats(val)
    y = torch.from_numpy(y_train[train.owner])
    y = y if objective == "single" else y.float()
    rng = torch.Generator().manual_seed(cfg.seed)
    model.eval()  # batch-norm statistics stay the backbone's; only weights move
    history: list[dict[str, Any]] = []
    best_loss, best_state, bad = float("inf"), None, 0
    for epoch in range(1, cfg.epochs + 1):
        started = time.monotonic()
        order, total = torch.randperm(len(x), generator=rng), 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = loss_fn(model.head(model.embed(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        with torch.inference_mode():
            val_loss, val_acc = track_metrics(model.head(model.embed(vx)), val.owner,
                                              len(val.items), y_val, objective)
        history.append({"epoch": epoch, "train_loss": total / max(1, len(x)),
                        "val_loss": val_loss, "val_accuracy": val_acc,
                        "seconds": round(time.monotonic() - started, 3)})
        if val_loss < best_loss - 1e-4:
            best_loss, bad = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(False)
    return history


def predict(model: TransferModel, fs: FeatureSet, objective: str) -> np.ndarray:
    """Per-track probabilities: window probabilities averaged, as the worker does."""
    with torch.inference_mode():
        logits = model.classify(torch.from_numpy(np.array(fs.feats))) if fs.n_windows else \
            torch.zeros(0, model.mlp[0].out_features)
    return track_probs(logits, fs.owner, len(fs.items), objective)


def backbone_windows(cfg: TrainConfig, manifest: ModelManifest) -> TrainConfig:
    """``cfg`` with the backbone's rate, clip and shortest clip, its windows checked."""
    cfg = cfg.model_copy(update={"sample_rate": manifest.sample_rate,
                                 "clip_seconds": manifest.clip_seconds,
                                 "min_seconds": manifest.min_seconds})
    try:
        cfg.check_windows()
    except ValueError as exc:
        raise BackboneError(f"with the backbone's {manifest.clip_seconds} s clip: {exc}") from None
    return cfg


def transfer_plans(cfg: TrainConfig, bb_manifest: ModelManifest
                   ) -> tuple[WindowPlan, WindowPlan, str]:
    """(training plan, evaluation plan, cache key) of a head on this backbone (``cfg`` with
    the backbone's windows): every caller caching its embeddings shares one cache.

    The head trains on the windows it is served on (the evaluation plan) unless
    ``--train-hop-seconds``/``--train-seconds`` ask for others: the embedding pass is most of a
    head's cost, and windows every half clip nearly doubled it (19 windows per 30 s training
    clip instead of 10) for no measured gain (docs/reports/training.md)."""
    train_plan, eval_plan = plans(cfg.clip_seconds, cfg.sample_rate, cfg.eval_windows,
                                  cfg.train_window, cfg.train_hop)
    if cfg.train_hop_seconds is None and cfg.train_seconds is None:
        train_plan = eval_plan
    return (train_plan, eval_plan,
            frontend_key(cfg.sample_rate, f"pooled:{bb_manifest.sha256}:{cfg.decoder}"))


def fit_transfer(model: TransferModel, cfg: TrainConfig, train: FeatureSet,
                 y_train: np.ndarray, val: FeatureSet, y_val: np.ndarray
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Fit the head (and, for ``backbone-fine-tune`` kinds, then the back end) on cached
    pooled features; returns (head history, fine-tuning history or [])."""
    _trainable(model, False)
    history = fit_head(model, train, y_train, val, y_val, cfg.objective, cfg.c, cfg.seed)
    if get_spec(cfg.model).recipe != "backbone-fine-tune":
        return history, []
    return history, fine_tune(model, train, y_train, val, y_val, cfg)


def train_transfer(items: Sequence[Item], cfg: TrainConfig, out_path: Path,
                   report_dir: Path | None = None, cache_dir: Path | None = None,
                   allow_empty_split: bool = False, progress: bool = False,
                   features: Mapping[str, FeatureSet] | None = None) -> RunReport:
    """The whole job for a kind that puts a head on ``cfg.backbone`` (``transfer``, or
    ``transfer-ft`` which then fine-tunes the back end); returns the report (written next to
    OUT). Takes the same config as ``train_and_export``; ``features`` (per split, from
    ``transfer_plans``) skips the embedding pass."""
    seed_everything(cfg.seed)
    started = time.monotonic()
    if cfg.backbone is None or not get_spec(cfg.model).needs_backbone:
        raise ValueError(f"train_transfer trains a head on a backbone; {cfg.model} is not one")
    fine_tune_last = get_spec(cfg.model).recipe == "backbone-fine-tune"
    net, bb_manifest = load_backbone(cfg.backbone)
    if fine_tune_last and not isinstance(net, Musicnn):
        raise BackboneError(f"{cfg.backbone}: --fine-tune needs a musicnn backbone (vgg has no "
                            "dense layer to tune)")
    cfg = backbone_windows(cfg, bb_manifest)
    encoder = fit_targets(items, cfg, allow_empty_split)
    labels = encoder.labels
    model = TransferModel(net, len(labels))
    rate = cfg.sample_rate
    train_plan, eval_plan, key = transfer_plans(cfg, bb_manifest)
    splits = dict(features) if features is not None else {split: compute_features(
        chosen, model.frontend, train_plan if split == "training" else eval_plan, rate,
        cfg.min_seconds, cfg.decode_workers, cache_dir, key, desc=f"embeddings {split}",
        progress=progress, decoder=cfg.decoder)
        for split, chosen in by_split(items).items()}
    decoded_at = time.monotonic()
    train, val = splits["training"], splits["validation"]
    counts, skipped = decoded_splits(splits, allow_empty_split)
    y_train, y_val = encoder.encode(train.items), encoder.encode(val.items)
    history, tune_history = fit_transfer(model, cfg, train, y_train, val, y_val)
    fitted_at = time.monotonic()
    return finish_head(HeadRun(
        model=model, bb_manifest=bb_manifest, cfg=cfg, encoder=encoder, splits=splits,
        counts=counts, skipped=skipped, history=history, tune_history=tune_history,
        fine_tuned=fine_tune_last, seconds=(started, decoded_at, fitted_at),
        predict=lambda fs: predict(model, fs, cfg.objective)), out_path, report_dir)


__all__ = ["BackboneError", "TransferModel", "backbone_windows", "fit_head_on_embeddings",
           "fit_transfer", "load_backbone", "train_transfer", "transfer_plans"]
