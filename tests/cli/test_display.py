"""What people read: names shortened in the middle, timelines read as sections."""

from __future__ import annotations

from genretag.cli.display import clock, shorten_middle
from genretag.cli.read_cli import TRACK_WIDTH, table_header, table_row
from genretag.core.timeline import build_timeline, timeline_sections
from genretag.schemas import TagRecord


def test_shorten_middle_keeps_both_ends_and_the_width() -> None:
    tid = "chaos_god_and_the_very_long_title_of_this_song-885c2a1b3d4e"
    short = shorten_middle(tid, 24)
    assert len(short) == 24 and short.startswith("chaos_god_") and short.endswith("885c2a1b3d4e")
    assert "…" in short
    assert shorten_middle("short", 24) == "short"
    assert shorten_middle("a\x1b[31mred", 40) == "a\\x1b[31mred"  # escapes stay escaped
    assert len(shorten_middle(tid, 1)) == 1
    assert clock(59.6) == "1:00" and clock(1201.0) == "20:01"


def test_table_rows_stay_aligned_with_long_names_and_show_the_genre() -> None:
    rec = TagRecord(track_id="x" * 80 + "-885c2a1b3d4e", model_version="m",
                    probabilities={"adventure": 0.62, "metal": 0.38, "a" * 60: 0.3},
                    labels=[], primary_genre="adventure")
    row = table_row(rec.track_id, rec)
    header = table_header()
    assert row.index("adventure") == header.index("genre") == TRACK_WIDTH + 1
    assert row.split()[0].endswith("885c2a1b3d4e")
    assert row.split()[2] == "-"  # no label over its threshold, still a genre
    assert row.rstrip().endswith(" m") and row.index(" m", len(header) - 8) == header.index(" model")


def test_timeline_sections_are_runs_of_the_same_top_label() -> None:
    labels = ["techno", "ambient"]
    probs = [[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.0, 0.0], [0.7, 0.3]]
    silent = [False, False, False, False, True, False]
    tl = build_timeline(labels, 6.0, [10.0, 40.0, 70.0, 100.0, 130.0, 160.0], probs, silent)
    got = [(s.start_s, s.end_s, s.windows, s.label, s.top[0][1]) for s in timeline_sections(tl)]
    assert got == [(10.0, 46.0, 2, "techno", 0.85), (70.0, 106.0, 2, "ambient", 0.85),
                   (160.0, 166.0, 1, "techno", 0.7)]  # the silent window splits and is left out
    assert timeline_sections(build_timeline(labels, 6.0, [0.0], [[0.5, 0.5]], [True])) == []
