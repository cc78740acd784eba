"""Artifact contract v2: every exported kind gives probabilities and one embedding per window
from one pass, the same on every run, with tags unchanged; schema-1 artifacts serve as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from genretag.core.artifact import ArtifactError, load_artifact, save_artifact, weights_sha256
from genretag.schemas import EmbeddingSpec, FrontendParams, ModelManifest
from genretag.training.baselines import Cnn2d, LstmClassifier, StatsClassifier
from genretag.training.config import TrainConfig
from genretag.training.export import export_artifact
from genretag.training.models import SeedEnsemble, TimeDistributedCNN
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection

pytestmark = pytest.mark.heavy  # scripts and exports five models (~45 s)

LABELS = ["a", "b", "c"]
CFG = TrainConfig(clip_seconds=2.0, frontend=FrontendParams(chunk_frames=16), device="cpu",
                  objective="single")
FP, RATE = CFG.frontend, CFG.sample_rate


def kinds() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "tdcnn": TimeDistributedCNN(3, RATE, FP, channels=(4, 8), stats=True),
        "logreg": StatsClassifier(3, RATE, FP),
        "cnn": Cnn2d(3, RATE, FP, channels=(4, 8)),
        "lstm": LstmClassifier(3, RATE, FP, hidden=8),
        "ensemble": SeedEnsemble([TimeDistributedCNN(3, RATE, FP, channels=(4, 8)),
                                  TimeDistributedCNN(3, RATE, FP, channels=(4, 6))]),
    }


def windows(n: int = 5, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(CFG.clip_seconds * RATE)) / RATE
    return np.stack([0.3 * np.sin(2 * np.pi * (110 + 60 * k) * t) + 0.05 * rng.standard_normal(
        len(t)) for k in range(n)]).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    out = {}
    folder = tmp_path_factory.mktemp("v2")
    for name, model in kinds().items():
        model.eval()
        export_artifact(model, labels=LABELS, cfg=CFG, thresholds={x: 0.4 for x in LABELS},
                        metrics={}, version=f"{name}-1", path=folder / f"{name}.pt")
        out[name] = folder / f"{name}.pt"
    return out


@pytest.mark.parametrize("name", ["tdcnn", "logreg", "cnn", "lstm", "ensemble"])
def test_every_kind_exports_an_embedding_with_unchanged_tags(exported, name) -> None:
    module, manifest = load_artifact(exported[name])
    spec = manifest.embedding
    assert manifest.schema_version == 2 and spec is not None
    assert spec.backbone_sha256 == manifest.sha256 and spec.pooling == "mean"
    x = torch.from_numpy(windows())
    with torch.inference_mode():
        probs, z = module.tag(x)
        assert z.shape == (len(x), spec.size)
        assert torch.allclose(probs, module(x), atol=1e-6)
        assert torch.allclose(module.head(module.embed(x)), module(x), atol=1e-6)
    a = Tagger.load(ModelSection(path=exported[name], device="cpu"), calibrate=False)
    b = Tagger.load(ModelSection(path=exported[name], device="cpu"), calibrate=False)
    per_track = [windows(3, 2), windows(2, 3)]
    probs_a, emb_a = a.infer_windows(per_track)
    probs_b, emb_b = b.infer_windows(per_track)
    for pa, pb, ea, eb in zip(probs_a, probs_b, emb_a, emb_b, strict=True):
        assert np.array_equal(ea, eb) and np.array_equal(pa, pb)  # the same on every run
    plain = a.predict_windows(per_track)  # forward only: the tags a schema-1 path gives
    for p, q in zip(plain, probs_a, strict=True):
        assert np.allclose(p, q, atol=1e-6)
        assert a.labels_over_threshold(p.mean(0)) == a.labels_over_threshold(q.mean(0))


def test_embedding_names(exported) -> None:
    names = {k: load_artifact(p)[1].embedding.name for k, p in exported.items()}
    assert names == {"tdcnn": "pooled", "logreg": "stats", "cnn": "pooled", "lstm": "lstm",
                     "ensemble": "members"}


def test_schema_one_artifact_serves_unchanged(tmp_path: Path) -> None:
    """An artifact written before v2 (forward only, no embedding in its manifest)."""

    class Old(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(int(2.0 * RATE), 3)

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.lin(wave))

    torch.manual_seed(0)
    scripted = torch.jit.script(Old().eval())
    manifest = ModelManifest(version="old-1", labels=LABELS, sample_rate=RATE, clip_seconds=2.0,
                             thresholds={x: 0.5 for x in LABELS}, sha256=weights_sha256(scripted))
    raw = json.loads(manifest.model_dump_json())
    assert raw["schema_version"] == 1 and raw["embedding"] is None
    path = save_artifact(scripted, manifest, tmp_path / "old.pt")
    tagger = Tagger.load(ModelSection(path=path, device="cpu"), calibrate=False)
    probs, emb = tagger.infer_windows([windows(2)])
    assert emb is None and probs[0].shape == (2, 3)
    with torch.inference_mode():
        assert np.allclose(probs[0], scripted(torch.from_numpy(windows(2))).numpy(), atol=1e-6)
    old_json = {k: v for k, v in raw.items() if k != "embedding"}  # as a v1 writer wrote it
    assert ModelManifest.model_validate(old_json).embedding is None


def test_manifest_pairs_schema_two_with_an_embedding() -> None:
    base = dict(version="x", labels=LABELS, sample_rate=RATE, clip_seconds=2.0,
                thresholds={x: 0.5 for x in LABELS}, sha256="0" * 64)
    spec = EmbeddingSpec(name="pooled", size=8, backbone="tdcnn", backbone_sha256="1" * 64)
    assert spec.space == "tdcnn.pooled.111111111111"
    with pytest.raises(ValidationError, match="schema_version 2"):
        ModelManifest(**base, embedding=spec)
    with pytest.raises(ValidationError, match="schema_version 2"):
        ModelManifest(**base, schema_version=2)
    assert ModelManifest(**base, schema_version=2, embedding=spec).embedding == spec


def test_a_manifest_promising_an_embedding_needs_the_methods(exported, tmp_path: Path) -> None:
    module, manifest = load_artifact(exported["logreg"])

    class ForwardOnly(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            return self.inner(wave)

    scripted = torch.jit.script(ForwardOnly(module))
    fake = manifest.model_copy(update={"sha256": weights_sha256(scripted)})
    path = save_artifact(scripted, fake, tmp_path / "liar.pt")
    with pytest.raises(ArtifactError, match="lacks tag, embed, head"):
        load_artifact(path)
