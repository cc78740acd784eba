"""Export a trained model as the serving artifact: TorchScript + embedded manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import nn

from schemas import ModelManifest
from training.models import ServingModel
from worker.artifact import save_artifact, weights_sha256


def export_artifact(model: nn.Module, *, labels: list[str], cfg: Any, thresholds: dict[str, float],
                    metrics: dict[str, Any], version: str, path: Path) -> ModelManifest:
    """Script ``model`` with its activation, check it matches eager, write it with the manifest."""
    activation = "softmax" if cfg.objective == "single" else "sigmoid"
    serving = ServingModel(model.cpu().eval(), activation).eval()
    scripted = torch.jit.script(serving)
    probe = torch.randn(2, int(round(cfg.clip_seconds * cfg.sample_rate))) * 0.1
    with torch.inference_mode():
        eager_out, script_out = serving(probe), scripted(probe)
    if not torch.allclose(eager_out, script_out, atol=1e-4):
        raise RuntimeError("scripted model output differs from eager output")
    manifest = ModelManifest(
        name=cfg.model, version=version, labels=labels, activation=activation,
        sample_rate=cfg.sample_rate, clip_seconds=cfg.clip_seconds, min_seconds=cfg.min_seconds,
        frontend=cfg.frontend, thresholds=thresholds, sha256=weights_sha256(scripted),
        metrics=metrics, dataset=cfg.dataset, torch_version=torch.__version__,
        torchaudio_version=torchaudio.__version__,
    )
    save_artifact(scripted, manifest, Path(path))
    return manifest
