"""Targets and dataset readers: FMA single/multilabel, GTZAN folders, labels CSV, splitting.

Targets go through ``TargetEncoder`` and splits through ``training.splits``: the functions the
trainer and the CLI use.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.fma import FmaFixture, make_fma_fixture
from genretag.core.fma import SPLITS, FmaTrack, GenreTree, load_genres, load_tracks, select
from genretag.training.fma_items import fma_genre_ids, fma_items
from genretag.training.items import LabelledItem
from genretag.training.readers import LabelsFileError, read_folder_dataset, read_labels_csv
from genretag.training.splits import by_split, stratified_split
from genretag.training.targets import TargetEncoder


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> FmaFixture:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    return make_fma_fixture(tmp_path_factory.mktemp("fma"), n_per_genre=6, seconds=1.0)


@pytest.fixture(scope="module")
def tree(fx: FmaFixture) -> GenreTree:
    return load_genres(fx.genres_csv)


def _track(tid: int, genre_top: str | None, genres_all: list[int], genres: list[int] | None = None,
           split: str = "training") -> FmaTrack:
    return FmaTrack(track_id=tid, subset="small", split=split, genre_top=genre_top,
                    genres=genres if genres is not None else genres_all[-1:],
                    genres_all=genres_all)


# --------------------------------------------------------------------------- FMA


def test_single_label_classes_and_indices(fx: FmaFixture) -> None:
    tracks = select(load_tracks(fx.tracks_csv), "small")
    items = fma_items(tracks, fx.audio_dir)
    enc = TargetEncoder.fit(items, "single")
    names, y = enc.labels, enc.encode(items)
    assert names == sorted(fx.genre_titles)
    assert y.dtype == np.int64 and y.shape == (len(tracks),)
    assert [names[i] for i in y] == [fx.genre_top[t.track_id] for t in tracks]
    # classes come from the selected tracks
    two = [i for i in items if i.labels[0] in ("Rock", "Folk")]
    assert TargetEncoder.fit(two, "single").labels == ["Folk", "Rock"]
    # encode another split with the training classes; unseen classes are an error
    test_only = [i for i in items if i.split == "test"]
    assert enc.encode(test_only).max() < len(names)
    with pytest.raises(ValueError, match="not among the classes"):
        TargetEncoder(("Rock",), "single").encode(items)
    with pytest.raises(ValueError, match="exactly one label"):  # a track without genre_top
        enc.encode([LabelledItem("1", fx.path(1), [], "training")])


def _multi(tracks: list[FmaTrack], tree: GenreTree, top_level_only: bool = False,
           ) -> tuple[list[str], np.ndarray]:
    """Classes and multi-hot targets the trainer builds for FMA multilabel tracks."""
    items = fma_items(tracks, "fma_small", genres=tree, multilabel=True,
                      top_level_only=top_level_only)
    enc = TargetEncoder.fit([dataclasses.replace(i, split="training") for i in items], "multi")
    return enc.labels, enc.encode(items)


def test_multilabel_implies_parents(fx: FmaFixture, tree: GenreTree) -> None:
    # genres_all lacks the ancestors of Post-Punk (89 → 25 → 12) and Bigbeat (401 → 181 → 15)
    t = _track(1, "Rock", [89], genres=[89, 401])
    assert fma_genre_ids(t, tree) == [12, 15, 25, 89, 181, 401]
    assert fma_genre_ids(t, tree, top_level_only=True) == [12, 15]
    names, y = _multi([t, _track(2, "Hip-Hop", [21, 539])], tree)
    assert names == sorted(["Rock", "Punk", "Post-Punk", "Electronic", "Techno", "Bigbeat",
                            "Hip-Hop", "Rap"])
    assert y.dtype == np.float32 and y.shape == (2, 8)
    row = dict(zip(names, y[0]))
    assert row["Punk"] == row["Rock"] == row["Bigbeat"] == 1.0 and row["Rap"] == 0.0
    top_names, top_y = _multi([t], tree, top_level_only=True)
    assert top_names == ["Electronic", "Rock"] and top_y.tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="genre id.*99999"):
        _multi([_track(3, "Rock", [99999])], tree)


def test_multilabel_on_fixture(fx: FmaFixture, tree: GenreTree) -> None:
    tracks = select(load_tracks(fx.tracks_csv), "medium")
    names, y = _multi(tracks, tree)
    assert y.shape == (len(tracks), len(names))
    for i, t in enumerate(tracks):  # the top genre is always implied
        assert y[i, names.index(t.genre_top)] == 1.0
        assert y[i].sum() == len(tree.with_ancestors(t.genres_all))
    top_names, top_y = _multi(tracks, tree, top_level_only=True)
    assert top_names == sorted(fx.genre_titles)
    assert (top_y.sum(axis=1) == 1).all()


def test_multilabel_min_count_ignores_rare_labels_only() -> None:
    items = [LabelledItem(str(k), Path(f"{k}.wav"), labels, split) for k, (labels, split) in
             enumerate([(["rock", "punk"], "training"), (["rock"], "training"),
                        (["jazz", "rock"], "training"), (["jazz", "bebop"], "test")])]
    enc = TargetEncoder.fit(items, "multi", min_count=2)
    assert enc.labels == ["rock"]  # punk: one training item; jazz too; bebop: none
    assert enc.encode(items).tolist() == [[1.0], [1.0], [1.0], [0.0]]
    with pytest.raises(ValueError, match=r"\['metal'\] are not among"):
        enc.encode([LabelledItem("9", Path("9.wav"), ["metal"], "test")])


def test_fma_items(fx: FmaFixture, tree: GenreTree) -> None:
    tracks = select(load_tracks(fx.tracks_csv), "small")
    items = fma_items(tracks + [_track(77, None, [])], fx.audio_dir)
    assert len(items) == len(tracks)  # the track without genre_top is left out
    by_id = {i.item_id: i for i in items}
    for t in tracks:
        item = by_id[str(t.track_id)]
        assert item.labels == [t.genre_top]
        assert item.split == t.split
        assert item.path == fx.path(t.track_id)
        assert item.group == t.artist
    multi = fma_items(tracks, fx.audio_dir, genres=tree, multilabel=True)
    deep = next(i for i in multi if "Post-Punk" in i.labels)
    assert {"Post-Punk", "Punk", "Rock"} <= set(deep.labels)
    with pytest.raises(ValueError, match="genre tree"):
        fma_items(tracks, fx.audio_dir, multilabel=True)
    enc = TargetEncoder.fit(items, "single")
    assert enc.labels == sorted(fx.genre_titles) and enc.encode(items).dtype == np.int64


# --------------------------------------------------------------------------- splitting


def test_stratified_split_is_deterministic_stratified_and_group_respecting() -> None:
    keys = [f"item{i:03d}" for i in range(300)]
    labels = [["common"] if i % 10 else ["rare"] for i in range(300)]
    groups = [f"album{i // 3}" for i in range(300)]
    splits = stratified_split(keys, labels, groups, seed=1)
    assert splits == stratified_split(keys, labels, groups, seed=1)
    assert splits != stratified_split(keys, labels, groups, seed=2)
    per_group: dict[str, set[str]] = defaultdict(set)
    for g, s in zip(groups, splits):
        per_group[g].add(s)
    assert all(len(s) == 1 for s in per_group.values())
    counts = Counter(splits)
    assert abs(counts["training"] / 300 - 0.8) < 0.03
    assert abs(counts["validation"] / 300 - 0.1) < 0.03
    for label in ("common", "rare"):  # every class reaches every split, in proportion
        c = Counter(s for s, lb in zip(splits, labels) if lb == [label])
        n = sum(c.values())
        assert c["validation"] > 0 and c["test"] > 0
        assert abs(c["training"] / n - 0.8) < 0.1, (label, c)
    # independent of input order
    order = list(reversed(range(300)))
    shuffled = stratified_split([keys[i] for i in order], [labels[i] for i in order],
                                [groups[i] for i in order], seed=1)
    assert [shuffled[order.index(i)] for i in range(300)] == splits
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(keys, labels, groups, fractions=(0.8, 0.3, 0.1))


# --------------------------------------------------------------------------- readers


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_dataset_gtzan_layout(tmp_path: Path) -> None:
    root = tmp_path / "genres"
    for label in ("blues", "classical", "metal"):
        for i in range(20):
            _touch(root / label / f"{label}.{i:05d}.wav")
    _touch(root / "metal" / "live" / "metal.live.au")  # nested files count
    _touch(root / "blues" / ".hidden.wav")
    _touch(root / "blues" / "notes.txt")
    _touch(root / "stray.mp3")
    (root / "empty").mkdir()
    items = read_folder_dataset(root, seed=0)
    assert len(items) == 61
    assert {i.labels[0] for i in items} == {"blues", "classical", "metal"}
    assert all(len(i.labels) == 1 and i.path.is_file() for i in items)
    assert "metal/live/metal.live.au" in {i.item_id for i in items}
    assert items == read_folder_dataset(root, seed=0)
    for label in ("blues", "classical"):
        c = Counter(i.split for i in items if i.labels == [label])
        assert c == {"training": 16, "validation": 2, "test": 2}, (label, c)
    reseeded = read_folder_dataset(root, seed=5)
    assert {i.split for i in reseeded} == set(by_split(items)) == set(SPLITS)
    assert [i.split for i in reseeded] != [i.split for i in items]
    with pytest.raises(LabelsFileError, match="no audio files"):
        read_folder_dataset(tmp_path / "genres" / "empty")


def test_labels_csv_multilabel_and_splits(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    lines = ["path,label,group"]
    for i in range(60):
        _touch(audio / f"a{i:02d}.mp3")
        label = "rock|indie" if i % 3 == 0 else "jazz" if i % 3 == 1 else "rock"
        lines.append(f"audio/a{i:02d}.mp3,{label},artist{i // 4}")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    items = read_labels_csv(csv_path)
    assert len(items) == 60
    assert items[0].labels == ["rock", "indie"] and items[1].labels == ["jazz"]
    assert items[0].path == audio / "a00.mp3" and items[0].item_id == "audio/a00.mp3"
    assert items == read_labels_csv(csv_path)
    per_group: dict[str | None, set[str]] = defaultdict(set)
    for item in items:
        per_group[item.group].add(item.split)
    assert all(len(s) == 1 for s in per_group.values())
    assert set(Counter(i.split for i in items)) == {"training", "validation", "test"}
    enc = TargetEncoder.fit(items, "multi")
    names, y = enc.labels, enc.encode(items)
    assert names == ["indie", "jazz", "rock"] and y.dtype == np.float32
    assert y[0].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="exactly one label"):
        TargetEncoder.fit(items, "single")


def test_labels_csv_given_split_and_errors(tmp_path: Path) -> None:
    for name in ("x.wav", "y.wav", "z.wav"):
        _touch(tmp_path / name)
    ok = tmp_path / "ok.csv"
    ok.write_text("Path,Label,Split\nx.wav,a,train\ny.wav,b,VAL\nz.wav,a,test\n")
    assert [i.split for i in read_labels_csv(ok)] == ["training", "validation", "test"]

    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,split\n"
                   "x.wav,a,training\n"
                   "missing.wav,a,training\n"
                   "y.wav,,training\n"
                   "z.wav,a,holdout\n"
                   "x.wav,b,test\n")
    with pytest.raises(LabelsFileError) as err:
        read_labels_csv(bad)
    message = str(err.value)
    assert "4 problem(s)" in message
    assert "line 3: file not found" in message
    assert "line 4: y.wav: empty label" in message
    assert "line 5: split 'holdout'" in message
    assert "line 6: duplicate item 'x.wav' (first on line 2)" in message

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,genre\nx.wav,a\n")
    with pytest.raises(LabelsFileError, match="lacks path, label"):
        read_labels_csv(wrong)


def test_encoders_reject_unknown_labels() -> None:
    items = [LabelledItem("1", Path("a"), ["x"], "training"),
             LabelledItem("2", Path("b"), ["y"], "test")]
    assert TargetEncoder.fit(items, "single").encode(items).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"\['y'\] are not among"):
        TargetEncoder(("x",), "single").encode(items)
    with pytest.raises(ValueError, match=r"\['y'\] are not among"):
        TargetEncoder(("x",), "multi").encode(items)
    with pytest.raises(ValueError, match="duplicate class names"):
        TargetEncoder(("x", "x"), "single")


def test_by_split_groups_every_split_and_rejects_unknown_names() -> None:
    items = [LabelledItem(str(k), Path(f"{k}.wav"), ["x"], split)
             for k, split in enumerate(["test", "training", "training"])]
    groups = by_split(items)
    assert list(groups) == list(SPLITS)
    assert [i.item_id for i in groups["training"]] == ["1", "2"]
    assert groups["validation"] == [] and [i.item_id for i in groups["test"]] == ["0"]
    with pytest.raises(ValueError, match="split 'holdout'"):
        by_split([LabelledItem("9", Path("9.wav"), ["x"], "holdout")])
