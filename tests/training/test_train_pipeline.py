"""FMA-shaped fixture → loader → items → decode → train → export → report, for every model kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genretag.cli import main as genretag_main
from genretag.schemas import FrontendParams
from tests.fixtures.fma import FmaFixture, make_fma_fixture
from genretag.core.audio.windows import make_windows
from genretag.training.config import SERVING_MAX_WINDOWS
from genretag.training.features import decode_track
from genretag.training.linear import C_GRID
from genretag.core.fma import load_genres, load_tracks, select, subset_audio_dir
from genretag.training.fma_items import fma_items
from genretag.training.items import LabelledItem
from genretag.training.run_report import RunReport
from genretag.training.train import TrainConfig, train_and_export
from genretag.core.artifact import load_artifact

pytestmark = [pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"), pytest.mark.heavy]

SR = 16000
CLIP = 4.0
FRONTEND = FrontendParams(n_fft=512, hop_length=256, n_mels=40, chunk_frames=32, deltas=1,
                          rhythm=True, tempo_window=64)
PNG = b"\x89PNG\r\n\x1a\n"
FAST_CLI = ["--sample-rate", str(SR), "--clip-seconds", str(CLIP), "--train-seconds", "5",
            "--n-fft", "512", "--hop-length", "256", "--n-mels", "40", "--chunk-frames", "32",
            "--batch-size", "8", "--workers", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> FmaFixture:
    return make_fma_fixture(tmp_path_factory.mktemp("fma"), n_per_genre=10, seconds=5.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decoded")


@pytest.fixture(scope="module")
def items(fx: FmaFixture) -> list[LabelledItem]:
    tracks = load_tracks(fx.tracks_csv)
    return fma_items(select(tracks, "small"), subset_audio_dir(fx.root, "small"))


def _cfg(model: str, epochs: int, **kw) -> TrainConfig:
    """Small frontend; training clips decoded at 5 s and randomly cropped to the 4 s clip."""
    return TrainConfig(model=model, sample_rate=SR, clip_seconds=CLIP, train_seconds=5.0,
                       frontend=FRONTEND, channels=(16, 32), hidden=64, epochs=epochs,
                       batch_size=8, mixup=0.2, device="cpu", decode_workers=2, seed=0,
                       dataset="fma_fixture", version=f"{model}-test", **kw)


@pytest.fixture(scope="module")
def tdcnn_run(items, cache, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("tdcnn") / "tdcnn.pt"
    return train_and_export(items, _cfg("tdcnn", 10), out, cache_dir=cache), out


def worker_probs(module, path: Path) -> np.ndarray:
    """What the worker computes for a file: its windows through the artifact, averaged."""
    wave = decode_track(path, SR, CLIP * SERVING_MAX_WINDOWS, 1.0)
    windows = make_windows(wave, int(CLIP * SR), SERVING_MAX_WINDOWS)
    with torch.inference_mode():
        return module(torch.from_numpy(windows)).mean(dim=0).numpy()


def _assert_artifact_matches_report(report: RunReport, out: Path, items, cache: Path) -> None:
    """The loaded artifact, run on each test file as the worker runs it (its windows,
    probabilities averaged), reproduces the track-level test probabilities in the report."""
    module, manifest = load_artifact(out)
    assert manifest.sha256 == report.manifest.sha256
    by_id = {i.item_id: i for i in items}
    ids = report.test_predictions.item_ids
    assert len(ids) == report.test["n"] > 0
    loaded = np.stack([worker_probs(module, by_id[i].path) for i in ids])
    np.testing.assert_allclose(loaded, np.array(report.test_predictions.probs), atol=1e-4)


@pytest.mark.parametrize("model", ["logreg", "dense", "cnn", "lstm"])
def test_every_baseline_trains_exports_and_round_trips(model, items, cache, tmp_path) -> None:
    report = train_and_export(items, _cfg(model, 2), tmp_path / f"{model}.pt", cache_dir=cache)
    assert report.config.model == model
    if model in ("logreg", "dense"):  # LBFGS to convergence, one fit per C on the grid
        assert [h["C"] for h in report.history] == list(C_GRID)
        assert sum(bool(h.get("selected")) for h in report.history) == 1
    else:
        assert len(report.history) == 2
    assert report.manifest.name == model and report.manifest.activation == "softmax"
    assert report.counts == {"training": 24, "validation": 8, "test": 8}
    _assert_artifact_matches_report(report, tmp_path / f"{model}.pt", items, cache)


def test_tdcnn_beats_chance_and_round_trips(tdcnn_run, fx, items, cache) -> None:
    report, out = tdcnn_run
    chance = 1 / len(fx.genre_titles)
    assert report.labels == fx.genre_titles
    assert report.test["n"] == 8
    assert report.test["accuracy"] >= 2 * chance, report.test
    assert report.manifest.frontend.rhythm is True
    assert report.manifest.dataset == "fma_fixture"
    assert report.manifest.metrics["test_accuracy"] == report.test["accuracy"]
    # The same test items evaluated as the worker tags them (windows over whole tracks).
    whole = report.test_whole_track_windows
    assert whole["n"] == report.test["n"] and whole["accuracy"] >= 2 * chance, whole
    assert report.manifest.metrics["test_accuracy_whole_track"] == whole["accuracy"]
    assert set(report.manifest.thresholds) == set(fx.genre_titles)
    _assert_artifact_matches_report(report, out, items, cache)


def test_broken_clips_are_skipped_counted_and_listed(tdcnn_run, fx) -> None:
    report, out = tdcnn_run
    assert report.skipped_count == len(fx.broken_ids) == 4
    assert sorted(int(s.item_id) for s in report.skipped) == sorted(fx.broken_ids)
    reasons = {int(s.item_id): s.reason.split(":")[0] for s in report.skipped}
    expected = {"empty": "empty_file", "missing": "missing_file", "too_short": "too_short",
                "truncated": "undecodable"}
    assert reasons == {tid: expected[kind] for tid, kind in fx.broken_kinds.items()}
    on_disk = json.loads(out.with_name("tdcnn.report.json").read_text())
    assert on_disk["skipped_count"] == 4 and on_disk["manifest"]["metrics"]["skipped"] == 4


def test_report_files_are_written(tdcnn_run, fx) -> None:
    report, out = tdcnn_run
    files = report.files
    assert set(files) == {"json", "table", "confusion_png", "curves_png"}
    for key in ("confusion_png", "curves_png"):
        data = Path(files[key]).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
        import matplotlib.image

        height, width = matplotlib.image.imread(files[key]).shape[:2]
        assert height > 200 and width > 200
    table = Path(files["table"]).read_text()
    lines = table.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    for genre in fx.genre_titles:
        row = next(line for line in lines if line.strip().startswith(genre))
        assert len(row.split()) == len(genre.split()) + 4
    for avg in ("accuracy", "macro avg", "weighted avg"):
        assert any(line.strip().startswith(avg) for line in lines)
    saved = json.loads(Path(files["json"]).read_text())
    assert saved["test"]["accuracy"] == report.test["accuracy"]
    assert len(saved["history"]) == len(report.history) >= 1
    assert np.array(saved["test"]["confusion"]).sum() == report.test["n"]
    # the file is the typed report: it reads back into the same RunReport
    assert RunReport.model_validate_json(Path(files["json"]).read_text()) == report


def test_multilabel_target_trains_sigmoid_head_with_auc(fx, cache, tmp_path) -> None:
    tracks = load_tracks(fx.tracks_csv)
    items = fma_items(select(tracks, "small"), subset_audio_dir(fx.root, "small"),
                      genres=load_genres(fx.genres_csv), multilabel=True)
    assert any(len(i.labels) > 1 for i in items)
    cfg = _cfg("tdcnn", 6, objective="multi", min_label_count=2)
    report = train_and_export(items, cfg, tmp_path / "multi.pt", cache_dir=cache)
    assert report.manifest.activation == "sigmoid"
    assert set(fx.genre_titles) <= set(report.labels)  # top-level genres are implied parents
    test = report.test
    assert test["roc_auc_macro"] is not None and test["roc_auc_macro"] > 0.6, test
    assert test["pr_auc_macro"] is not None and test["micro_f1"] >= 0
    assert "accuracy" not in test
    probs = np.array(report.test_predictions.probs)
    assert not np.allclose(probs.sum(1), 1.0)  # independent sigmoids, not a softmax
    assert Path(report.files["auc_png"]).read_bytes().startswith(PNG)
    text = Path(report.files["table"]).read_text()
    assert "roc-auc" in text and "micro avg" in text
    module, manifest = load_artifact(tmp_path / "multi.pt")
    assert manifest.labels == report.labels


def test_cli_trains_on_fma_and_compares(fx, cache, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    rc = genretag_main(["train", "--fma-dir", str(fx.root), "--subset", "small", "--arch",
                        "logreg,dense", "--epochs", "1", "--runs-dir", str(runs),
                        "--cache-dir", str(cache), *FAST_CLI])
    assert rc == 0
    out = capsys.readouterr().out
    summaries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [s["model"] for s in summaries] == ["logreg", "dense"]
    assert all(s["skipped"] == 4 for s in summaries)
    assert (runs / "fma_small-top" / "logreg.pt").is_file()
    assert "test acc" in out  # several models: the comparison follows
    assert genretag_main(["train", "compare", str(runs)]) == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines()[2:] if line.strip()]
    runs_rows = {line.split()[0]: line for line in lines if "(reference)" not in line}
    ref_rows = {line.split()[0]: line for line in lines if "(reference)" in line}
    # 8 test tracks: flagged, and not set beside the reference (which keeps its own rows)
    assert "fma_small" in runs_rows["logreg"] and "8 (too small)" in runs_rows["logreg"]
    assert "0.21" not in runs_rows["logreg"] and "too small: 2 run(s)" in table
    assert "0.21" in ref_rows["logreg"]
    assert "0.42" in ref_rows["tdcnn"] and "3h20m" in ref_rows["tdcnn"]
    assert genretag_main(["train", "--compare", str(runs)]) == 0
    assert capsys.readouterr().out == table


def test_cli_labels_csv_with_several_labels_is_multilabel(fx, tmp_path, capsys) -> None:
    rows = ["path,label,split"]
    for tid in fx.ids("small", include_broken=False):
        genre = fx.genre_top[tid]
        if genre not in ("Rock", "Electronic"):
            continue
        extra = "|loud" if genre == "Rock" else ""
        rows.append(f"{fx.path(tid)},{genre}{extra},{fx.splits[tid]}")
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "csv.pt"
    rc = genretag_main(["train", "--labels", str(csv), "--arch", "logreg", "--epochs", "1",
                        "--out", str(out), "--cache-dir", str(tmp_path / "c"), *FAST_CLI])
    assert rc == 0
    _, manifest = load_artifact(out)
    assert manifest.activation == "sigmoid" and "loud" in manifest.labels
    assert manifest.dataset == "labels"
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["skipped"] == 0 and summary["roc_auc_macro"] is not None


def test_cli_folder_dataset(fx, tmp_path, capsys) -> None:
    root = tmp_path / "folders"
    for tid in fx.ids("small"):
        if fx.genre_top[tid] in ("Folk", "Electronic"):
            link = root / fx.genre_top[tid] / f"{tid}.mp3"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(fx.path(tid))  # dangling for the fixture's missing clip
    runs = tmp_path / "runs"
    rc = genretag_main(["train", "--dataset", str(root), "--arch", "dense", "--epochs", "1",
                        "--runs-dir", str(runs), *FAST_CLI])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    _, manifest = load_artifact(runs / "folders-top" / "dense.pt")
    assert manifest.labels == ["Electronic", "Folk"] and manifest.activation == "softmax"
    assert summary["counts"]["training"] > 0 and summary["skipped"] >= 1
