"""Artifacts for model-set benches and tests: a transfer head on a backbone artifact, exported
through the training's own export (contract v2, the backbone inside), without a training run.

The head's weights are seeded random (a throughput or sharing check does not depend on them);
``train --backbone`` writes the same kind of file with fitted weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio

from genretag.core.audio.decoders import decoder_info
from genretag.schemas import ModelManifest
from genretag.training.head_export import export_transfer
from genretag.training.transfer import TransferModel, load_backbone


def head_on(backbone: Path, labels: list[str], out: Path, *, name: str = "genres",
            seed: int = 0, threshold: float = 0.5) -> ModelManifest:
    """Export a ``name`` head with ``labels`` on ``backbone`` (frozen: the backbone's space),
    every label decided at ``threshold``."""
    net, bb = load_backbone(Path(backbone))
    torch.manual_seed(seed)
    model = TransferModel(net, len(labels)).eval()
    probe = torch.randn(2, bb.clip_samples, generator=torch.Generator().manual_seed(seed)) * 0.1
    return export_transfer(model, dict(
        name=name, version=f"{name}-{seed}", labels=labels, kinds={}, activation="softmax",
        sample_rate=bb.sample_rate, clip_seconds=bb.clip_seconds, min_seconds=bb.min_seconds,
        frontend=bb.frontend, thresholds={x: threshold for x in labels}, metrics={},
        dataset="none (seeded head)", torch_version=torch.__version__,
        torchaudio_version=torchaudio.__version__, decoder=decoder_info("libav"),
        backbone_manifest=bb, fine_tuned=False), Path(out), probe)
