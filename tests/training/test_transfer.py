"""Transfer learning: a head on a (tiny, random-weight, musicnn-shaped) backbone artifact,
trained on generated audio, exported as one artifact that the worker's Tagger serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from genretag.core.artifact import ArtifactError, load_artifact, save_artifact, weights_sha256
from genretag.core.audio.decoders import open_decoder
from genretag.core.audio.windows import make_windows
from genretag.cli import main as genretag_main
from genretag.schemas import FrontendParams, LogMelParams, ModelManifest
from genretag.training.auto import export_best
from genretag.training.config import TrainConfig
from genretag.training.features import decode_track
from genretag.training.pretrained.convert import PretrainedTagger
from genretag.training.pretrained.logmel import LogMel
from genretag.training.pretrained.nets import Musicnn, Vgg
from genretag.training.run_report import RunReport
from genretag.training.synth import make_synth_dataset
from genretag.training.transfer import BackboneError, load_backbone, train_transfer
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection

pytestmark = [pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"), pytest.mark.heavy]
BACKBONE_LABELS = ["rock", "calm", "guitar"]


def _backbone_artifact(path: Path, frontend=None) -> Path:
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
        name="tiny-musicnn", version="tiny-1", labels=BACKBONE_LABELS,
        kinds={"calm": "mood", "guitar": "instrument"}, activation="sigmoid",
        sample_rate=16000, clip_seconds=3.0, frontend=frontend or LogMelParams(),
        thresholds={x: 0.5 for x in BACKBONE_LABELS}, sha256=weights_sha256(scripted),
        torch_version=torch.__version__, torchaudio_version=torchaudio.__version__)
    return save_artifact(scripted, manifest, path)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return _backbone_artifact(tmp_path_factory.mktemp("bb") / "tiny.pt")


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return make_synth_dataset(tmp_path_factory.mktemp("synth"), per_class=6, seconds=4.0,
                              workers=2, labels=["ambient", "chiptune", "noise"])


def _cfg(backbone: Path, **kw) -> TrainConfig:
    """The transfer preset's fit settings (epochs 40, lr 1e-3, batch 64, patience 8) on the
    small synthetic set: 2 decoders, training windows every 0.5 s."""
    fields = dict(model="transfer", backbone=backbone, dataset="synth", decode_workers=2,
                  train_hop_seconds=0.5, epochs=40, lr=1e-3, batch_size=64, patience=8)
    return TrainConfig(**{**fields, **kw})


@pytest.fixture(scope="module")
def frozen(backbone, items, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "transfer.pt"
    cache = out.parent / "cache"
    report = train_transfer(items, _cfg(backbone), out, cache_dir=cache)
    return out, report, cache


def test_pooled_and_tail_compose_to_the_embedding() -> None:
    """The split used for caching does not change the port's outputs (parity stays intact)."""
    torch.manual_seed(1)
    net = Musicnn(4, midend=8, backend=16, frontend_scale=0.1).eval()
    x = torch.randn(3, 187, 96)
    with torch.inference_mode():
        assert torch.equal(net.tail(net.pooled(x)), net.embed(x))
        assert net.pooled(x).shape == (3, 2 * (2 * 12 + 3 * 3 + 3 * 8))


def test_load_backbone_rebuilds_the_artifact_network(backbone) -> None:
    net, manifest = load_backbone(backbone)
    module, _ = load_artifact(backbone)
    wave = torch.randn(2, 48000, generator=torch.Generator().manual_seed(2)) * 0.2
    with torch.inference_mode():
        np.testing.assert_allclose(torch.sigmoid(net(LogMel()(wave))).numpy(),
                                   module(wave).numpy(), atol=1e-6)
    assert manifest.name == "tiny-musicnn"


def test_mfcc_artifact_is_refused_as_backbone(tmp_path) -> None:
    path = _backbone_artifact(tmp_path / "mfcc.pt", frontend=FrontendParams())
    with pytest.raises(BackboneError, match="not a pretrained backbone"):
        load_backbone(path)
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(ArtifactError):
        load_backbone(tmp_path / "junk.pt")


def test_export_serves_through_the_worker_tagger(frozen, backbone, items) -> None:
    """Backbone + head in one file; the worker's Tagger on real decoded audio gives the
    probabilities training reported for the same test track; the backbone is unchanged."""
    out, report, _ = frozen
    module, manifest = load_artifact(out)
    assert manifest.labels == ["ambient", "chiptune", "noise"]
    assert manifest.kinds == {} and {manifest.kind_of(x) for x in manifest.labels} == {"genre"}
    assert (manifest.sample_rate, manifest.clip_seconds) == (16000, 3.0)
    assert isinstance(manifest.frontend, LogMelParams) and manifest.activation == "softmax"
    assert manifest.metrics["backbone"] == "tiny-musicnn"
    bb_state = load_artifact(backbone)[0].state_dict()
    for key, value in module.state_dict().items():
        if key.startswith("model.net."):
            assert torch.equal(value, bb_state[key[len("model."):]]), key
    tagger = Tagger.load(ModelSection(path=out, device="cpu"))
    item_id = report.test_predictions.item_ids[0]
    expected = np.array(report.test_predictions.probs[0])
    item = next(i for i in items if i.item_id == item_id)
    decoder = open_decoder("libav", 1)  # the worker's decoder, which training used
    try:
        wave = decode_track(item.path, 16000, 12.0, 1.0, decoder=decoder)
    finally:
        decoder.close()
    windows = make_windows(wave, manifest.clip_samples, 4)
    probs = tagger.predict([windows])[0]
    assert probs.shape == (3,) and abs(probs.sum() - 1) < 1e-4
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_head_learns_and_embeddings_are_cached(frozen, backbone, items, tmp_path) -> None:
    out, report, cache = frozen
    assert report.counts == {"training": 12, "validation": 3, "test": 3}
    # the same TrainConfig as every kind; rate and clip are the backbone's, named in the report
    assert (report.config.sample_rate, report.config.clip_seconds) == (16000, 3.0)
    assert report.backbone.name == "tiny-musicnn"
    assert report.backbone.sha256 == load_artifact(backbone)[1].sha256
    saved = json.loads(Path(report.files["json"]).read_text())
    assert saved["backbone"]["version"] == "tiny-1" and "test_whole_track_windows" not in saved
    selected = next(h for h in report.head_history if h.get("selected"))
    assert selected["train_accuracy"] > 0.6  # three classes: chance is 1/3
    files = sorted(cache.glob("feats-*.f32"))
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    again = train_transfer(items, _cfg(backbone), tmp_path / "again.pt", cache_dir=cache)
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("feats-*.f32"))] == stamps
    assert again.test_predictions == report.test_predictions


def test_fine_tune_moves_only_the_dense_back_end(backbone, items, frozen, tmp_path) -> None:
    _, _, cache = frozen
    out = tmp_path / "ft.pt"
    report = train_transfer(items, _cfg(backbone, model="transfer-ft", epochs=5, lr=1e-2,
                                        patience=5), out, cache_dir=cache)
    assert report.config.model == "transfer-ft" and 1 <= len(report.history) <= 5
    tuned = load_artifact(out)[0].state_dict()
    original = load_artifact(backbone)[0].state_dict()
    assert torch.equal(tuned["model.net.timbral.0.conv.weight"],
                       original["net.timbral.0.conv.weight"])
    assert torch.equal(tuned["model.net.dense_bn.running_mean"],
                       original["net.dense_bn.running_mean"])
    assert not torch.equal(tuned["model.net.dense.weight"], original["net.dense.weight"])
    spec = load_artifact(out)[1].embedding  # a tuned back end embeds in its own space
    assert spec.backbone == "transfer-ft" and spec.backbone_sha256 == load_artifact(out)[1].sha256


def test_frozen_head_embeds_in_the_backbones_space(frozen, backbone) -> None:
    """Contract v2: the transfer artifact's embedding is the backbone's own penultimate layer
    (the backbone here is a schema-1 artifact: it still serves, with no embedding of its own)."""
    out, _, _ = frozen
    module, manifest = load_artifact(out)
    bb_manifest = load_artifact(backbone)[1]
    assert bb_manifest.schema_version == 1 and bb_manifest.embedding is None
    spec = manifest.embedding
    assert manifest.schema_version == 2 and spec.name == "penultimate" and spec.size == 16
    assert (spec.backbone, spec.backbone_sha256) == ("tiny-musicnn", bb_manifest.sha256)
    net, _ = load_backbone(backbone)
    x = torch.randn(3, 48000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        probs, z = module.tag(x)
        np.testing.assert_allclose(z.numpy(), net.embed(LogMel()(x)).numpy(), atol=1e-5)
        np.testing.assert_allclose(probs.numpy(), module(x).numpy(), atol=1e-6)
        np.testing.assert_allclose(module.head(z).numpy(), probs.numpy(), atol=1e-6)
    assert Tagger.load(ModelSection(path=backbone, device="cpu"), calibrate=False
                       ).infer_windows([x.numpy()])[1] is None


def test_cli_backbone_run_and_compare(backbone, items, frozen, tmp_path, capsys) -> None:
    """``train --backbone`` via a labels CSV, then `train compare` lists it; auto's choice
    takes the transfer candidate into account."""
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\n" + "".join(
        f"{i.path},{i.labels[0]},{i.split}\n" for i in items))
    runs = tmp_path / "runs"
    assert genretag_main(["train", "--labels", str(csv), "--backbone", str(backbone),
                          "--runs-dir", str(runs), "--workers", "2", "--no-progress",
                          "--kind", "noise=other", "--train-hop-seconds", "0.5",
                          "--decoder", "ffmpeg"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "transfer" and summary["test_accuracy"] is not None
    _, manifest = load_artifact(Path(summary["artifact"]))
    assert manifest.kinds == {"noise": "other"}
    assert manifest.decoder is not None and manifest.decoder.name == "ffmpeg"  # --decoder used
    assert genretag_main(["train", "compare", str(runs)]) == 0
    assert "transfer" in capsys.readouterr().out
    report = RunReport.model_validate_json(Path(summary["report"]).read_text())
    weak = report.model_copy(update={"validation_accuracy": 0.0, "artifact": summary["artifact"]})
    _, best = export_best({"logreg": weak, "transfer": report}, tmp_path / "auto.pt")
    assert best.auto.selected == "transfer"
    assert genretag_main(["train", "--demo", "--backbone", str(backbone)]) == 2
    assert "--backbone needs" in capsys.readouterr().err


def test_auto_trains_the_backbone_candidate_too(backbone, items, tmp_path, capsys) -> None:
    """`--arch auto --backbone`: the transfer model is one of the candidates in the table."""
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\n" + "".join(
        f"{i.path},{i.labels[0]},{i.split}\n" for i in items))
    fast = ["--sample-rate", "16000", "--clip-seconds", "3", "--train-seconds", "4",
            "--n-fft", "512", "--hop-length", "256", "--n-mels", "40", "--chunk-frames", "32",
            "--batch-size", "8", "--epochs", "1", "--workers", "2", "--device", "cpu"]
    assert genretag_main(["train", "--labels", str(csv), "--arch", "auto", "--backbone",
                          str(backbone), "--runs-dir", str(tmp_path / "runs"), "--no-progress",
                          "--train-hop-seconds", "1", *fast]) == 0
    out = capsys.readouterr().out
    auto = json.loads(next(line for line in out.splitlines() if '"auto"' in line))
    report = json.loads(Path(auto["report"]).read_text())
    models = [row["model"] for row in report["auto"]["candidates"]]
    assert models[-1] == "transfer" and "tdcnn" in models and "logreg" in models
    assert report["auto"]["selected"] in models
    assert "transfer" in Path(report["files"]["candidates"]).read_text()


def test_fine_tune_of_a_vgg_backbone_is_refused_before_decoding(items, tmp_path) -> None:
    net = Vgg(2, filters=4, flat=8).eval()
    scripted = torch.jit.script(PretrainedTagger(net).eval())
    manifest = ModelManifest(
        name="tiny-vgg", version="1", labels=["a", "b"], sample_rate=16000, clip_seconds=3.0,
        frontend=LogMelParams(), thresholds={"a": 0.5, "b": 0.5},
        sha256=weights_sha256(scripted))
    path = save_artifact(scripted, manifest, tmp_path / "vgg.pt")
    loaded, _ = load_backbone(path)
    assert isinstance(loaded, Vgg)
    with pytest.raises(BackboneError, match="needs a musicnn backbone"):
        train_transfer(items, TrainConfig(model="transfer-ft", backbone=path),
                       tmp_path / "x.pt", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_windows_are_checked_against_the_backbones_clip(backbone, items, tmp_path) -> None:
    with pytest.raises(BackboneError, match="backbone's 3.0 s clip: train_seconds must not"):
        train_transfer(items, _cfg(backbone, train_seconds=2.0), tmp_path / "x.pt",
                       cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
