"""Producer pieces without servers: sources on real files, ids, validation, selection, pacing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from genretag.core.settings import load_settings
from genretag.producer.settings import ProducerSettings
from genretag.producer.fma_source import default_audio_dir, fma_source
from genretag.producer.ids import fma_track_id, path_track_id, uri_track_id
from genretag.producer.publish import choose, publish
from genretag.producer.report import ProduceReport
from genretag.producer.send import RateLimiter
from genretag.producer.sources import Source, SourceRow, directory_source, jsonl_file_source, stdin_source
from genretag.producer.validate import prepare, validate_row
from tests.fixtures.fma import write_tracks_csv
from genretag.core.fma import FmaFormatError


def fma_row(track_id: int, subset: str = "small", split: str = "training",
            genre: str = "Rock", bio: str = "<p>bio</p>", **overrides: str) -> dict:
    """One tracks.csv row with the columns the loader needs (others empty)."""
    row = {
        ("", "track_id"): str(track_id), ("set", "subset"): subset, ("set", "split"): split,
        ("track", "genre_top"): genre, ("track", "genres"): "[12]",
        ("track", "genres_all"): "[12]", ("track", "title"): f"Song {track_id}",
        ("artist", "name"): f"Artist {track_id}", ("artist", "bio"): bio,
        ("track", "duration"): "30",
    }
    row.update({tuple(k.split(".", 1)): v for k, v in overrides.items()})
    return row


@pytest.fixture
def settings() -> ProducerSettings:
    return load_settings(ProducerSettings, kafka_bootstrap_servers="127.0.0.1:1")


# -- ids --------------------------------------------------------------------------------
def test_ids_are_stable_readable_and_follow_the_file(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "My Song (live).mp3"
    f.write_bytes(b"x")
    tid = path_track_id(f)
    assert tid.startswith("My_Song_live-") and len(tid.split("-")[-1]) == 12
    monkeypatch.chdir(tmp_path)
    assert path_track_id(Path("My Song (live).mp3")) == tid  # relative or absolute: same file
    assert uri_track_id(f.as_uri()) == tid  # file:// URI (percent-encoded) too
    assert uri_track_id(str(f)) == tid
    other = uri_track_id("https://cdn.example.com/a/b/track.mp3")
    assert other.startswith("track-")
    assert other == uri_track_id("https://cdn.example.com/a/b/track.mp3")
    assert fma_track_id(2) == "000002" and fma_track_id(155320) == "155320"


# -- directory ----------------------------------------------------------------------------
def test_directory_source_recursive_extensions_case_insensitive(tmp_path: Path) -> None:
    for rel in ("a/1.mp3", "a/b/2.FLAC", "c/3.wav", "c/notes.txt", "4.Mp3", "a/b/.hidden.ogg",
                "a/._1.mp3", ".git/x.mp3"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    everything = list(directory_source(tmp_path, ["mp3", ".flac", "OGG"], include_hidden=True))
    rels = [r.data["metadata"]["relpath"] for r in everything]
    assert rels == [".git/x.mp3", "4.Mp3", "a/._1.mp3", "a/1.mp3", "a/b/.hidden.ogg",
                    "a/b/2.FLAC"]
    assert all(r.data["track_id"] == path_track_id(r.data["uri"]) for r in everything)
    # By default hidden files (AppleDouble ._* included) are skipped rows, counted as
    # 'hidden'; hidden folders are not entered.
    rows = list(directory_source(tmp_path, ["mp3", ".flac", "OGG"]))
    sent = [r for r in rows if r.skip is None]
    assert [r.data["metadata"]["relpath"] for r in sent] == ["4.Mp3", "a/1.mp3", "a/b/2.FLAC"]
    assert [(Path(r.origin).name, r.skip) for r in rows if r.skip] == [
        ("._1.mp3", "hidden"), (".hidden.ogg", "hidden")]
    assert [r.data for r in directory_source(tmp_path, ["mp3", ".flac", "OGG"])] == \
        [r.data for r in rows]  # a second scan gives the same ids


# -- JSONL / stdin --------------------------------------------------------------------------
def test_jsonl_rows_carry_line_numbers_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "catalog.jsonl"
    f.write_text("\n".join([
        json.dumps({"track_id": "t1", "uri": "/music/1.mp3", "metadata": {"a": 1}}),
        "",
        "{not json",
        json.dumps({"uri": "/music/2.mp3"}),
        json.dumps([1, 2]),
        json.dumps({"track_id": "bad id!", "uri": "/x.mp3"}),
        json.dumps({"track_id": "t3"}),
    ]) + "\n")
    report = ProduceReport()
    good = list(prepare(jsonl_file_source(f, 8 * 65536), report))
    assert [p.ref.track_id for p in good] == ["t1", path_track_id("/music/2.mp3")]
    assert report.skipped == {"invalid": 4}
    assert report.errors[0] == f"{f}:3: invalid JSON: Expecting property name enclosed in " \
        "double quotes (column 2)"
    assert report.errors[1] == (f"{f}:5: expected a JSON object, got list: give one JSON object "
                                "per line (jq -c '.[]' catalog.json > catalog.jsonl)")
    assert report.errors[2].startswith(f"{f}:6: track_id: String should match pattern")
    assert report.errors[3] == f"{f}:7: uri: Field required"


def test_stdin_takes_jsonl_and_bare_paths(tmp_path: Path) -> None:
    stream = io.StringIO(f'{{"track_id": "j1", "uri": "/a.mp3"}}\n\n{tmp_path}/b.mp3\n{{oops\n')
    rows = list(stdin_source(stream))
    assert [(r.line, r.data.get("track_id")) for r in rows] == [
        (1, "j1"), (3, path_track_id(tmp_path / "b.mp3")), (4, None)]
    assert rows[2].error and rows[2].where == "<stdin>:4"


def test_oversized_message_is_rejected_with_its_line() -> None:
    row = SourceRow({"track_id": "t1", "uri": "/a.mp3", "metadata": {"x": "y" * 500}}, "f", 9)
    with pytest.raises(ValueError, match=r"^f:9: message is \d+ bytes, over the 300-byte cap"):
        validate_row(row, max_message_bytes=300)


# -- FMA -----------------------------------------------------------------------------------
def test_fma_source_subset_split_paths_metadata_and_csv_line_numbers(tmp_path: Path) -> None:
    meta = tmp_path / "fma_metadata"
    meta.mkdir()
    csv_path = meta / "tracks.csv"
    multi_line_bio = "<p>first line,\nsecond \"quoted\" line\nthird</p>"
    write_tracks_csv(csv_path, [
        fma_row(2, bio=multi_line_bio),                          # line 4 (spans 4-6)
        fma_row(5, split="test"),                                # line 7
        ["oops", "too", "few"],                                  # line 8: wrong field count
        fma_row(140, subset="medium", genre=""),                 # line 9
        fma_row(1234, subset="large"),                           # line 10
        fma_row(155320, split="validation", **{"set.subset": "tiny"}),  # line 11: bad subset
    ])
    audio = tmp_path / "fma_small"
    rows = list(fma_source(csv_path, audio, subset="small"))
    assert [(r.line, r.data.get("track_id"), r.error is not None) for r in rows] == [
        (4, "000002", False), (7, "000005", False), (8, None, True), (11, None, True)]
    assert rows[0].data["uri"] == str(audio.resolve() / "000" / "000002.mp3")
    assert rows[0].data["metadata"] == {
        "source": "fma", "genre_top": "Rock", "title": "Song 2", "artist": "Artist 2",
        "subset": "small", "split": "training"}
    assert "expected 53 fields, got 3" in rows[2].error
    assert "subset 'tiny'" in rows[3].error
    # Errors come out of validation with file:line.
    report = ProduceReport()
    assert [p.ref.track_id for p in prepare(rows, report)] == ["000002", "000005"]
    assert report.errors[0].startswith(f"{csv_path}:8: expected 53 fields")
    assert report.errors[1].startswith(f"{csv_path}:11: subset 'tiny'")

    medium = [r.data["track_id"] for r in fma_source(csv_path, audio, "medium") if not r.error]
    assert medium == ["000002", "000005", "000140"]
    test_split = [r.data["track_id"] for r in fma_source(csv_path, audio, "large", "test")
                  if not r.error]
    assert test_split == ["000005"]
    assert next(r for r in fma_source(csv_path, audio, "medium") if r.data.get(
        "track_id") == "000140").data["metadata"]["genre_top"] is None
    assert default_audio_dir(csv_path, "medium") == tmp_path / "fma_medium"
    assert default_audio_dir(tmp_path / "tracks.csv", "small") is None


def test_fma_source_rejects_a_csv_without_the_fma_header(tmp_path: Path) -> None:
    f = tmp_path / "tracks.csv"
    f.write_text("track_id,title\n1,a\n")
    with pytest.raises(FmaFormatError, match="three header rows"):
        list(fma_source(f, tmp_path))


# -- publish without a broker: dry run, strict, limit, selection ------------------------------
def rows(n: int, bad_at: int | None = None) -> list[SourceRow]:
    out = [SourceRow({"track_id": f"t{i}", "uri": f"/m/{i}.mp3"}, "mem", i) for i in range(n)]
    if bad_at is not None:
        out[bad_at] = SourceRow({"track_id": "x"}, "mem", bad_at)
    return out


def test_dry_run_counts_limits_and_dedups_without_a_broker(settings: ProducerSettings) -> None:
    data = rows(10) + [SourceRow({"track_id": "t3", "uri": "/m/3.mp3"}, "mem", 10)]
    report = publish(data, settings, dry_run=True, progress=False)
    assert (report.selected, report.enqueued, report.skipped) == (10, 0, {"duplicate": 1})
    assert report.ok and "would be enqueued" in report.summary()
    limited = publish(data, settings, dry_run=True, limit=4, progress=False)
    assert limited.selected == 4


def test_strict_stops_before_sending_even_from_a_one_shot_source(settings) -> None:
    # The broker address is unreachable: reaching the send step would fail, not return.
    for source in (rows(5, bad_at=3), iter(rows(5, bad_at=3)),
                   Source("gen", lambda: iter(rows(5, bad_at=3)))):
        report = publish(source, settings, strict=True, progress=False)
        assert report.strict_aborted and not report.ok and report.selected == 0
        assert report.errors == ["mem:3: uri: Field required"]


def test_strict_one_shot_source_keeps_the_validated_rows(settings) -> None:
    report = publish(iter(rows(6)), settings, strict=True, dry_run=True, progress=False)
    assert report.selected == 6 and report.ok


def test_chooser_is_asked_in_chunks_and_limit_counts_chosen_rows() -> None:
    calls: list[int] = []

    def odd_only(refs):
        calls.append(len(refs))
        return [None if int(r.track_id[1:]) % 2 else "even" for r in refs]

    report = ProduceReport()
    items = prepare(rows(600), report)
    chosen = [p.ref.track_id for p in choose(items, report, odd_only, limit=200)]
    assert chosen == [f"t{i}" for i in range(1, 400, 2)]
    assert calls == [256, 256] and report.skipped["even"] == 200


def test_rate_limiter_paces_without_bursts() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()
    assert slept == [0.25, 0.25, 0.25, 0.25] and now[0] == 1.0
    RateLimiter(None).wait()  # no limit: returns at once
