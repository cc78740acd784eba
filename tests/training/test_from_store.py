"""``train --labels CSV --from-store``: a head fit on the embeddings the worker stored, no
decoding; rows without a vector in the backbone's space are reported; same report and artifact
as ``--backbone``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from genretag.cli import main as genretag_main
from genretag.core.artifact import load_artifact, save_artifact, weights_sha256
from genretag.core.trackids import path_track_id
from genretag.core.settings import RedisSection, load_settings
from genretag.core.store import EmbeddingWriter, KeyLayout, TrackVector, connect
from genretag.schemas import EmbeddingSpec, LogMelParams, ModelManifest
from genretag.training.pretrained.convert import PretrainedTagger
from genretag.training.pretrained.nets import Musicnn
from genretag.training.synth import make_synth_dataset
from genretag.worker.oneshot import tag_files
from genretag.worker.settings import WorkerSettings

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")]
LABELS = ["rock", "calm", "guitar"]


def v2_backbone(path: Path) -> Path:
    """A tiny musicnn-shaped tagger with random weights, written as a schema-2 artifact."""
    torch.manual_seed(0)
    net = Musicnn(len(LABELS), midend=8, backend=16, frontend_scale=0.1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    scripted = torch.jit.script(PretrainedTagger(net.eval()).eval())
    sha = weights_sha256(scripted)
    manifest = ModelManifest(
        schema_version=2, name="tiny-musicnn", version="tiny-2", labels=LABELS,
        activation="sigmoid", sample_rate=16000, clip_seconds=3.0, frontend=LogMelParams(),
        thresholds={x: 0.5 for x in LABELS}, sha256=sha,
        embedding=EmbeddingSpec(name="penultimate", size=16, backbone="tiny-musicnn",
                                backbone_sha256=sha),
        torch_version=torch.__version__, torchaudio_version=torchaudio.__version__)
    return save_artifact(scripted, manifest, path)


@pytest.fixture(scope="module")
def stored(stack, tmp_path_factory):
    """Synthetic clips embedded by the worker's own path with the backbone and stored like the
    embeddings sink stores them; one clip left unstored, one stored in another space."""
    root = tmp_path_factory.mktemp("fromstore")
    backbone = v2_backbone(root / "tiny.pt")
    items = make_synth_dataset(root / "audio", per_class=6, seconds=4.0, workers=2,
                               labels=["ambient", "chiptune", "noise"])
    settings = load_settings(WorkerSettings, model_path=backbone, device="cpu",
                             allowed_roots=[str(root)], decode_workers=2)
    outcomes = tag_files([(path_track_id(i.path), i.path) for i in items], settings)
    redis = RedisSection(url=stack.redis_url, key_prefix="fromstore:")
    space = load_artifact(backbone)[1].embedding.space
    writer = EmbeddingWriter(connect(redis, binary=True), KeyLayout(redis.key_prefix))
    unstored, elsewhere = items[0], items[1]
    writer.write(TrackVector(o.record.track_id, o.embedding,
                             "other.pooled.000000000000" if i is elsewhere else space, "tiny-2")
                 for i, o in zip(items, outcomes, strict=True) if i is not unstored)
    labels_csv = root / "labels.csv"
    with open(labels_csv, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "split"])
        for i in items:
            out.writerow([str(i.path), i.labels[0], i.split])
    return backbone, labels_csv, redis, items, (unstored, elsewhere)


def test_from_store_fits_without_decoding_and_reports_missing(stored, tmp_path, capsys) -> None:
    backbone, labels_csv, redis, items, (unstored, elsewhere) = stored
    for i in items:  # nothing to decode: the audio may be gone
        i.path.rename(i.path.with_suffix(".gone"))
    try:
        out = tmp_path / "head.pt"
        code = genretag_main(["train", "--labels", str(labels_csv), "--from-store",
                              "--backbone", str(backbone), "--out", str(out), "--no-progress",
                              "--redis-url", redis.url, "--redis-key-prefix", redis.key_prefix])
    finally:
        for i in items:
            i.path.with_suffix(".gone").rename(i.path)
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["from_store"] == {"found": len(items) - 2, "missing": 2}
    report = json.loads(Path(line["report"]).read_text())
    assert report["decode_seconds"] < 30 and report["from_store"]["missing"] == 2
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons[str(unstored.path)] == "no stored embedding"
    assert reasons[str(elsewhere.path)].startswith("stored in another space")
    assert sum(report["counts"].values()) == len(items) - 2
    selected = next(h for h in report["head_history"] if h.get("selected"))
    assert selected["train_accuracy"] > 0.6  # three classes: chance is 1/3
    module, manifest = load_artifact(out)
    bb = load_artifact(backbone)[1]
    assert manifest.embedding.space == bb.embedding.space  # same space as the stored vectors
    assert manifest.labels == ["ambient", "chiptune", "noise"]
    x = torch.randn(2, 48000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        probs, z = module.tag(x)
        np.testing.assert_allclose(z.numpy(), load_artifact(backbone)[0].embed(x).numpy(),
                                   atol=1e-5)
    assert probs.shape == (2, 3)


def test_from_store_needs_a_frozen_backbone_head(stored, capsys) -> None:
    _, labels_csv, _, _, _ = stored
    assert genretag_main(["train", "--labels", str(labels_csv), "--from-store"]) == 2  # usage
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genretag train: --from-store needs --backbone")
