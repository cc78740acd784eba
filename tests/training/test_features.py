"""The cached front end: features, windows, feature-domain augmentation, LBFGS and the CLI rules
that come with them (empty splits, auto, versions). Tiny generated audio, real FFmpeg."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genretag.core.artifact import load_artifact
from genretag.core.audio.placement import WHOLE_TRACK_CLIPS, Placement, place_windows
from genretag.core.audio.windows import make_windows
from genretag.cli import main as genretag_main
from genretag.schemas import FrontendParams
from genretag.training.augment import crop_frames, gain_shift
from genretag.training.baselines import StatsClassifier
from genretag.training.config import SERVING_MAX_WINDOWS, TrainConfig
from genretag.training.evaluate import bootstrap_ci
from genretag.training.export import export_artifact
from genretag.training.features import FeatureSet, WindowPlan, compute_features, decode_track, plans
from genretag.training.items import LabelledItem
from genretag.training.fit import epoch_order
from genretag.training.linear import lbfgs_fit
from genretag.training.models import SeedEnsemble, make_frontend
from genretag.training.synth import make_synth_dataset
from genretag.training.train import build_model
from genretag.worker.settings import WorkerSettings

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
SR = 16000
FRONTEND = FrontendParams(n_fft=512, hop_length=256, n_mels=40, chunk_frames=16, deltas=1,
                          rhythm=True, tempo_window=32)
FAST_CLI = ["--sample-rate", str(SR), "--clip-seconds", "1.5", "--n-fft", "512",
            "--hop-length", "256", "--n-mels", "40", "--chunk-frames", "16", "--batch-size", "8",
            "--workers", "2", "--device", "cpu", "--epochs", "1"]


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list:
    return make_synth_dataset(tmp_path_factory.mktemp("synth"), per_class=6, seconds=4.0,
                              labels=["ambient", "techno"], workers=2)


def test_evaluation_windows_are_the_workers() -> None:
    # The worker analyses a clip of SERVING_MAX_WINDOWS clips end to end: those very windows.
    served = Placement.of(2.0, WorkerSettings().windows)
    assert place_windows(2.0 * SERVING_MAX_WINDOWS, served) == [
        2.0 * k for k in range(SERVING_MAX_WINDOWS)]
    assert SERVING_MAX_WINDOWS == min(WorkerSettings().windows.max_windows, WHOLE_TRACK_CLIPS)
    wave = np.random.default_rng(0).standard_normal(int(SR * 7.3)).astype(np.float32)
    training, evaluation = plans(2.0, SR, SERVING_MAX_WINDOWS, 8.0, 1.0)
    np.testing.assert_array_equal(evaluation.windows(wave),
                                  make_windows(wave, 2 * SR, SERVING_MAX_WINDOWS))
    assert evaluation.decode_seconds == 2.0 * SERVING_MAX_WINDOWS
    dense = training.windows(wave)  # every ~1 s over 7.3 s: 6 windows, first and last flush
    assert dense.shape == (6, 2 * SR)
    np.testing.assert_array_equal(dense[0], wave[: 2 * SR])
    np.testing.assert_array_equal(dense[-1], wave[-2 * SR:])
    short = wave[: SR]  # shorter than a window: zero-padded, as served
    np.testing.assert_array_equal(training.windows(short), make_windows(short, 2 * SR, 1))


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["tdcnn", "logreg"])
def test_cached_features_equal_the_artifacts_frontend(kind, clips, tmp_path) -> None:
    """What training sees is what serving computes: the exported artifact's own frontend, run
    on the worker's windows of the same file, gives the cached features."""
    cfg = TrainConfig(model=kind, sample_rate=SR, clip_seconds=1.5, frontend=FRONTEND,
                      channels=(8, 16), device="cpu")
    model = build_model(cfg, 2).eval()
    items = clips[:3]
    training, evaluation = plans(cfg.clip_seconds, SR, cfg.eval_windows, cfg.train_window,
                                 cfg.train_hop)
    out = tmp_path / "m.pt"
    export_artifact(model, labels=["a", "b"], cfg=cfg, thresholds={"a": .5, "b": .5},
                    metrics={}, version="v", path=out)
    module, _ = load_artifact(out)
    for plan in (evaluation, training):
        fs = compute_features(items, model.frontend, plan, SR, cache_dir=tmp_path / "cache",
                              cache_key="k", workers=2)
        again = compute_features(items, model.frontend, plan, SR, cache_dir=tmp_path / "cache",
                                 cache_key="k")
        assert isinstance(again.feats, np.memmap)  # the second call reads the cache
        np.testing.assert_array_equal(np.asarray(again.feats), np.asarray(fs.feats))
        for k, item in enumerate(fs.items):
            wave = decode_track(item.path, SR, plan.decode_seconds, 1.0)
            windows = torch.from_numpy(plan.windows(wave))
            with torch.inference_mode():
                served = module.model.frontend(windows).numpy()
            cached = np.asarray(fs.feats[fs.owner == k])
            assert cached.shape == served.shape and len(cached) >= 1
            np.testing.assert_allclose(cached, served, atol=1e-4, rtol=1e-5)
    assert fs.n_windows > len(items)  # training windows are denser than one per clip


@pytest.mark.parametrize("rhythm", [False, True])
def test_gain_shift_equals_the_features_of_louder_audio(rhythm: bool) -> None:
    frontend = make_frontend(SR, FRONTEND.model_copy(update={"rhythm": rhythm})).eval()
    t = torch.arange(2 * SR) / SR
    wave = (0.3 * torch.sin(2 * torch.pi * 440 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))
            + 0.05 * torch.randn(2 * SR, generator=torch.Generator().manual_seed(0)))[None]
    for db in (-6.0, 4.5):
        louder = frontend(wave * 10 ** (db / 20))
        shifted = frontend(wave) + db * frontend.gain_offset()[None, :, :, None]
        torch.testing.assert_close(shifted, louder, atol=2e-3, rtol=1e-4)
    feats = frontend(wave).repeat(64, 1, 1, 1)
    moved = gain_shift(feats, frontend.gain_offset(), 6.0) - feats
    gains = moved[:, 0, 0, 0] / frontend.gain_offset()[0, 0]
    assert gains.abs().max() <= 6.0 + 1e-4 and gains.std() > 1.0  # random per clip, ±6 dB
    assert torch.all(moved[:, 1:] == 0)  # deltas (and rhythm) do not move


def test_crop_frames_takes_one_span_per_item() -> None:
    feats = torch.arange(100, dtype=torch.float32).repeat(4, 3, 5, 1)  # frame index as value
    out = crop_frames(feats, 30, np.random.default_rng(0))
    assert out.shape == (4, 3, 5, 30)
    starts = out[:, 0, 0, 0]
    assert len(set(starts.tolist())) > 1  # each item its own offset
    expected = starts[:, None, None, None] + torch.arange(30.0)
    assert torch.equal(out, expected.expand_as(out))  # the same span on every channel and row
    assert crop_frames(feats, 100, np.random.default_rng(0)) is feats


def test_logreg_lbfgs_matches_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    n, labels = 300, 3
    y = rng.integers(0, labels, n)
    x = rng.standard_normal((n, 12)) + 0.8 * np.eye(labels, 12)[y]
    model = StatsClassifier(labels, SR, FrontendParams(n_mfcc=6, n_mels=8)).double()  # 12 stats
    model.set_standardisation(torch.from_numpy(x))
    xs = torch.from_numpy(x)
    for c in (0.05, 1.0):
        lbfgs_fit(model, xs, torch.from_numpy(y), "single", c)
        ours = model.head(xs).softmax(-1).detach().numpy()
        ref = sklearn.LogisticRegression(C=c, max_iter=10000, tol=1e-10).fit(
            (x - x.mean(0)) / x.std(0, ddof=1), y)
        theirs = ref.predict_proba((x - x.mean(0)) / x.std(0, ddof=1))
        np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_bootstrap_interval_brackets_the_score() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0] * 3)
    pred = y.copy()
    pred[::4] = (pred[::4] + 1) % 3
    ci = bootstrap_ci(y, pred, 3)
    acc = float(np.mean(y == pred))
    assert ci["accuracy_ci"][0] < acc < ci["accuracy_ci"][1] < 1.0
    assert ci["macro_f1_ci"][0] < ci["macro_f1_ci"][1]
    assert bootstrap_ci(y, pred, 3) == ci  # seeded
    assert bootstrap_ci(y, y, 3)["accuracy_ci"] == [1.0, 1.0]


def _labels_csv(clips: list, path: Path, per_label: int, splits: bool = False) -> Path:
    rows = ["path,label" + (",split" if splits else "")]
    for label in ("ambient", "techno"):
        rows += [f"{c.path},{label}" + (f",{c.split}" if splits else "")
                 for c in clips if c.labels == [label]][:per_label]
    path.write_text("\n".join(rows) + "\n")
    return path


@needs_ffmpeg
def test_empty_test_split_is_refused_unless_allowed(clips, tmp_path, capsys) -> None:
    csv = _labels_csv(clips, tmp_path / "few.csv", 3)  # 3 per label: 2 train, 1 val, 0 test
    args = ["train", "--labels", str(csv), "--arch", "logreg", "--runs-dir",
            str(tmp_path / "runs"), "--log-format", "json", *FAST_CLI]  # logs: one JSON per line
    assert genretag_main(args) == 1
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if not line.startswith("{")]  # not the logs
    assert "Traceback" not in stderr and len(err) == 1 and err[0].startswith("genretag train:")
    assert "test split is empty" in err[0] and "--allow-empty-split" in err[0]
    assert "4 training, 2 validation, 0 test" in err[0]
    assert not (tmp_path / "runs" / "few-top" / "logreg.pt").exists()
    assert genretag_main([*args, "--allow-empty-split", "--version", "few-1"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["test_accuracy"] is None and summary["version"] == "few-1"
    assert summary["counts"]["test"] == 0


@needs_ffmpeg
def test_auto_exports_the_best_candidate_on_validation(clips, tmp_path, capsys) -> None:
    csv = _labels_csv(clips, tmp_path / "set.csv", 6, splits=True)  # 4:1:1 per label
    runs = tmp_path / "runs"
    assert genretag_main(["train", "--labels", str(csv), "--arch", "auto", "--runs-dir",
                          str(runs), "--no-progress", *FAST_CLI]) == 0
    out = capsys.readouterr().out
    summaries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [s["model"] for s in summaries[:5]] == ["tdcnn", "logreg", "dense", "cnn", "lstm"]
    assert all(s["version"] for s in summaries)
    report = json.loads((runs / "set-top" / "auto.report.json").read_text())
    rows = report["auto"]["candidates"]
    chosen = report["auto"]["selected"]
    best = max(r["validation_accuracy"] for r in rows)
    assert [r["model"] for r in rows if r["selected"]] == [chosen]
    assert next(r for r in rows if r["model"] == chosen)["validation_accuracy"] == best
    _, manifest = load_artifact(runs / "set-top" / "auto.pt")
    assert manifest.name == chosen
    text = (runs / "set-top" / "auto.candidates.txt").read_text()
    assert text.count("\n") == 8  # header, 5 candidates, legend, and the small-split warning
    n_val = report["validation"]["n"]
    assert n_val < 100 and f"chosen on {n_val} validation tracks" in report["auto"]["warning"]
    assert text.splitlines()[-1] == f"warning: {report['auto']['warning']}"
    assert "\x1b[" not in capsys.readouterr().err  # no progress bars off a terminal


def test_seed_ensemble_averages_members_and_exports(tmp_path) -> None:
    cfg = TrainConfig(model="tdcnn", sample_rate=SR, clip_seconds=1.5, frontend=FRONTEND,
                      channels=(8, 16), device="cpu")
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model(cfg, 3).eval())
    wave = torch.randn(2, int(1.5 * SR), generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        feats = members[0].features(wave)
        expected = (members[0].classify(feats) + members[1].classify(feats)) / 2
    ensemble = SeedEnsemble(members).eval()
    with torch.inference_mode():
        torch.testing.assert_close(ensemble(wave), expected)
    export_artifact(ensemble, labels=["a", "b", "c"], cfg=cfg, metrics={}, version="e",
                    thresholds=dict.fromkeys("abc", .5), path=tmp_path / "e.pt")  # checks eager
    module, _ = load_artifact(tmp_path / "e.pt")
    with torch.inference_mode():
        torch.testing.assert_close(module(wave), expected.softmax(-1), atol=1e-5, rtol=1e-4)


def test_epoch_order_draws_windows_per_track() -> None:
    owner = np.repeat(np.arange(5), [1, 3, 4, 2, 5])
    rng = np.random.default_rng(0)
    assert sorted(epoch_order(owner, 0, rng)) == list(range(len(owner)))
    draws = [epoch_order(owner, 2, rng) for _ in range(20)]
    for order in draws:
        assert np.bincount(owner[order], minlength=5).tolist() == [1, 2, 2, 2, 2]
        assert len(set(order.tolist())) == len(order)
    assert len({tuple(sorted(d.tolist())) for d in draws}) > 1  # a fresh draw each epoch


def test_compare_sets_only_large_test_splits_beside_the_reference(tmp_path) -> None:
    from genretag.training.compare import MIN_COMPARABLE_TEST, compare_table, load_runs

    for name, n in (("big", MIN_COMPARABLE_TEST), ("small", 41)):
        report = {"config": {"model": "logreg", "dataset": name, "objective": "single"},
                  "test": {"n": n, "accuracy": 0.5, "accuracy_ci": [0.4, 0.6], "macro_f1": 0.5},
                  "train_seconds": 3.0, "history": [{}]}
        (tmp_path / f"{name}.report.json").write_text(json.dumps(report))
    lines = compare_table(load_runs(tmp_path)).splitlines()
    big = next(line for line in lines if line.startswith("logreg") and " big " in line)
    small = next(line for line in lines if line.startswith("logreg") and " small " in line)
    assert "0.21" in big and "0.40-0.60" in big and "too small" not in big
    assert "0.21" not in small and "41 (too small)" in small
    assert not any("(reference)" in line for line in lines if line.startswith("logreg"))


def test_feature_set_select_keeps_each_items_windows_in_the_given_order() -> None:
    items = [LabelledItem(f"t{k}", Path(f"{k}.mp3"), ["a"], "training") for k in range(4)]
    owner = np.array([0, 0, 1, 2, 2, 2, 3])
    feats = np.arange(len(owner), dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 1, 1, 2))
    fs = FeatureSet(feats.astype(np.float32), owner, items)
    part = fs.select([3, 0])
    assert [i.item_id for i in part.items] == ["t3", "t0"]
    assert part.owner.tolist() == [0, 1, 1]
    assert part.feats[:, 0, 0, 0].tolist() == [6.0, 0.0, 1.0]
    assert fs.select([]).n_windows == 0


@needs_ffmpeg
@pytest.mark.parametrize("flag", [None, "ffmpeg"])
def test_the_training_decoder_is_chosen_and_recorded(clips, tmp_path, capsys, flag,
                                                    monkeypatch) -> None:
    """libav by default (the worker's default too), ``--decoder ffmpeg`` on request; either
    way the manifest names it, so the worker can warn when it serves with another, and the
    whole-track evaluation decodes with it too (the real decoder, counted)."""
    import genretag.training.windowed as windowed

    opened: list[str] = []
    real_open = windowed.open_decoder
    monkeypatch.setattr(windowed, "open_decoder",
                        lambda name, *a, **k: opened.append(name) or real_open(name, *a, **k))
    csv = _labels_csv(clips, tmp_path / "set.csv", 6, splits=True)
    out = tmp_path / "m.pt"
    extra = ["--decoder", flag] if flag else []
    assert genretag_main(["train", "--labels", str(csv), "--arch", "logreg", "--out", str(out),
                          "--no-progress", *FAST_CLI, *extra]) == 0
    _, manifest = load_artifact(out)
    assert manifest.decoder is not None
    assert manifest.decoder.name == (flag or WorkerSettings().decode.decoder) == (flag or "libav")
    assert opened == [manifest.decoder.name]
