"""The end of every head-on-a-backbone run (``--backbone`` and ``--from-store``): thresholds,
scores, the RunReport, and the artifact (backbone + head in one TorchScript file, contract v2:
its embedding is the backbone's own while the back end is frozen)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn

from genretag.core.artifact import load_artifact, save_artifact, weights_sha256
from genretag.core.audio.decoders import decoder_info
from genretag.core.device import pick_device
from genretag.core.logs import get_logger
from genretag.schemas import EmbeddingSpec, ModelManifest
from genretag.training.config import TrainConfig
from genretag.training.evaluate import evaluate
from genretag.training.export import ExportError
from genretag.training.features import FeatureSet
from genretag.training.metrics import tune_thresholds
from genretag.training.models import ServingModel
from genretag.training.pretrained.nets import Musicnn
from genretag.training.report import write_run_report
from genretag.training.run_report import BackboneInfo, RunReport
from genretag.training.run_steps import scores
from genretag.training.targets import TargetEncoder

log = get_logger(__name__)
ATOL = 1e-4


def embed_dim(net: nn.Module) -> int:
    """Size of the backbone's embedding (musicnn's dense back end, vgg's last pooling)."""
    if isinstance(net, Musicnn):
        return int(net.dense.out_features)
    return int(net.out.in_features)


def embedding_spec(net: nn.Module, bb_manifest: ModelManifest, own: tuple[str, str] | None
                   ) -> EmbeddingSpec:
    """The transfer artifact's embedding: the backbone's layer (musicnn ``penultimate``, vgg
    ``pool5``) in the backbone's space, or with ``own`` = (name, sha256) the model's own space
    (a fine-tuned back end moved it)."""
    layer = "penultimate" if isinstance(net, Musicnn) else "pool5"
    backbone, sha = own or (bb_manifest.name, bb_manifest.sha256)
    return EmbeddingSpec(name=layer, size=embed_dim(net), backbone=backbone,
                         backbone_sha256=sha)


def export_transfer(model: nn.Module, manifest_fields: dict[str, Any], path: Path,
                    probe: torch.Tensor) -> ModelManifest:
    """Script ServingModel(model), write it with its manifest, reload and compare outputs."""
    serving = ServingModel(model.cpu().eval(), manifest_fields["activation"]).eval()
    scripted = torch.jit.script(serving)
    sha256 = weights_sha256(scripted)
    fields = dict(manifest_fields)
    bb_manifest, fine_tuned = fields.pop("backbone_manifest"), fields.pop("fine_tuned")
    manifest = ModelManifest(
        sha256=sha256, schema_version=2, **fields,
        embedding=embedding_spec(model.net, bb_manifest,
                                 (fields["name"], sha256) if fine_tuned else None))
    save_artifact(scripted, manifest, Path(path))
    loaded, loaded_manifest = load_artifact(Path(path))
    with torch.inference_mode():
        probs, emb = loaded.tag(probe)
        diff = max(float((serving(probe) - loaded(probe)).abs().max()),
                   float((serving(probe) - probs).abs().max()),
                   float((serving.embed(probe) - emb).abs().max()))
    if not diff <= ATOL or loaded_manifest != manifest:
        Path(path).unlink(missing_ok=True)
        raise ExportError(f"{path}: the reloaded artifact differs from the trained model "
                          f"(max diff {diff:.2e})")
    return manifest


@dataclass
class HeadRun:
    """A fitted head and what the run learned on the way (for :func:`finish_head`)."""

    model: nn.Module  # a TransferModel: net, mlp, decide()
    bb_manifest: ModelManifest
    cfg: TrainConfig
    encoder: TargetEncoder
    splits: dict[str, FeatureSet]
    counts: dict[str, int]
    skipped: list[dict[str, str]]
    history: list[dict[str, Any]]
    tune_history: list[dict[str, Any]]
    fine_tuned: bool
    seconds: tuple[float, float, float]  # started, features ready, head fitted (monotonic)
    predict: Callable[[FeatureSet], np.ndarray]  # per-track probabilities of a split
    extra: dict[str, Any] | None = None  # more report fields (e.g. the --from-store counts)


def finish_head(run: HeadRun, out_path: Path, report_dir: Path | None) -> RunReport:
    """Tune thresholds on validation, score the test split, export, write the report."""
    model, cfg, encoder, net, bb = run.model, run.cfg, run.encoder, run.model.net, run.bb_manifest
    labels = encoder.labels
    val, test = run.splits["validation"], run.splits["test"]
    val_probs, test_probs = run.predict(val), run.predict(test)
    thresholds = tune_thresholds(val_probs, encoder.multi_hot(val.items), labels,
                                 cfg.objective)
    test_report = evaluate(test_probs, test.items, encoder, thresholds, seed=cfg.seed)
    val_report = evaluate(val_probs, val.items, encoder, thresholds, seed=cfg.seed)
    started, ready, fitted = run.seconds
    elapsed = time.monotonic() - started
    fields: dict[str, Any] = {
        "config": cfg, "labels": labels, "counts": run.counts,
        "windows": {k: v.n_windows for k, v in run.splits.items()},
        "skipped_count": len(run.skipped), "skipped": run.skipped,
        "history": run.tune_history or run.history, "head_history": run.history,
        "best_epoch": next(h["epoch"] for h in run.history if h.get("selected")),
        "test": test_report,
        **scores(val_report, thresholds, test.items, test_probs, model, test_report),
        "trained_parameters": sum(p.numel() for p in model.mlp.parameters()) + (
            sum(p.numel() for m in (net.pool_bn, net.dense, net.dense_bn)
                for p in m.parameters()) if run.fine_tuned else 0),
        "train_seconds": elapsed, "decode_seconds": ready - started,
        "fit_seconds": fitted - ready, "device": str(pick_device("cpu")),
        "backbone": BackboneInfo(path=str(cfg.backbone), name=bb.name, version=bb.version,
                                 sha256=bb.sha256, frontend=bb.frontend),
        **(run.extra or {}),
    }
    rate, clip = cfg.sample_rate, cfg.clip_seconds
    probe = torch.randn(2, int(round(clip * rate)),
                        generator=torch.Generator().manual_seed(0)) * 0.1
    name = cfg.model
    manifest = export_transfer(model, dict(
        name=name, version=cfg.version or f"{name}-{time.strftime('%Y%m%d%H%M%S')}",
        labels=labels, kinds=dict(cfg.label_kinds),
        activation="softmax" if cfg.objective == "single" else "sigmoid", sample_rate=rate,
        clip_seconds=clip, min_seconds=cfg.min_seconds, frontend=bb.frontend,
        thresholds=thresholds,
        metrics={"test_accuracy": test_report.get("accuracy"),
                 "test_macro_f1": test_report.get("macro_f1"),
                 "validation_accuracy": fields["validation_accuracy"],
                 "train_seconds": round(elapsed, 1), "counts": run.counts,
                 "backbone": bb.name, "backbone_version": bb.version},
        dataset=cfg.dataset, torch_version=torch.__version__,
        torchaudio_version=torchaudio.__version__, decoder=decoder_info(cfg.decoder),
        backbone_manifest=bb, fine_tuned=run.fine_tuned,
    ), out_path, probe)
    report = RunReport(**fields, manifest=manifest, artifact=str(out_path))
    report = write_run_report(report, Path(report_dir or Path(out_path).parent),
                              Path(out_path).stem)
    log.info("train.done", extra={"model": name, "artifact": str(out_path),
                                  "test_accuracy": test_report.get("accuracy"),
                                  "seconds": round(elapsed, 1)})
    return report
