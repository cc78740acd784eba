"""The model registry: a new kind is one ``register`` call; the CLI, presets, trainer, export and
serving pick it up with no other edit. Plus the registry's rules and the documented presets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genretag.cli import build_parser
from genretag.cli import main as genretag_main
from genretag.core.artifact import load_artifact
from genretag.core.audio.decoders import open_decoder
from genretag.core.audio.windows import make_windows
from genretag.schemas import FrontendParams
from genretag.training.baselines import StatsClassifier
from genretag.training.features import decode_track
from genretag.training.models import WaveformClassifier
from genretag.training.presets import DEMO, REAL_DATA, resolve_config
from genretag.training.registry import (
    DEFAULT_KIND,
    ModelSpec,
    choose_kinds,
    get_spec,
    kind_names,
    register,
    specs,
    unregister,
)
from genretag.training.run_report import RunReport
from genretag.training.synth import make_synth_dataset
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
SR = 16000


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


class MeanMfccLinear(WaveformClassifier):
    """Each MFCC row's mean over time → one linear layer: the smallest trainable kind."""

    def __init__(self, n_labels: int, sample_rate: int, frontend: FrontendParams) -> None:
        super().__init__(n_labels, sample_rate, frontend)
        self.out = nn.Linear(self.frontend.channels * frontend.n_mfcc, n_labels)

    def represent(self, feats: torch.Tensor) -> torch.Tensor:  # the embedding (contract v2)
        return feats.mean(dim=-1).flatten(1)

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(z)


#: Two extra kinds, one per recipe a from-scratch model can take; their presets are theirs.
EXTRA = {
    "tiny-sgd": ModelSpec(
        "tiny-sgd", "mean MFCC per row, one linear layer (a test kind)",
        lambda cfg, n: MeanMfccLinear(n, cfg.sample_rate, cfg.frontend), "adamw",
        preset={"clip_seconds": 2.0, "epochs": 3, "batch_size": 8, "mixup": 0.0}),
    "tiny-mlp": ModelSpec(
        "tiny-mlp", "MFCC statistics, an 8-unit MLP fit by LBFGS (a test kind)",
        lambda cfg, n: StatsClassifier(n, cfg.sample_rate, cfg.frontend, (8,)), "lbfgs",
        preset={"clip_seconds": 2.0, "c": 1.0}),
}


@pytest.fixture
def extra_kind(request):
    spec = register(EXTRA[request.param])
    yield spec
    unregister(spec.name)


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    clips = make_synth_dataset(root, per_class=6, seconds=3.0, workers=2,
                               labels=["ambient", "noise"])
    csv = root / "labels.csv"
    csv.write_text("path,label,split\n" + "".join(
        f"{c.path},{c.labels[0]},{c.split}\n" for c in clips))
    return csv


@needs_ffmpeg
@pytest.mark.parametrize("extra_kind", list(EXTRA), indirect=True)
def test_a_registered_kind_trains_exports_and_serves_with_no_other_edit(
        extra_kind, labels_csv, tmp_path, capsys) -> None:
    """Registered here, nowhere else: `train --help` lists it, `--arch all` includes it, its
    preset applies, the trainer builds and fits it by its recipe, the artifact carries its
    name, and the worker's Tagger reproduces the report's test probabilities."""
    name = extra_kind.name
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert f"{name} {extra_kind.help}" in " ".join(capsys.readouterr().out.split())
    assert name in choose_kinds("all", backbone=False, fine_tune=False)
    runs = tmp_path / "runs"
    assert genretag_main(["train", "--labels", str(labels_csv), "--arch", name, "--runs-dir",
                          str(runs), "--no-progress", "--sample-rate", str(SR), "--n-fft", "512",
                          "--hop-length", "256", "--n-mels", "40", "--workers", "2",
                          "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == name and summary["test_accuracy"] is not None
    report = RunReport.model_validate_json(Path(summary["report"]).read_text())
    assert report.config.clip_seconds == 2.0  # the kind's own preset
    if extra_kind.recipe == "adamw":
        assert report.config.epochs == 3 and 1 <= len(report.history) <= 3
    else:  # LBFGS: one fit at the preset's C
        assert [h["C"] for h in report.history] == [1.0] and report.history[0]["selected"]
    module, manifest = load_artifact(Path(summary["artifact"]))
    assert manifest.name == name and manifest.clip_seconds == 2.0
    assert manifest.labels == ["ambient", "noise"]
    tagger = Tagger.load(ModelSection(path=Path(summary["artifact"]), device="cpu"))
    decoder = open_decoder("libav", 1)  # the worker's decoder, which training used
    try:  # a CSV row's id is its path
        for item_id, expected in zip(report.test_predictions.item_ids,
                                     report.test_predictions.probs, strict=True):
            wave = decode_track(Path(item_id), SR, 2.0 * 4, 1.0, decoder=decoder)
            probs = tagger.predict([make_windows(wave, manifest.clip_samples, 4)])[0]
            np.testing.assert_allclose(probs, expected, atol=1e-4)
    finally:
        decoder.close()


def test_registration_rules() -> None:
    spec = get_spec("logreg")
    for bad in ("all", "auto", "Tiny", "a,b", ""):
        with pytest.raises(ValueError, match="must match"):
            register(ModelSpec(bad, "x", spec.build, "lbfgs"))
    with pytest.raises(ValueError, match="already registered"):
        register(spec)
    with pytest.raises(ValueError, match="recipe"):
        register(ModelSpec("odd", "x", spec.build, "sgd"))  # type: ignore[arg-type]
    assert "odd" not in kind_names()
    with pytest.raises(ValueError, match="unknown model 'svm'"):
        get_spec("svm")


def test_kind_choice() -> None:
    scratch = [s.name for s in specs() if not s.needs_backbone]
    assert choose_kinds(None, False, False) == [DEFAULT_KIND]
    assert choose_kinds(None, True, False) == ["transfer"]
    assert choose_kinds(None, True, True) == ["transfer-ft"]
    assert choose_kinds("all", False, False) == scratch == ["tdcnn", "logreg", "dense", "cnn",
                                                            "lstm"]
    assert choose_kinds("auto", True, False) == [*scratch, "transfer"]
    assert choose_kinds("auto", True, True) == [*scratch, "transfer", "transfer-ft"]  # compared
    assert choose_kinds("all", True, True) == [*scratch, "transfer-ft"]
    assert choose_kinds("cnn, logreg,cnn", False, False) == ["cnn", "logreg"]
    assert choose_kinds("transfer,logreg", True, True) == ["transfer-ft", "logreg"]
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['svm'\]"):
        choose_kinds("logreg,svm", False, False)
    assert get_spec("tdcnn").seeds and not get_spec("logreg").seeds
    assert get_spec("transfer").needs_backbone and not get_spec("cnn").needs_backbone


def test_presets_keep_their_documented_values(tmp_path) -> None:
    """docs/guides/training.md: the real-data and demo presets, per kind."""
    real = {k: resolve_config(k, {}, objective="single", dataset="d")
            for k in kind_names() if not get_spec(k).needs_backbone}
    for cfg in real.values():
        assert (cfg.epochs, cfg.patience, cfg.mixup, cfg.decode_workers) == (40, 8, 0.2, 8)
        assert (cfg.sample_rate, cfg.frontend.n_fft, cfg.frontend.hop_length) == (22050, 2048, 512)
        assert (cfg.frontend.n_mels, cfg.frontend.n_mfcc, cfg.lr) == (128, 20, 3e-3)
    td = real["tdcnn"]
    assert (td.clip_seconds, td.channels, td.frontend.deltas, td.frontend.rhythm) == (
        10.0, (16, 32, 64), 1, True)
    assert td.stats_branch and td.epoch_windows == 1 and td.crop_seconds is None
    for k in ("logreg", "dense", "cnn", "lstm"):
        cfg = real[k]
        assert (cfg.clip_seconds, cfg.channels, cfg.frontend.deltas) == (30.0, (32, 64, 128), 0)
        assert not cfg.frontend.rhythm and not cfg.stats_branch and cfg.epoch_windows == 0
        assert cfg.crop_seconds == (25.0 if k in ("cnn", "lstm") else None)
    # cnn/lstm crop 25 s of clips of 30 s or more only; a crop longer than the clip is dropped
    assert resolve_config("cnn", {"clip_seconds": 28.0}, objective="single",
                          dataset="d").crop_seconds is None
    assert resolve_config("tdcnn", {"crop_seconds": 12.0}, objective="single",
                          dataset="d").crop_seconds is None
    assert resolve_config("logreg", {"ensemble": 3}, objective="single", dataset="d").ensemble == 1
    assert resolve_config("cnn", {"ensemble": 3}, objective="single", dataset="d").ensemble == 3
    backbone = tmp_path / "bb.pt"
    for k in ("transfer", "transfer-ft"):
        cfg = resolve_config(k, {"backbone": backbone}, objective="single", dataset="d")
        # no hop: a head trains on the worker's windows (transfer.transfer_plans)
        assert (cfg.lr, cfg.batch_size, cfg.train_hop_seconds, cfg.epochs) == (1e-3, 64, None, 40)
    demo = resolve_config("tdcnn", {}, objective="single", dataset="synthetic-demo", demo=True)
    assert (demo.clip_seconds, demo.frontend.chunk_frames, demo.channels) == (6.0, 32, (16, 32, 64))
    assert (demo.epochs, demo.batch_size, demo.version, demo.mixup) == (12, 16, "demo-1", 0.0)
    assert set(REAL_DATA) | set(DEMO) | {p for s in specs() for p in s.preset} <= set(
        _field_paths())


def _field_paths() -> list[str]:
    from genretag.training.config import TrainConfig

    paths = [n for n in TrainConfig.model_fields if n != "frontend"]
    return paths + [f"frontend.{n}" for n in FrontendParams.model_fields]
