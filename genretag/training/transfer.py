"""Transfer learning: a small head on a pretrained backbone's embeddings (``train --backbone``).

The backbone is a pulled pretrained artifact (``genretag models pull``: musicnn or vgg with its
log-mel front end). Its temporal pooling (the input of musicnn's dense back end) is computed
once per window and cached like every other feature, so the head trains on cached vectors:
frozen, the embedding (the back end's output) is standardised and a logistic head is fit by
LBFGS, its ``C`` chosen on validation; with ``fine_tune`` the back end's dense layers (musicnn)
are then trained together with the head on the same cache (AdamW, early stopping on track-level
validation loss; batch-norm statistics stay frozen). The exported artifact is backbone + head in
one TorchScript file with the backbone's rate and front end, served by the worker unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn

from genretag.core.artifact import ArtifactError, load_artifact, save_artifact, weights_sha256
from genretag.core.audio.decoders import DEFAULT_DECODER, DecoderName, decoder_info
from genretag.core.device import pick_device
from genretag.core.logs import get_logger
from genretag.schemas import LogMelParams, ModelManifest
from genretag.training.evaluate import evaluate
from genretag.training.export import ExportError
from genretag.training.features import FeatureSet, compute_features, frontend_key, plans
from genretag.training.fit import track_metrics, track_probs
from genretag.training.items import Item
from genretag.training.linear import select_c
from genretag.training.metrics import tune_thresholds
from genretag.training.models import ServingModel
from genretag.training.pretrained.logmel import PATCH_FRAMES, LogMel
from genretag.training.pretrained.nets import Musicnn, Vgg
from genretag.training.report import write_run_report
from genretag.training.splits import by_split
from genretag.training.train import check_splits, fit_targets, scores, seed_everything

log = get_logger(__name__)
ATOL = 1e-4


class BackboneError(ArtifactError):
    """The --backbone file is not a pretrained musicnn/vgg artifact."""


def load_backbone(path: Path) -> tuple[nn.Module, ModelManifest]:
    """The eager network (weights of the artifact at ``path``) and its manifest."""
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
        dim = _embed_dim(net)
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

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(self.net.pooled(self.logmel(wave))))


def _embed_dim(net: nn.Module) -> int:
    if isinstance(net, Musicnn):
        return int(net.dense.out_features)
    return int(net.out.in_features)


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
    model.mean.copy_(emb.mean(0))
    model.std.copy_(emb.std(0).clamp_min(1e-6) if len(emb) > 1 else torch.ones_like(emb[0]))
    x, vx = (emb - model.mean) / model.std, (val_emb - model.mean) / model.std
    target = torch.from_numpy(y_train[train.owner])
    target = target if objective == "single" else target.double()
    history = select_c(model, x, target, vx, train, y_train, val, y_val, objective, c, seed)
    model.float()
    return history


def fine_tune(model: TransferModel, train: FeatureSet, y_train: np.ndarray, val: FeatureSet,
              y_val: np.ndarray, objective: str, epochs: int, lr: float, batch_size: int,
              patience: int, seed: int) -> list[dict[str, Any]]:
    """Train musicnn's dense back end + head on the cached pooled features (BN frozen)."""
    params = _trainable(model, True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    loss_fn = nn.CrossEntropyLoss() if objective == "single" else nn.BCEWithLogitsLoss()
    x, vx = _feats(train), _feats(val)
    y = torch.from_numpy(y_train[train.owner])
    y = y if objective == "single" else y.float()
    rng = torch.Generator().manual_seed(seed)
    model.eval()  # batch-norm statistics stay the backbone's; only weights move
    history: list[dict[str, Any]] = []
    best_loss, best_state, bad = float("inf"), None, 0
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        order, total = torch.randperm(len(x), generator=rng), 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
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
            if bad >= patience:
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


def export_transfer(model: TransferModel, manifest_fields: dict[str, Any], path: Path,
                    probe: torch.Tensor) -> ModelManifest:
    """Script ServingModel(model), write it with its manifest, reload and compare outputs."""
    serving = ServingModel(model.cpu().eval(), manifest_fields["activation"]).eval()
    scripted = torch.jit.script(serving)
    manifest = ModelManifest(sha256=weights_sha256(scripted), **manifest_fields)
    save_artifact(scripted, manifest, Path(path))
    loaded, loaded_manifest = load_artifact(Path(path))
    with torch.inference_mode():
        diff = float((serving(probe) - loaded(probe)).abs().max())
    if not diff <= ATOL or loaded_manifest != manifest:
        Path(path).unlink(missing_ok=True)
        raise ExportError(f"{path}: the reloaded artifact differs from the trained model "
                          f"(max diff {diff:.2e})")
    return manifest


def train_transfer(items: Sequence[Item], backbone: Path, out_path: Path, *,
                   objective: str = "single", dataset: str = "", fine_tune_last: bool = False,
                   kinds: dict[str, str] | None = None, c: float | None = None,
                   eval_windows: int = 4, train_seconds: float | None = None,
                   train_hop_seconds: float = 1.5, epochs: int = 40, lr: float = 1e-3,
                   batch_size: int = 64, patience: int = 8, min_label_count: int = 1,
                   workers: int = 4, cache_dir: Path | None = None, seed: int = 0,
                   version: str = "", decoder: DecoderName = DEFAULT_DECODER,
                   allow_empty_split: bool = False,
                   progress: bool = False) -> dict[str, Any]:
    """The whole job for ``train --backbone``; returns the report (written next to OUT)."""
    seed_everything(seed)
    started = time.monotonic()
    net, bb_manifest = load_backbone(backbone)
    if fine_tune_last and not isinstance(net, Musicnn):
        raise BackboneError(f"{backbone}: --fine-tune needs a musicnn backbone (vgg has no "
                            "dense layer to tune)")
    encoder = fit_targets(items, objective, min_label_count, allow_empty_split)
    labels = encoder.labels
    model = TransferModel(net, len(labels))
    rate, clip = bb_manifest.sample_rate, bb_manifest.clip_seconds
    train_plan, eval_plan = plans(clip, rate, eval_windows, train_seconds or clip * eval_windows,
                                  train_hop_seconds)
    key = frontend_key(rate, f"pooled:{bb_manifest.sha256}:{decoder}")
    splits = {split: compute_features(
        chosen, model.frontend, train_plan if split == "training" else eval_plan, rate,
        bb_manifest.min_seconds, workers, cache_dir, key, desc=f"embeddings {split}",
        progress=progress, decoder=decoder)
        for split, chosen in by_split(items).items()}
    decoded_at = time.monotonic()
    train, val, test = splits["training"], splits["validation"], splits["test"]
    counts = {k: len(v.items) for k, v in splits.items()}
    skipped = [{**s, "split": name} for name, v in splits.items() for s in v.skipped]
    check_splits(counts, allow_empty_split, "after skipping broken clips")
    y_train, y_val = encoder.encode(train.items), encoder.encode(val.items)
    _trainable(model, False)
    history = fit_head(model, train, y_train, val, y_val, objective, c, seed)
    tune_history: list[dict[str, Any]] = []
    if fine_tune_last:
        tune_history = fine_tune(model, train, y_train, val, y_val, objective, epochs, lr,
                                 batch_size, patience, seed)
    fitted_at = time.monotonic()
    val_probs, test_probs = predict(model, val, objective), predict(model, test, objective)
    thresholds = tune_thresholds(val_probs, encoder.multi_hot(val.items), labels)
    test_report = evaluate(test_probs, test.items, encoder, thresholds, seed=seed)
    val_report = evaluate(val_probs, val.items, encoder, thresholds, seed=seed)
    elapsed = time.monotonic() - started
    name = "transfer-ft" if fine_tune_last else "transfer"
    config = {"model": name, "objective": objective, "dataset": dataset,
              "backbone": str(backbone), "backbone_name": bb_manifest.name,
              "backbone_version": bb_manifest.version, "backbone_sha256": bb_manifest.sha256,
              "fine_tune": fine_tune_last, "c": c, "eval_windows": eval_windows,
              "train_seconds": train_seconds or clip * eval_windows,
              "train_hop_seconds": train_hop_seconds, "epochs": epochs, "lr": lr,
              "batch_size": batch_size, "patience": patience, "seed": seed,
              "sample_rate": rate, "clip_seconds": clip, "decoder": decoder}
    report: dict[str, Any] = {
        "config": config, "labels": labels, "counts": counts,
        "windows": {k: v.n_windows for k, v in splits.items()},
        "skipped_count": len(skipped), "skipped": skipped,
        "history": tune_history or history, "head_history": history,
        "best_epoch": next(h["epoch"] for h in history if h.get("selected")),
        "test": test_report,
        **scores(val_report, thresholds, test.items, test_probs, model),
        "trained_parameters": sum(p.numel() for p in model.mlp.parameters()) + (
            sum(p.numel() for m in (net.pool_bn, net.dense, net.dense_bn)
                for p in m.parameters()) if fine_tune_last else 0),
        "train_seconds": elapsed, "decode_seconds": decoded_at - started,
        "fit_seconds": fitted_at - decoded_at, "device": str(pick_device("cpu")),
    }
    activation = "softmax" if objective == "single" else "sigmoid"
    probe = torch.randn(2, int(round(clip * rate)),
                        generator=torch.Generator().manual_seed(0)) * 0.1
    manifest = export_transfer(model, dict(
        name=name, version=version or f"{name}-{time.strftime('%Y%m%d%H%M%S')}", labels=labels,
        kinds=dict(kinds or {}), activation=activation, sample_rate=rate, clip_seconds=clip,
        min_seconds=bb_manifest.min_seconds, frontend=bb_manifest.frontend,
        thresholds=thresholds,
        metrics={"test_accuracy": test_report.get("accuracy"),
                 "test_macro_f1": test_report.get("macro_f1"),
                 "validation_accuracy": report["validation_accuracy"],
                 "train_seconds": round(elapsed, 1), "counts": counts,
                 "backbone": bb_manifest.name, "backbone_version": bb_manifest.version},
        dataset=dataset, torch_version=torch.__version__,
        torchaudio_version=torchaudio.__version__, decoder=decoder_info(decoder),
    ), out_path, probe)
    report["manifest"] = manifest.model_dump(mode="json")
    report["artifact"] = str(out_path)
    write_run_report(report, Path(out_path).parent, Path(out_path).stem)
    log.info("train.done", extra={"model": name, "artifact": str(out_path),
                                  "test_accuracy": test_report.get("accuracy"),
                                  "seconds": round(elapsed, 1)})
    return report


__all__ = ["BackboneError", "TransferModel", "load_backbone", "train_transfer"]
