"""Every model kind: shapes, batch independence, TorchScript export round trip; rhythm features;
augmentations; metrics and the sklearn-style report table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genretag.schemas import FrontendParams
from genretag.training.augment import mixup, random_crops, spec_augment
from genretag.training.config import TrainConfig
from genretag.training.export import ExportError, export_artifact
from genretag.training.metrics import (confusion_matrix, multilabel_report, per_class_report,
                                       roc_auc, tune_thresholds)
from genretag.training.models import RhythmMfccFrontend, ServingModel, TimeDistributedCNN
from genretag.training.report import classification_table
from genretag.training.registry import get_spec, specs
from genretag.training.train import build_model
from genretag.core.artifact import load_artifact

SR = 16000
KINDS = tuple(s.name for s in specs() if not s.needs_backbone)  # every registered MFCC kind
SMALL = FrontendParams(n_fft=512, hop_length=256, n_mels=40, chunk_frames=16, deltas=1,
                       rhythm=True, tempo_window=64)


def _cfg(model: str, **kw) -> TrainConfig:
    return TrainConfig(model=model, sample_rate=SR, clip_seconds=2.0, frontend=SMALL,
                       channels=(8, 16), hidden=32, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_model_shapes_and_batch_independence(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(kind), 5).eval()
    wave = torch.randn(3, SR * 2) * torch.tensor([[0.01], [0.3], [1.0]])
    with torch.inference_mode():
        batched = model(wave)
        single = torch.cat([model(wave[i : i + 1]) for i in range(3)])
        shorter = model(wave[:, : SR])  # every model takes any clip length
    assert batched.shape == (3, 5) and shorter.shape == (3, 5)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    assert model.features(wave).shape[:3] == (3, 4, 20)  # MFCC, delta, band flux, tempogram


@pytest.mark.parametrize("kind", KINDS)
def test_export_round_trip_equals_eager(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    cfg = _cfg(kind, objective="multi")
    model = build_model(cfg, 3).eval()
    labels = ["a", "b", "c"]
    path = tmp_path / f"{kind}.pt"
    manifest = export_artifact(model, labels=labels, cfg=cfg, thresholds=dict.fromkeys(labels, 0.5),
                               metrics={"x": 1}, version="v1", path=path)
    loaded, read = load_artifact(path)
    assert read == manifest and read.activation == "sigmoid" and read.frontend.rhythm
    wave = torch.randn(4, SR * 2) * 0.2
    with torch.inference_mode():
        eager = ServingModel(model, "sigmoid").eval()(wave)
        torch.testing.assert_close(loaded(wave), eager, atol=1e-5, rtol=1e-5)


class _ScriptDiffers(nn.Module):
    """Eager and TorchScript disagree: the export check must catch it (a model of contract v2:
    ``embedding`` and ``decide``, as ServingModel calls them)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def embedding(self, wave: torch.Tensor) -> torch.Tensor:
        base = wave[:, :2] * self.w
        if torch.jit.is_scripting():
            return base + 1.0
        return base

    def decide(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.decide(self.embedding(wave))


def test_export_rejects_artifact_that_differs_from_eager(tmp_path: Path) -> None:
    cfg = _cfg("tdcnn", objective="multi")  # sigmoid: softmax would hide a constant shift
    with pytest.raises(ExportError, match="differs"):
        export_artifact(_ScriptDiffers(), labels=["a", "b"], cfg=cfg,
                        thresholds={"a": 0.5, "b": 0.5}, metrics={}, version="v",
                        path=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_unknown_model_and_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model 'svm'; choose from tdcnn, logreg"):
        _cfg("svm")
    with pytest.raises(ValueError, match="unknown model"):
        get_spec("svm")
    with pytest.raises(ValueError, match="temporal"):
        TimeDistributedCNN(3, SR, SMALL, (8,), temporal="transformer")
    with pytest.raises(ValueError, match="crop_seconds"):
        TrainConfig(clip_seconds=5.0, crop_seconds=6.0)
    with pytest.raises(ValueError, match="train_seconds"):
        TrainConfig(clip_seconds=5.0, train_seconds=4.0)


def test_gru_temporal_pooling_scripts() -> None:
    model = TimeDistributedCNN(3, SR, SMALL, (8, 16), temporal="gru").eval()
    scripted = torch.jit.script(ServingModel(model, "softmax"))
    wave = torch.randn(2, SR * 2) * 0.1
    with torch.inference_mode():
        torch.testing.assert_close(scripted(wave), ServingModel(model, "softmax")(wave))


def _clicks(rate_hz: float, seconds: float = 6.0, gain: float = 1.0) -> torch.Tensor:
    wave = torch.zeros(int(SR * seconds))
    noise = torch.randn(200, generator=torch.Generator().manual_seed(0))
    for k in range(int(seconds * rate_hz)):
        start = int(k * SR / rate_hz)
        wave[start : start + 200] = noise * gain
    return wave


def test_tempogram_peaks_at_the_beat_period() -> None:
    frontend = RhythmMfccFrontend(SR, FrontendParams(n_fft=512, hop_length=256, n_mels=40,
                                                     rhythm=True, tempo_window=128))
    fps = SR / 256
    with torch.inference_mode():
        tempo = frontend(torch.stack([_clicks(2.0), _clicks(3.0), _clicks(2.0, gain=0.05)]))[:, 2]
    peaks = tempo.mean(dim=-1).argmax(dim=-1)
    lag_of_bin = (frontend.lag_matrix * torch.arange(1, frontend.max_lag + 1)).sum(1)
    periods = lag_of_bin[peaks] / fps
    assert abs(float(periods[0]) - 0.5) < 0.06  # 120 BPM
    assert abs(float(periods[1]) - 1 / 3) < 0.04  # 180 BPM
    assert peaks[0] == peaks[2]  # gain does not change the tempo
    assert peaks[0] != peaks[1]


def test_random_crops_stay_inside_audio() -> None:
    waves = np.zeros((3, 100), np.float32)
    waves[:, :60] = np.arange(1, 61, dtype=np.float32)  # 60 samples of audio, then padding
    lengths = np.array([60, 60, 100])
    crops = random_crops(waves, lengths, 50, np.random.default_rng(0))
    assert crops.shape == (3, 50)
    starts = {int(c[0]) for c in crops[:2]}
    assert all(1 <= s <= 11 for s in starts)  # start in [0, 60-50]
    assert (np.diff(crops[0]) == 1).all()  # contiguous
    same = random_crops(waves[:, :50], np.array([50, 50, 50]), 50, np.random.default_rng(0))
    assert sorted(same[0]) == list(range(1, 51))  # equal length: a random roll of the audio


def test_spec_augment_masks_bands_and_frames_per_clip() -> None:
    torch.manual_seed(0)
    feats = torch.randn(8, 2, 20, 100)
    out = spec_augment(feats, freq_width=4, time_width=10)
    changed = (out != feats)
    assert changed.any()
    assert (changed[:, 0] == changed[:, 1]).all()  # the same mask on every channel of a clip
    assert not (changed[0] == changed[1:]).all()  # masks differ between clips
    assert changed.float().mean() < 0.5


def test_mixup_mixes_inputs_and_targets_alike() -> None:
    x = torch.eye(4)
    y = torch.eye(4)
    mx, my = mixup(x, y, 0.4, np.random.default_rng(3))
    torch.testing.assert_close(mx, my)  # same λ and partner for input and target
    torch.testing.assert_close(my.sum(1), torch.ones(4))


def test_per_class_report_and_sklearn_style_table() -> None:
    y_true = np.array([0, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 2, 2, 1])
    labels = ["class 0", "class 1", "class 2"]
    report = per_class_report(y_true, y_pred, labels)
    report["n"] = 5
    expected = (
        "              precision    recall  f1-score   support\n"
        "\n"
        "     class 0       0.50      1.00      0.67         1\n"
        "     class 1       0.00      0.00      0.00         1\n"
        "     class 2       1.00      0.67      0.80         3\n"
        "\n"
        "    accuracy                           0.60         5\n"
        "   macro avg       0.50      0.56      0.49         5\n"
        "weighted avg       0.70      0.60      0.61         5\n"
    )
    assert classification_table(report, labels) == expected  # sklearn's own example
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 2]]


def test_multilabel_report_and_auc() -> None:
    probs = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6], [0.3, 0.1]])
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    rep = multilabel_report(probs, truth, ["a", "b"], {"a": 0.5, "b": 0.5})
    assert rep["per_class"]["a"]["f1"] == 1.0 and rep["micro_f1"] == 1.0
    assert rep["roc_auc_macro"] == 1.0 and rep["pr_auc_macro"] == 1.0
    table = classification_table(rep, ["a", "b"])
    assert "micro avg" in table and "samples avg" in table and "accuracy" not in table
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8, 0.4]), np.array([0, 0, 1, 1, 1])) == 0.75
    assert roc_auc(np.ones(3), np.ones(3)) is None


def test_single_label_thresholds_never_show_a_label_below_another() -> None:
    """Issue 27: per-class thresholds tuned on a few validation tracks showed 'metal' for a
    track scored adventure 0.62, metal 0.38. Single-label: one shared threshold."""
    rng = np.random.default_rng(0)
    labels = ["adventure", "metal", "pop"]
    truth = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 60)]
    truth[:4] = np.eye(3, dtype=np.float32)[[1, 1, 1, 0]]  # few clear metal tracks ...
    probs = rng.dirichlet(np.ones(3), 60)
    probs[:4] = [[0.6, 0.4, 0.0], [0.58, 0.42, 0.0], [0.55, 0.45, 0.0], [0.3, 0.1, 0.6]]
    thresholds = tune_thresholds(probs, truth, labels, "single")
    assert len(set(thresholds.values())) == 1
    for row in [*probs, [0.62, 0.38, 0.0]]:
        shown = [k for k, name in enumerate(labels) if row[k] >= thresholds[name]]
        hidden = [k for k in range(3) if k not in shown]
        assert all(row[s] >= row[h] for s in shown for h in hidden)


def test_multi_label_threshold_of_its_own_needs_enough_validation_support() -> None:
    rng = np.random.default_rng(1)
    n = 200
    common = (rng.random(n) < 0.3).astype(np.float32)  # ~60 positives
    rare = np.zeros(n, np.float32)
    rare[:4] = 1  # 4 positives: too few for a threshold of its own
    truth = np.stack([common, rare], axis=1)
    probs = np.stack([np.clip(common * 0.35 + rng.random(n) * 0.5, 0, 1),  # best cut near 0.5
                      np.where(rare > 0, 0.12, rng.random(n) * 0.1)], axis=1)
    got = tune_thresholds(probs, truth, ["common", "rare"], "multi")
    shared = tune_thresholds(probs, truth, ["common", "rare"], "multi", min_support=10 ** 6)
    assert shared["common"] == shared["rare"]  # nobody has the support: one shared threshold
    own = tune_thresholds(probs, truth, ["common", "rare"], "multi", min_support=1)
    assert got["common"] == own["common"]  # enough positives: its own optimum
    assert got["rare"] == shared["rare"] == 0.35  # 4 positives: the shared threshold, not
    assert own["rare"] == 0.1  # the optimum of 4 tracks (0.12 vs noise below 0.1)


def test_macro_scores_leave_out_classes_without_test_items_and_name_them() -> None:
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 0])
    report = per_class_report(y_true, y_pred, ["a", "b", "untested"])
    assert report["untested_labels"] == ["untested"]
    two = per_class_report(y_true, y_pred, ["a", "b"])
    assert report["macro_f1"] == two["macro_f1"] > 0.7  # not dragged by the empty class
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1]])
    truth = np.array([[1, 0, 0], [1, 1, 0]], dtype=np.float32)
    multi = multilabel_report(probs, truth, ["a", "b", "c"], {"a": 0.5, "b": 0.5, "c": 0.5})
    assert multi["untested_labels"] == ["c"] and multi["macro_f1"] == 1.0
