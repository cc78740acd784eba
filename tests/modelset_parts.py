"""A model set for tests: a tiny musicnn-shaped backbone artifact (contract v2, random weights)
and transfer heads exported on it (:func:`bench.modelset_models.head_on`), all real artifacts."""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio

from genretag.core.artifact import save_artifact, weights_sha256
from genretag.schemas import EmbeddingSpec, LogMelParams, ModelManifest
from genretag.training.pretrained.convert import PretrainedTagger
from genretag.training.pretrained.nets import Musicnn

BACKBONE_LABELS = ["rock", "calm", "guitar"]
HEAD_LABELS = ["ambient", "chiptune", "noise"]


def tiny_backbone(path: Path, name: str = "tiny-musicnn", seed: int = 0,
                  claimed: tuple[str, str] | None = None) -> Path:
    """A musicnn-shaped tagger with random weights and BN statistics, 16 kHz × 3 s windows,
    whose embedding (``penultimate``) is its own: what ``models pull musicnn-msd`` writes.
    ``claimed`` = (backbone, sha256): a manifest that names another model's space instead."""
    torch.manual_seed(seed)
    net = Musicnn(len(BACKBONE_LABELS), midend=8, backend=16, frontend_scale=0.1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    scripted = torch.jit.script(PretrainedTagger(net.eval()).eval())
    sha = weights_sha256(scripted)
    manifest = ModelManifest(
        schema_version=2, name=name, version=f"{name}-1", labels=BACKBONE_LABELS,
        kinds={"calm": "mood", "guitar": "instrument"}, activation="sigmoid",
        sample_rate=16000, clip_seconds=3.0, frontend=LogMelParams(),
        thresholds={x: 0.3 for x in BACKBONE_LABELS}, sha256=sha,
        embedding=EmbeddingSpec(name="penultimate", size=16, backbone=(claimed or (name, sha))[0],
                                backbone_sha256=(claimed or (name, sha))[1]),
        torch_version=torch.__version__, torchaudio_version=torchaudio.__version__)
    return save_artifact(scripted, manifest, path)
