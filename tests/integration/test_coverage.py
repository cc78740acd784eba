"""What a user gets back from `genretag tag` at default settings (issue 27): the whole track
analysed (a 3-minute section of another style inside a 20-minute track is found and shown),
a genre on every tagged track, rows streamed with their paths, hidden files skipped, and
Ctrl-C printing what finished. Real FFmpeg-made audio, the real demo model, no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from genretag.cli import main
from genretag.cli.display import clock, shorten_middle
from genretag.cli.read_cli import TRACK_WIDTH
from genretag.core.timeline import timeline_sections
from genretag.schemas import TagRecord
from genretag.training.synth import synth_clip, synth_track

ROOT = Path(__file__).resolve().parents[2]
#: 20 minutes: techno, a 3-minute ambient section at 8:00-11:00, techno again (17 min).
SECTION = (480.0, 660.0)


@pytest.fixture(scope="module")
def twenty_minutes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 20-minute mp3: a rendered minute of techno repeated around a rendered 3-minute
    ambient section, joined without re-encoding (rendering 20 minutes costs ~1 min of CPU)."""
    root = tmp_path_factory.mktemp("long")
    techno = synth_track(root / "techno.mp3", [("techno", 60.0)], seed=3, bitrate="64k")
    ambient = synth_track(root / "ambient.mp3", [("ambient", SECTION[1] - SECTION[0])], seed=4,
                          bitrate="64k")
    parts = [techno] * int(SECTION[0] // 60) + [ambient] + [techno] * int((1200 - SECTION[1]) // 60)
    listing = root / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out = root / "twenty.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-c", "copy", str(out)], check=True)
    return out


def test_other_style_section_of_a_20_minute_track_is_found_at_default_settings(
        twenty_minutes: Path, demo_model: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["tag", str(twenty_minutes), "--model", str(demo_model), "--jsonl",
                 "--timeline", "--device", "cpu"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert row["path"] == str(twenty_minutes)
    rec = TagRecord.model_validate({k: v for k, v in row.items() if k != "path"})
    assert rec.primary_genre == "techno" and rec.duration_s == pytest.approx(1200.0, abs=1.0)
    tl = rec.timeline
    assert tl is not None and len(tl.starts) >= 40  # the whole 20 minutes, a window per 30 s
    inside = [s for s in tl.starts if SECTION[0] <= s and s + tl.clip_seconds <= SECTION[1]]
    assert len(inside) >= 5
    # The timeline read as sections: the ambient one, where it is (within a window spacing).
    spacing = tl.starts[1] - tl.starts[0]
    ambient = [s for s in timeline_sections(tl) if s.label == "ambient"]
    assert len(ambient) == 1, timeline_sections(tl)
    assert SECTION[0] - spacing <= ambient[0].start_s <= SECTION[0] + spacing
    assert SECTION[1] - spacing <= ambient[0].end_s <= SECTION[1] + spacing
    assert ambient[0].top[0][1] > 0.5
    # ... and among the track's tags: second most probable of the whole track.
    ranked = sorted(rec.probabilities, key=rec.probabilities.__getitem__, reverse=True)
    assert ranked[:2] == ["techno", "ambient"]

    # What a person reads: the row (path, genre) and the section as a time range.
    assert main(["tag", str(twenty_minutes), "--model", str(demo_model), "--timeline",
                 "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    row_line = table.splitlines()[1]
    assert row_line.split()[:3] == [shorten_middle(str(twenty_minutes), TRACK_WIDTH), "techno",
                                    "techno"]
    start, end = ambient[0].start_s, ambient[0].end_s
    span = f"{clock(start)}-{clock(end)}"
    assert any(span in line and line.split()[1] == "ambient" for line in table.splitlines()), \
        table

    # The old default, 4 windows, never looked inside the section: this is what it fixes.
    assert main(["tag", str(twenty_minutes), "--model", str(demo_model), "--jsonl",
                 "--timeline", "--max-windows", "4", "--device", "cpu"]) == 0
    few = TagRecord.model_validate(
        {k: v for k, v in json.loads(capsys.readouterr().out).items() if k != "path"})
    assert few.timeline is not None and not any(
        s.label == "ambient" for s in timeline_sections(few.timeline))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 short clips, a hidden copy, an AppleDouble ._ file (not audio) and a hidden folder."""
    root = tmp_path_factory.mktemp("folder")
    first = synth_clip(root / "clip_00.mp3", "techno", 7.0, seed=0)
    for k in range(1, 24):
        synth_clip(root / f"clip_{k:02d}.mp3", ["ambient", "chiptune", "noise"][k % 3], 7.0, k)
    (root / ".hidden.mp3").write_bytes(first.read_bytes())
    (root / "._clip_00.mp3").write_bytes(b"\x00\x05\x16\x07" + bytes(4000))  # AppleDouble
    (root / ".trash").mkdir()
    (root / ".trash" / "old.mp3").write_bytes(first.read_bytes())
    return root


def test_tag_dir_skips_hidden_files_unless_asked(folder: Path, demo_model: Path,
                                                 capsys) -> None:
    capsys.readouterr()
    assert main(["tag", str(folder), "--model", str(demo_model), "--json",
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert len(rows) == 24 and all(r["primary_genre"] for r in rows)
    assert not any("/." in r["path"] for r in rows)
    assert "skipped 2 hidden file(s)" in err and "tagged 24 of 24 file(s)" in err
    # Asked for: the hidden copy tags, the AppleDouble file is refused as the worker would.
    assert main(["tag", str(folder), "--model", str(demo_model), "--json", "--include-hidden",
                 "--device", "cpu"]) == 1
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 27 and rows[".hidden.mp3"]["primary_genre"] == "techno"
    assert rows["._clip_00.mp3"]["error"]["reason"] == "undecodable"


def test_rows_stream_as_files_finish_and_ctrl_c_prints_what_finished(
        folder: Path, demo_model: Path) -> None:
    """A pipe reads the first file's JSON line while the rest are still being tagged; SIGINT
    then ends the run with exit 130, every finished line printed and the summary saying so."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genretag", "--log-level", "WARNING", "tag", str(folder),
         "--model", str(demo_model), "--jsonl", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["path"] == str(folder / "clip_00.mp3") and first["primary_genre"]
        assert first["track_id"].startswith("clip_00-")
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        rest, err = proc.stdout.read(), proc.stderr.read()  # communicate() would skip the
        # lines readline() already buffered
    finally:
        proc.kill()
    assert still_running  # the first row came out while files were left
    lines = [json.loads(line) for line in rest.splitlines()]
    done = 1 + len(lines)
    assert proc.returncode == 130, err
    assert done < 24 and f"interrupted after {done} of 24 file(s)" in err, err
    assert [r["path"] for r in lines] == [str(folder / f"clip_{k:02d}.mp3")
                                          for k in range(1, done)]
