"""``bench.realset_cv``: folds by group, paired differences, and a real out-of-fold run on
generated audio (every track scored once by a model that never saw its group)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.realset_cv import group_folds, main, paired_difference
from genretag.training.items import LabelledItem
from genretag.training.synth import make_synth_dataset

SR = 16000
FAST = (f"--sample-rate {SR} --clip-seconds 1.5 --n-fft 512 --hop-length 256 --n-mels 40 "
        "--chunk-frames 16 --batch-size 8 --workers 2 --epochs 2")


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def test_group_folds_never_split_a_group_and_spread_every_label() -> None:
    items = [LabelledItem(f"{label}{g}-{k}", Path("x.mp3"), [label], "training", f"{label}{g}")
             for label in "abc" for g in range(7) for k in range(3)]
    fold = group_folds(items, 5, seed=0)
    by_group: dict[str, set[int]] = {}
    for item, f in zip(items, fold, strict=True):
        by_group.setdefault(item.group, set()).add(int(f))
    assert all(len(f) == 1 for f in by_group.values())
    for label in "abc":  # 7 groups of a label over 5 folds: 1 or 2 per fold
        counts = np.bincount([f for item, f in zip(items, fold) if item.labels[0] == label],
                             minlength=5) // 3
        assert counts.min() >= 1 and counts.max() <= 2
    assert not np.array_equal(fold, group_folds(items, 5, seed=1))  # the seed reorders


def test_paired_difference_is_narrower_than_independent_intervals() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.8
    b = a.copy()
    b[np.flatnonzero(~a)[:10]] = True  # b fixes 10 of a's errors, breaks none
    out = paired_difference(a, b)
    assert out["difference"] == pytest.approx(0.05)
    assert 0 < out["ci"][0] < 0.05 < out["ci"][1]  # strictly positive: every change is a gain


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_cross_validation_scores_every_track_out_of_fold(tmp_path: Path) -> None:
    clips = make_synth_dataset(tmp_path / "audio", per_class=6, seconds=3.0,
                               labels=["ambient", "techno"], workers=2)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,group\n" + "".join(
        f"{c.path},{c.labels[0]},{c.labels[0]}-{k // 2}\n" for k, c in enumerate(clips)))
    out = tmp_path / "cv.json"
    assert main(["--labels", str(csv), "--folds", "3", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out), "--variants", f"logreg=--arch logreg {FAST}",
                 f"tdcnn=--arch tdcnn {FAST} --ensemble 2"]) == 0
    result = json.loads(out.read_text())
    assert result["tracks"] == 12 and sum(result["fold_sizes"]) == 12
    for name in ("logreg", "tdcnn"):
        v = result["variants"][name]
        assert v["tracks"] == 12  # every track predicted once
        assert sum(f["test"] for f in v["folds"]) == 12
    assert result["variants"]["logreg"]["accuracy"] >= 0.75  # the two classes are separable
    assert "vs_logreg" in result["variants"]["tdcnn"]
    assert {f["members"] for f in result["variants"]["tdcnn"]["folds"]} == {2}  # seeds trained
