"""FMA metadata reader: the real three-row header, list columns, subsets, splits, genre tree."""

from __future__ import annotations

import argparse
import doctest
import shutil
from pathlib import Path

import pytest

import genretag.core.fma.layout
from tests.fixtures.fma import DEFAULT_GENRES, TRACKS_COLUMNS, FmaFixture, make_fma_fixture
from genretag.training import fma_cli
from genretag.core.fma import (
    SPLITS,
    SUBSETS,
    FmaDataError,
    FmaFormatError,
    audio_path,
    load_genres,
    load_tracks,
    select,
)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> FmaFixture:
    return make_fma_fixture(tmp_path_factory.mktemp("fma"), n_per_genre=6, seconds=1.0)


def test_columns_parsed(fx: FmaFixture) -> None:
    tracks = load_tracks(fx.tracks_csv)
    assert tracks.malformed == []
    assert [t.track_id for t in tracks] == fx.track_ids
    assert tracks.columns == (("", "track_id"), *TRACKS_COLUMNS)
    for t in tracks:
        assert t.subset == fx.subsets[t.track_id]
        assert t.split == fx.splits[t.track_id]
        assert t.genre_top == fx.genre_top[t.track_id]
    first = tracks[fx.track_ids[0]]
    assert first.artist.startswith(f"{DEFAULT_GENRES[0]} Artist")
    assert first.album == f"{first.artist} LP"
    assert first.title == f"{DEFAULT_GENRES[0]} Song 0"
    assert first.duration == 1.0
    # other columns are kept as raw strings, including quoted multi-line cells
    assert tracks.value(first, ("track", "license")).startswith("Attribution-NonCommercial")
    bio = tracks.value(first.track_id, ("artist", "bio"))
    assert "\nSecond line with \"quotes\", commas" in bio
    with pytest.raises(KeyError, match="no column"):
        tracks.value(first, ("track", "nope"))


def test_list_columns_parsed(fx: FmaFixture) -> None:
    tracks = load_tracks(fx.tracks_csv)
    for t in tracks:
        assert t.genres == fx.genres[t.track_id]
        assert t.genres_all == fx.genres_all[t.track_id]
        assert all(type(g) is int for g in t.genres_all)
    assert any(len(t.genres) > 1 for t in tracks)  # e.g. "[25, 66]"
    assert any(len(t.genres_all) > 2 for t in tracks)  # grandchild + parent + root


def test_subset_filter_is_nested(fx: FmaFixture) -> None:
    tracks = load_tracks(fx.tracks_csv)
    chosen = {s: {t.track_id for t in select(tracks, s)} for s in SUBSETS}
    assert chosen["small"] < chosen["medium"] < chosen["large"]
    for s in SUBSETS:
        assert chosen[s] == set(fx.ids(s))
    medium_only = {t for t, s in fx.subsets.items() if s == "medium"}
    assert medium_only and not medium_only & chosen["small"]
    assert chosen["large"] == set(fx.track_ids)
    assert tracks[min(medium_only)].in_subset("large")
    assert not tracks[min(medium_only)].in_subset("small")
    with pytest.raises(ValueError, match="unknown subset 'tiny'"):
        select(tracks, "tiny")


def test_official_split_respected(fx: FmaFixture) -> None:
    tracks = load_tracks(fx.tracks_csv)
    seen: set[int] = set()
    for split in SPLITS:
        ids = [t.track_id for t in select(tracks, "small", split)]
        assert ids == fx.ids("small", split)
        assert ids, split
        seen.update(ids)
    assert seen == set(fx.ids("small"))
    with pytest.raises(ValueError, match="unknown split"):
        select(tracks, "small", "train")


def test_audio_path_layout(fx: FmaFixture) -> None:
    assert audio_path(Path("fma_small"), 2) == Path("fma_small/000/000002.mp3")
    assert audio_path("x", 155320) == Path("x/155/155320.mp3")
    assert audio_path("x", 1000) == Path("x/001/001000.mp3")
    tracks = load_tracks(fx.tracks_csv)
    folders = set()
    for t in select(tracks, "small"):
        path = audio_path(fx.audio_dir, t.track_id)
        folders.add(path.parent.name)
        assert path.exists() == (fx.broken_kinds.get(t.track_id) != "missing"), t.track_id
    assert len(folders) > 1  # the fixture's ids span several 1000-blocks
    result = doctest.testmod(genretag.core.fma.layout)
    assert result.attempted >= 2 and result.failed == 0


def test_genre_tree(fx: FmaFixture) -> None:
    tree = load_genres(fx.genres_csv)
    assert tree.malformed == []
    assert tree.title(21) == "Hip-Hop"
    assert tree.parent(89) == 25 and tree.parent(12) is None
    assert tree.ancestors(89) == [25, 12]
    assert tree.ancestors(401) == [181, 15]
    assert tree.ancestors(12) == []
    assert tree.top_level(89) == 12 and tree.top_level(15) == 15
    assert {12, 15, 17, 21} <= set(tree.top_levels())
    assert 25 in tree.children(12) and 66 in tree.children(12)
    assert tree.with_ancestors([89, 181]) == [12, 15, 25, 89, 181]
    assert tree.id_of("Techno") == 181
    assert tree[25].n_tracks == sum(25 in g for g in fx.genres_all.values())
    with pytest.raises(KeyError, match="unknown genre id 99999"):
        tree.ancestors(99999)


def test_genre_tree_rejects_missing_parent(tmp_path: Path) -> None:
    path = tmp_path / "genres.csv"
    path.write_text("genre_id,#tracks,parent,title,top_level\n12,1,0,Rock,12\n25,1,77,Punk,12\n")
    with pytest.raises(FmaFormatError, match=r"genres.csv.*genre 25 \(Punk\) has parent 77"):
        load_genres(path)


def _append(path: Path, lines: list[str]) -> int:
    """Append raw lines to a CSV; returns the line number the first appended line gets."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "".join(line + "\n" for line in lines), encoding="utf-8")
    return text.count("\n") + 1


def test_malformed_rows_reported_with_line_numbers(
    fx: FmaFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tracks.csv"
    shutil.copy(fx.tracks_csv, path)
    good = load_tracks(path)
    width = len(good.columns)
    template = list(good[fx.track_ids[0]].raw)

    def row(**changes: str) -> str:
        cells = list(template)
        for key, value in changes.items():
            top, name = key.split("__")
            cells[good.column_index((top, name) if top else ("", "track_id"))] = value
        return ",".join(f'"{c}"' if ("," in c or "\n" in c or '"' in c) else c
                        for c in (x.replace('"', '""') for x in cells))

    bad = [
        "999991,too,few",                                                # wrong field count
        row(__track_id="abc"),                                           # non-integer id
        row(__track_id="999993", set__subset="tiny"),                    # unknown subset
        row(__track_id="999994", track__genres_all="[12, oops"),         # broken list literal
        row(__track_id=str(fx.track_ids[1])),                            # duplicate id
        row(__track_id="999996", set__split="train"),                    # unknown split
    ]
    # rows built from the template span two physical lines (multi-line bio): count per row
    lines = [_append(path, [b]) for b in bad]
    tracks = load_tracks(path)
    assert len(tracks) == len(good)  # bad rows rejected, good rows all kept
    got = [(m.line, m.track_id) for m in tracks.malformed]
    assert got == [(lines[0], "999991"), (lines[1], "abc"), (lines[2], "999993"),
                   (lines[3], "999994"), (lines[4], str(fx.track_ids[1])), (lines[5], "999996")]
    reasons = [m.reason for m in tracks.malformed]
    assert f"expected {width} fields, got 3" in reasons[0]
    assert "'abc' is not an integer" in reasons[1]
    assert "subset 'tiny'" in reasons[2]
    assert "genres_all" in reasons[3] and "list literal" in reasons[3]
    assert "duplicate track_id (first on line" in reasons[4]
    assert "split 'train'" in reasons[5]
    assert capsys.readouterr().out == ""  # reported, not printed
    with pytest.raises(FmaDataError) as err:
        load_tracks(path, strict=True)
    assert f"line {lines[0]} (id 999991)" in str(err.value)
    assert str(path) in str(err.value)


def test_wrong_header_gives_clear_error(fx: FmaFixture, tmp_path: Path) -> None:
    flat = tmp_path / "flat.csv"  # a single-header export (e.g. raw_tracks.csv)
    flat.write_text("track_id,genre_top,split\n2,Hip-Hop,training\n3,Rock,test\n")
    with pytest.raises(FmaFormatError, match=r"flat\.csv: third line is .*not 'track_id,,,\.\.\.'"):
        load_tracks(flat)

    no_split = tmp_path / "no_split.csv"
    lines = fx.tracks_csv.read_text(encoding="utf-8").split("\n")
    lines[0] = lines[0].replace(",set,set,", ",sett,set,", 1)  # ("sett", "split")
    no_split.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(FmaFormatError,
                       match=r"no_split\.csv: missing column\(s\) \('set', 'split'\)"):
        load_tracks(no_split)

    short = tmp_path / "short.csv"
    short.write_text(",track\n,genre_top\n")
    with pytest.raises(FmaFormatError, match=r"short\.csv: only 2 line\(s\)"):
        load_tracks(short)

    with pytest.raises(FmaFormatError, match=r"nowhere/tracks\.csv: FMA tracks\.csv not found"):
        load_tracks(tmp_path / "nowhere" / "tracks.csv")

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b",track\n,title\ntrack_id,\n2,Caf\xe9\n")
    with pytest.raises(FmaFormatError, match=r"latin1\.csv: unreadable CSV"):
        load_tracks(latin1)

    genres = tmp_path / "genres.csv"
    genres.write_text("id,name\n1,Rock\n")
    with pytest.raises(FmaFormatError, match=r"genres\.csv: not an FMA genres\.csv.*lacks "
                                             r"genre_id, parent, title"):
        load_genres(genres)


def test_info_command(fx: FmaFixture, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    fma_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fma", "info", "--fma-dir", str(fx.root), "--subset", "small"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    n_small = len(fx.ids("small"))
    assert f"subset small: {n_small} tracks" in out
    for split in SPLITS:
        assert f"{split:<12} {len(fx.ids('small', split)):>6}" in out
    per_genre = sum(1 for t in fx.ids("small") if fx.genre_top[t] == "Rock")
    assert any(line.split()[:2] == ["Rock", str(per_genre)] for line in out.splitlines())
    assert f"{n_small - 2} present, 1 missing, 1 empty" in out

    args = parser.parse_args(["fma", "info", "--fma-dir", str(fx.root / "nope")])
    assert args.func(args) == 1
    assert "tracks.csv not found" in capsys.readouterr().err
