"""A musicnn-shaped backbone artifact with random weights and batch-norm statistics: small enough
for tests, built by the port's own classes and saved as a pretrained artifact would be."""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio

from genretag.core.artifact import save_artifact, weights_sha256
from genretag.schemas import LogMelParams, ModelManifest
from genretag.training.pretrained.convert import PretrainedTagger
from genretag.training.pretrained.nets import Musicnn

BACKBONE_LABELS = ["rock", "calm", "guitar"]


def backbone_artifact(path: Path, frontend=None, name: str = "tiny-musicnn") -> Path:
    """A musicnn-shaped network (the port's classes) with random weights and BN statistics."""
    torch.manual_seed(0)
    net = Musicnn(len(BACKBONE_LABELS), midend=8, backend=16, frontend_scale=0.1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    scripted = torch.jit.script(PretrainedTagger(net.eval()).eval())
    manifest = ModelManifest(
        name=name, version="tiny-1", labels=BACKBONE_LABELS,
        kinds={"calm": "mood", "guitar": "instrument"}, activation="sigmoid",
        sample_rate=16000, clip_seconds=3.0, frontend=frontend or LogMelParams(),
        thresholds={x: 0.5 for x in BACKBONE_LABELS}, sha256=weights_sha256(scripted),
        torch_version=torch.__version__, torchaudio_version=torchaudio.__version__)
    return save_artifact(scripted, manifest, path)
