"""Whole tracks end to end on the real stack: windows over the full duration, true
``duration_s``, a quiet intro that no longer dead-letters, the genre timeline in Redis and on
the command line, and ``genretag tag`` printing exactly what the worker stored."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from genretag.core.store import connect
from tests.store_parts import store_parts
from genretag.cli import main
from genretag.producer.ids import path_track_id
from tests.integration.helpers import produce_refs, refs_for
from genretag.training.synth import synth_track
from genretag.worker.loop import run

pytestmark = pytest.mark.integration

#: A 6-minute track: a 30 s silent intro, then four demo classes (start, end, label).
SEGMENTS = [(None, 30.0), ("techno", 90.0), ("ambient", 90.0), ("chiptune", 90.0), ("noise", 60.0)]
CLIP = 6.0  # the demo model's clip


def _spans() -> list[tuple[float, float, str | None]]:
    out, t = [], 0.0
    for label, seconds in SEGMENTS:
        out.append((t, t + seconds, label))
        t += seconds
    return out


@pytest.fixture(scope="module")
def long_tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("long")
    mix = synth_track(root / "mix.mp3", SEGMENTS, seed=5)
    vbr = root / "vbr-no-xing.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(mix), "-t", "200",
                    "-c:a", "libmp3lame", "-q:a", "6", "-write_xing", "0", str(vbr)], check=True)
    liar = root / "liar.wav"  # RIFF/data sizes claim ~37 h; 20 s of audio
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(mix), "-ss", "40",
                    "-t", "20", "-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le", str(liar)], check=True)
    raw = bytearray(liar.read_bytes())
    raw[4:8] = struct.pack("<I", 0xFFFFFFF0)
    at = raw.index(b"data")
    raw[at + 4:at + 8] = struct.pack("<I", 0x7FFFFFF0)
    liar.write_bytes(bytes(raw))
    silent = synth_track(root / "silent.mp3", [(None, 40.0)], seed=1)
    return {"mix": mix, "vbr": vbr, "liar": liar, "silent": silent}


def test_whole_tracks_timeline_and_one_shot_tagging(worker_settings, long_tracks, demo_model,
                                                    tmp_path: Path, capsys) -> None:
    # 24 windows over 6 minutes: one per 15 s (the default, one per 30 s, gives 12).
    settings = worker_settings(max_windows=24, window_every=15.0,
                               allowed_roots=[str(tmp_path), "/tmp"])
    paths = [long_tracks[k] for k in ("mix", "vbr", "liar", "silent")]
    produce_refs(settings, refs_for(paths))
    stats = run(settings, until_idle=True)
    assert stats.tagged == 3 and stats.dead_lettered == 1

    store = store_parts(connect(settings.redis), settings.redis.key_prefix)
    letters = {e.key: e.letter for e in store.dead.scan() if e.letter}
    assert letters[path_track_id(long_tracks["silent"])].reason.value == "silent"
    rec = store.reader.get(path_track_id(long_tracks["mix"]))
    assert rec is not None and rec.timeline is not None
    assert rec.duration_s == pytest.approx(360.0, abs=1.0)  # the real duration, not 24 s
    tl = rec.timeline
    assert len(tl.starts) == 24 and tl.clip_seconds == CLIP
    assert tl.starts[0] <= 10.0 and tl.starts[-1] + CLIP >= 360.0 - 10.0 - 0.5  # whole track
    # The quiet intro's windows are silent and left out; the track is still tagged.
    assert all(q == (s + CLIP <= 30.0) for s, q in zip(tl.starts, tl.silent, strict=True)
               if not 28.0 < s + CLIP < 32.0)
    # Class changes at the right times, within one window.
    spacing = tl.starts[1] - tl.starts[0]
    hits = total = 0
    for start, row, quiet in zip(tl.starts, tl.probabilities, tl.silent, strict=True):
        if quiet:
            continue
        top = tl.labels[max(range(len(row)), key=row.__getitem__)]
        allowed = {label for a, b, label in _spans()
                   if a - spacing <= start + CLIP and start <= b + spacing}
        assert top in allowed, (start, top, allowed)
        inside = [label for a, b, label in _spans() if a <= start and start + CLIP <= b]
        total += 1
        hits += inside == [top]
    assert hits >= 0.8 * total, (hits, total)

    # Files whose header lies still tag, with their true duration.
    vbr = store.reader.get(path_track_id(long_tracks["vbr"]))
    assert vbr is not None and vbr.duration_s == pytest.approx(200.0, abs=1.0)
    liar = store.reader.get(path_track_id(long_tracks["liar"]))
    assert liar is not None and liar.duration_s == pytest.approx(20.0, abs=1.0)

    # genretag tags ID --timeline: table, JSON, plot; re-tag keeps exactly one timeline.
    base = ["tags", rec.track_id, "--redis-url", settings.redis.url,
            "--redis-key-prefix", settings.redis.key_prefix]
    capsys.readouterr()
    assert main([*base, "--timeline"]) == 0
    table = capsys.readouterr().out
    assert "(silent)" in table and "techno" in table and table.count("\n") >= 24
    assert main([*base, "--timeline", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)[rec.track_id]
    assert [w["start_s"] for w in shown["windows"]] == tl.starts
    png = tmp_path / "timeline.png"
    assert main([*base, "--plot", str(png)]) == 0
    assert matplotlib.image.imread(png).shape[0] > 100
    assert capsys.readouterr().out == table  # --plot also prints the table
    assert main([*base, "--json"]) == 0  # the plain view stays small: no timeline
    assert "timeline" not in json.loads(capsys.readouterr().out)[rec.track_id]

    # genretag tag: no stack, same code → exactly what the worker stored.
    assert main(["tag", str(long_tracks["mix"]), str(long_tracks["silent"]), "--model",
                 str(demo_model), "--max-windows", "24", "--window-every", "15", "--json",
                 "--timeline",
                 "--device", "cpu"]) == 1  # the silent file is not tagged
    out = json.loads(capsys.readouterr().out)
    one = out[0]
    assert one["track_id"] == rec.track_id
    for key in ("probabilities", "labels", "duration_s", "model_version", "timeline"):
        assert one[key] == rec.model_dump(mode="json")[key], key
    assert out[1]["error"]["reason"] == "silent"


def test_timeline_is_written_with_the_tags_and_removed_on_retag(stack) -> None:
    """One Lua write: the timeline field lands with the tags; a re-tag without one removes it,
    a redelivery leaves exactly the same hash."""
    import uuid

    import numpy as np

    from genretag.core.settings import ReaderSettings, load_settings
    from genretag.core.timeline import build_timeline
    from genretag.schemas import TagRecord

    store = store_parts(connect(load_settings(ReaderSettings, redis_url=stack.redis_url).redis),
                     f"tl{uuid.uuid4().hex[:6]}:")
    tl = build_timeline(["pop", "rock"], 6.0, [10.0, 100.0, 190.0],
                        np.array([[0.2, 0.8], [0.9, 0.1], [0.0, 0.0]]), [False, False, True])
    with_tl = TagRecord(track_id="t1", model_version="v1", probabilities={"pop": 0.55, "rock": 0.45},
                        labels=["pop"], duration_s=200.0, timeline=tl)
    store.writer.write([with_tl])
    raw = store.client.hget(store.keys.track("t1"), "timeline")
    assert raw is not None and len(raw) < 120  # compact
    assert store.reader.get("t1").timeline == tl
    before = store.client.hgetall(store.keys.track("t1"))
    store.writer.write([with_tl])  # redelivery: the very same hash
    assert store.client.hgetall(store.keys.track("t1")) == before
    store.writer.write([with_tl.model_copy(update={"timeline": None, "model_version": "v0"})])
    assert store.client.hget(store.keys.track("t1"), "timeline") is None
    assert store.reader.get("t1").timeline is None
