"""Export a trained model as the serving artifact: TorchScript + embedded manifest.

The export is checked end to end: the file is written, loaded back the way the worker loads it
(checksum verified), and its outputs (probabilities and, contract v2, the window embeddings of
``tag``) must equal the eager model's on a probe batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import nn

from genretag.core.logs import get_logger
from genretag.schemas import EmbeddingSpec, ModelManifest
from genretag.training.models import ServingModel
from genretag.core.audio.decoders import DEFAULT_DECODER, decoder_info
from genretag.core.artifact import load_artifact, save_artifact, weights_sha256
from genretag.core.errors import FatalError

log = get_logger(__name__)
ATOL = 1e-4


class ExportError(FatalError):
    """The scripted or reloaded artifact does not reproduce the eager model."""


def export_artifact(model: nn.Module, *, labels: list[str], cfg: Any, thresholds: dict[str, float],
                    metrics: dict[str, Any], version: str, path: Path,
                    probe: torch.Tensor | None = None) -> ModelManifest:
    """Script ``model`` with its activation, write it with the manifest, reload and compare.

    ``probe`` is a ``(batch, clip_samples)`` waveform batch (e.g. validation clips); by default
    two clips of quiet noise. Raises :class:`ExportError` (and removes the file) on a mismatch.
    """
    activation = "softmax" if cfg.objective == "single" else "sigmoid"
    serving = ServingModel(model.cpu().eval(), activation).eval()
    scripted = torch.jit.script(serving)
    clip_samples = int(round(cfg.clip_seconds * cfg.sample_rate))
    if probe is None or len(probe) == 0:
        probe = torch.randn(2, clip_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    probe = probe.float().cpu()
    with torch.inference_mode():
        eager_out, eager_emb = serving(probe), serving.embed(probe)
        _check(eager_out, scripted(probe), "scripted")
        _check(eager_emb, scripted.embed(probe), "scripted embedding")
    sha256 = weights_sha256(scripted)
    manifest = ModelManifest(
        schema_version=2, embedding=EmbeddingSpec(
            name=getattr(model, "embedding_name", "penultimate"), size=int(eager_emb.shape[1]),
            backbone=cfg.model, backbone_sha256=sha256),
        name=cfg.model, version=version, labels=labels, activation=activation,
        sample_rate=cfg.sample_rate, clip_seconds=cfg.clip_seconds, min_seconds=cfg.min_seconds,
        frontend=cfg.frontend, kinds=dict(getattr(cfg, "label_kinds", {})),
        thresholds=thresholds, sha256=sha256,
        metrics=metrics, dataset=cfg.dataset, torch_version=torch.__version__,
        torchaudio_version=torchaudio.__version__,
        decoder=decoder_info(getattr(cfg, "decoder", DEFAULT_DECODER)),
    )
    path = Path(path)
    save_artifact(scripted, manifest, path)
    loaded, loaded_manifest = load_artifact(path)
    with torch.inference_mode():
        diff = _check(eager_out, loaded(probe), "loaded", path)
        probs, emb = loaded.tag(probe)
        _check(eager_out, probs, "loaded tag()", path)
        _check(eager_emb, emb, "loaded embedding", path)
    if loaded_manifest != manifest:
        path.unlink(missing_ok=True)
        raise ExportError(f"{path}: the reloaded manifest differs from the written one")
    log.info("export.ok", extra={"path": str(path), "version": version, "max_abs_diff": diff,
                                 "sha256": manifest.sha256})
    return manifest


def _check(expected: torch.Tensor, actual: torch.Tensor, what: str,
           path: Path | None = None) -> float:
    """Max absolute difference; raises ``ExportError`` above ``ATOL``."""
    if expected.shape != actual.shape:
        diff = float("inf")
    else:
        diff = float((expected - actual).abs().max()) if expected.numel() else 0.0
    if not diff <= ATOL:
        if path is not None:
            path.unlink(missing_ok=True)
        raise ExportError(f"{what} model output differs from eager output (max diff {diff:.2e})")
    return diff
