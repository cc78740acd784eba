"""Whole-track decoding with real FFmpeg: probe, window placement, seeking, lying headers.

Also the timeline codec and the whole-track silence / too-short judgement. The tracks are
generated (see ``training.synth.synth_track``), so their true durations are known exactly.
"""

from __future__ import annotations

import os
import re
import resource
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from genretag.core.audio.aggregate import aggregate, silent_windows, vet_track
import genretag.core.audio.libav.decode as libav
import genretag.core.audio.libav.media as libav_media
from genretag.core.audio.decoders import Decoder, DecodeOptions, WindowedAudio, open_decoder
from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.audio.ffmpeg.probe import measure_duration, parse_probe, probe_durations
from genretag.core.audio.placement import Placement, place_windows
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError
from genretag.core.settings import WindowSection
from genretag.core.timeline import build_timeline, decode_timeline, encode_timeline
from genretag.schemas import ReasonCode
from genretag.training.synth import synth_track

SR = 16000


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def _src(path: Path) -> AudioSource:
    return AudioSource(target=str(path.resolve()), is_local=True, size_bytes=path.stat().st_size)


FFMPEG = open_decoder("ffmpeg")


def decode_windows_many(sources: list[AudioSource], sample_rate: int, placement: Placement, *,
                        decoder: Decoder = FFMPEG, **kwargs) -> list:
    """Each source's windows from ``decoder`` (the FFmpeg backend unless told)."""
    return decoder.decode_tracks(sources, sample_rate, placement, **kwargs)


def decode_windows(source: AudioSource, sample_rate: int, placement: Placement,
                   **kwargs) -> WindowedAudio:
    """One file's windows from the FFmpeg backend; raises the file's PermanentError."""
    [got] = decode_windows_many([source], sample_rate, placement, **kwargs)
    if isinstance(got, PermanentError):
        raise got
    return got


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """10-min and 5-min CBR mp3s, a 30 s clip, a VBR mp3 without Xing header, a lying WAV, junk."""
    root = tmp_path_factory.mktemp("whole")
    out = {
        "long": root / "long.mp3", "clip": root / "clip.mp3", "vbr": root / "vbr.mp3",
        "liar": root / "liar.wav", "junk": root / "junk.mp3", "tiny": root / "tiny.mp3",
        "five": root / "five.mp3",
    }
    _ffmpeg("-f", "lavfi", "-i", "sine=f=330:d=600:r=22050", "-b:a", "64k", str(out["long"]))
    _ffmpeg("-f", "lavfi", "-i", "sine=f=330:d=30:r=22050", "-b:a", "64k", str(out["clip"]))
    _ffmpeg("-f", "lavfi", "-i", "sine=f=330:d=300:r=22050", "-b:a", "64k", str(out["five"]))
    _ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=200:r=22050:a=0.3,volume='if(lt(t,100),0.05,1)':eval=frame",
            "-c:a", "libmp3lame", "-q:a", "5", "-write_xing", "0", str(out["vbr"]))
    _ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=20:r=8000", "-c:a", "pcm_s16le", str(out["liar"]))
    raw = bytearray(out["liar"].read_bytes())  # RIFF and data sizes claim ~37 hours of audio
    raw[4:8] = struct.pack("<I", 0xFFFFFFF0)
    data = raw.index(b"data")
    raw[data + 4:data + 8] = struct.pack("<I", 0x7FFFFFF0)
    out["liar"].write_bytes(bytes(raw))
    out["junk"].write_bytes(np.random.default_rng(0).bytes(50_000))
    _ffmpeg("-f", "lavfi", "-i", "sine=f=330:d=0.4:r=22050", "-b:a", "64k", str(out["tiny"]))
    return out


def test_placement_spreads_windows_over_the_whole_track() -> None:
    p = Placement(clip_seconds=6.0, max_windows=4, skip_start_s=10.0, skip_end_s=10.0)
    starts = place_windows(600.0, p)
    assert starts == [10.0, 201.333, 392.667, 584.0]
    assert starts[-1] + 6.0 == pytest.approx(600.0 - 10.0)
    assert place_windows(3.0, p) == [0.0]  # shorter than a clip: one padded window
    # Too short to spare the whole intro and outro: less is skipped, no window is lost.
    assert place_windows(30.0, p) == [3.0, 9.0, 15.0, 21.0]
    assert place_windows(20.0, p) == [0.0, 4.667, 9.333, 14.0]
    assert place_windows(7.0, Placement(6.0, 4)) == [0.0, 1.0]
    assert place_windows(100.0, Placement(6.0, 1, 10.0, 10.0)) == [47.0]  # middle of the span
    with pytest.raises(ValueError):
        Placement(6.0, max_windows=0)


def test_default_coverage_is_the_whole_clip_then_a_window_every_few_seconds() -> None:
    """The coverage policy at default settings: a 30 s clip end to end (musicnn's taggram: 10
    back-to-back 3 s windows; 5 of 6 s for the demo model), a long track one window per
    ``window_every`` over its whole length (20 minutes: >= 40), never past ``max_windows``."""
    section = WindowSection()  # the defaults the worker and `genretag tag` use
    msd, demo = Placement.of(3.0, section), Placement.of(6.0, section)
    assert place_windows(30.0, msd) == [3.0 * k for k in range(10)]
    assert place_windows(30.0, demo) == [0.0, 6.0, 12.0, 18.0, 24.0]
    assert place_windows(12.0, msd) == [0.0, 3.0, 6.0, 9.0]
    for p in (msd, demo):
        starts = place_windows(1200.0, p)
        assert len(starts) == 1200 / section.every_s >= 40 and section.max_windows >= 64
        gaps = np.diff(starts)
        assert gaps.max() - gaps.min() < 0.01  # evenly spread
        assert gaps.max() - p.clip_seconds < section.every_s  # no longer stretch left unseen
        assert starts[0] == section.skip_start_s
        assert starts[-1] + p.clip_seconds == pytest.approx(1200.0 - section.skip_end_s)
        # Past the cap the windows spread further apart instead of growing in number.
        assert len(place_windows(4 * 3600.0, p)) == section.max_windows
    # Longer than 10 clips, never fewer windows than a 10-clip track got.
    assert len(place_windows(31.0, msd)) == 10 and len(place_windows(300.0, msd)) == 10
    counts = [len(place_windows(d, msd)) for d in range(1, 4000, 7)]
    assert counts == sorted(counts)  # more track, never fewer windows
    # Encoder padding (a 30 s mp3 decodes to 30.04 s) earns no extra, overlapping window.
    assert place_windows(30.04, msd) == pytest.approx([3.0 * k for k in range(10)], abs=0.03)
    assert len(place_windows(30.04, demo)) == 5 and len(place_windows(1200.1, msd)) == 40
    dense = Placement(3.0, 64, every_s=1.0)  # denser than back to back: back to back
    assert place_windows(60.0, dense) == [3.0 * k for k in range(20)]
    with pytest.raises(ValueError):
        Placement(3.0, 4, every_s=-1.0)


def test_probe_reads_every_header_of_a_group_even_past_a_bad_file(tracks) -> None:
    got = probe_durations([_src(tracks[k]) for k in ("long", "junk", "clip", "vbr")])
    assert got[0].duration_s == pytest.approx(600.0, abs=0.1) and got[0].trusted
    assert got[1].duration_s is None and not got[1].trusted
    assert got[2].duration_s == pytest.approx(30.0, abs=0.1)
    assert got[3].estimated and not got[3].trusted  # VBR without Xing: bitrate guess
    assert measure_duration(_src(tracks["vbr"]), cap_s=3600) == pytest.approx(200.0, abs=0.2)
    assert measure_duration(_src(tracks["long"]), cap_s=60) == pytest.approx(60.0, abs=0.1)
    assert measure_duration(_src(tracks["junk"]), cap_s=60) is None


def test_parse_probe_ignores_metadata_that_looks_like_a_duration() -> None:
    text = ("Input #0, mp3, from 'file:x':\n  Metadata:\n    comment         : x\n"
            "                    :   Duration: 09:00:00.00\n  Duration: 00:01:02.50, start: 0\n")
    assert parse_probe(text)[0].duration_s == pytest.approx(62.5)


def test_windows_cover_the_whole_long_track_and_duration_is_true(tracks) -> None:
    p = Placement(clip_seconds=6.0, max_windows=8, skip_start_s=5.0, skip_end_s=5.0)
    got = decode_windows(_src(tracks["long"]), SR, p)
    assert got.duration_s == pytest.approx(600.0, abs=1.0)
    assert got.starts[0] == 5.0 and got.starts[-1] == pytest.approx(589.0, abs=0.2)
    assert len(got.starts) == 8 and got.windows.shape == (8, 6 * SR)
    assert all(n == 6 * SR for n in got.lengths)
    # Each window really holds the audio at its start: same samples as a plain decode there.
    ref = decode_audio(_src(tracks["long"]), DecodeOptions(SR, 6.0, offset_seconds=got.starts[3]))
    assert np.allclose(got.windows[3, :len(ref)], ref, atol=1e-6)


def test_vbr_without_xing_is_measured_and_tagged_in_full(tracks) -> None:
    got = decode_windows(_src(tracks["vbr"]), SR, Placement(6.0, 4))
    assert got.duration_from == "measured"
    assert got.duration_s == pytest.approx(200.0, abs=1.0)
    assert got.starts[-1] == pytest.approx(194.0, abs=0.2)


def test_header_claiming_hours_stays_bounded(tracks) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = decode_windows(_src(tracks["liar"]), SR, Placement(6.0, 16), timeout_s=20)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert got.duration_s == pytest.approx(20.0, abs=1.0)  # measured, not the 37 h claimed
    assert got.duration_from == "measured"
    assert got.windows.nbytes <= 16 * 6 * SR * 4  # never more than the windows
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 10


def test_bad_files_get_the_decoders_own_errors(tracks) -> None:
    res = decode_windows_many([_src(tracks[k]) for k in ("clip", "junk", "tiny")], SR,
                              Placement(6.0, 4), track_ids=["a", "b", "c"])
    assert not isinstance(res[0], Exception) and len(res[0].starts) == 4
    assert isinstance(res[1], PermanentError) and res[1].reason == ReasonCode.UNDECODABLE
    with pytest.raises(PermanentError) as plain:
        decode_audio(_src(tracks["junk"]), DecodeOptions(SR, 6.0), "b")
    assert _no_addresses(res[1]) == _no_addresses(plain.value) and res[1].track_id == "b"
    tiny = res[2]
    assert not isinstance(tiny, Exception) and tiny.duration_s == pytest.approx(0.4, abs=0.1)
    with pytest.raises(PermanentError) as short:
        vet_track(tiny.duration_s, tiny.decoded_samples / SR,
                  silent_windows(tiny.windows, tiny.lengths), min_seconds=1.0)
    assert short.value.reason == ReasonCode.TOO_SHORT


def _no_addresses(exc: Exception) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x", str(exc))


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds of the decoders: this process's reaped children (FFmpeg) and the live
    ``pids`` (the libav decoder processes, which ``RUSAGE_CHILDREN`` counts only once they
    exit). This process's own share (pipes, bookkeeping) is the same for any track length."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = r.ru_utime + r.ru_stime
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


#: The windows of the cost tests: 4 of 6 s, 5 s of intro and outro skipped.
COST_PLACEMENT = Placement(6.0, 4, 5.0, 5.0)


def _window_cost(names: tuple[str, str], tracks, decoder: Decoder) -> dict[str, list]:
    """CPU of decoding 8 files' windows, for each of ``names``, 5 interleaved runs each."""
    pids = decoder.pool.pids() if decoder.name == "libav" else []  # type: ignore[attr-defined]
    runs: dict[str, list[float]] = {name: [] for name in names}
    for name in runs:  # warm caches
        decode_windows_many([_src(tracks[name])] * 8, SR, COST_PLACEMENT, decoder=decoder)
    for _ in range(5):  # interleaved, so both see the same spells of a busy host
        for name in runs:
            start = _cpu_of(pids)
            decode_windows_many([_src(tracks[name])] * 8, SR, COST_PLACEMENT, decoder=decoder)
            runs[name].append(_cpu_of(pids) - start)
    return runs


#: CPU a minute of track may add to one seek: the packet scan of an exact mp3 seek (measured
#: 2-4 ms with libav, 3-5 ms with the FFmpeg command line). Decoding the track through instead of
#: seeking would add ~50 ms a minute.
SCAN_S_PER_MINUTE = 0.005


def _scanned_minutes(decoder: str, duration_s: float) -> float:
    """Minutes of packets read to reach a file's windows: libav reads a file once, in order, up
    to its last window; the FFmpeg command line reads from the start for each window input."""
    starts = place_windows(duration_s, COST_PLACEMENT)
    return (max(starts) if decoder == "libav" else sum(starts)) / 60


@pytest.mark.parametrize("decoder", ["libav", "ffmpeg"])
def test_decode_cost_grows_only_by_the_packet_scan(tracks, decoder: str) -> None:
    """A 10-min track's windows cost a 30 s clip's plus a packet scan, with either decoder.

    mp3 has no index, so an exact seek reads the packets before it (no decode; ``-fflags
    fastseek`` lands a frame off).
    """
    opened = open_decoder(decoder, 1)
    try:
        runs = _window_cost(("clip", "long"), tracks, opened)
    finally:
        opened.close()
    cost = {name: float(np.median(values)) for name, values in runs.items()}
    extra = _scanned_minutes(decoder, 600.0) - _scanned_minutes(decoder, 30.0)
    scan = 8 * extra * SCAN_S_PER_MINUTE  # 8 files
    # 25 %: shared VMs' CPU time varies that much between identical runs (measured 0.65-1.2 s).
    # Decoding the long track through would add ~3.8 s (8 x 9.5 min x ~50 ms).
    assert cost["long"] <= 1.25 * (cost["clip"] + scan) + 0.02, (runs, scan)


def test_libav_decodes_only_the_windows(tracks, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CPU figure above stands for, counted exactly: of a 10-min track, libav decodes
    the windows and their seek pre-roll, nothing else (the same as of a 30 s clip)."""
    decoded: list[int] = []
    frames = libav_media._frames

    def counted(container, stream):
        for frame in frames(container, stream):
            decoded.append(frame.samples)
            yield frame

    monkeypatch.setattr(libav_media, "_frames", counted)
    starts = [5.0, 201.3, 397.7, 589.0]
    for name in ("clip", "long"):
        decoded.clear()
        at = starts if name == "long" else [5.0, 11.0, 17.0, 23.0]
        req = libav.Request(str(tracks[name]), SR, 4 * 6 * SR, windows=tuple((s, 6.0) for s in at))
        spans = libav.decode_file(req)
        assert [len(w) for w in spans] == [6 * SR] * 4
        in_rate = 22050  # the tracks' own rate: frames count input samples
        most = 4 * (6.0 + libav.SEEK_PREROLL_S + 0.2) * in_rate  # + a frame or two at each end
        assert 0 < sum(decoded) <= most, (name, sum(decoded), most)  # counted, and bounded


def test_quiet_intro_is_not_a_silent_track(tmp_path: Path) -> None:
    path = synth_track(tmp_path / "intro.mp3", [(None, 30.0), ("techno", 30.0)], seed=1)
    got = decode_windows(_src(path), SR, Placement(6.0, 8))
    silent = silent_windows(got.windows, got.lengths)
    assert silent[0] and not silent[-1]
    vet_track(got.duration_s, got.decoded_samples / SR, silent, min_seconds=1.0)  # no raise
    probs = np.array([[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 4)
    assert np.allclose(aggregate(probs, silent, "mean"), probs[~silent].mean(axis=0))
    quiet = synth_track(tmp_path / "quiet.mp3", [(None, 20.0)], seed=1)
    q = decode_windows(_src(quiet), SR, Placement(6.0, 4))
    with pytest.raises(PermanentError) as exc:
        vet_track(q.duration_s, q.decoded_samples / SR, silent_windows(q.windows, q.lengths), 1.0)
    assert exc.value.reason == ReasonCode.SILENT


def test_trimmed_aggregation_ignores_outlying_windows() -> None:
    probs = np.array([[0.9]] * 6 + [[0.0]] * 2)
    silent = np.zeros(8, dtype=bool)
    assert aggregate(probs, silent, "mean")[0] == pytest.approx(0.675)
    assert aggregate(probs, silent, "trimmed")[0] == pytest.approx(0.9)


def test_timeline_codec_round_trips_and_rejects_garbage() -> None:
    tl = build_timeline(["a", "b"], 6.0, [5.0, 100.5], np.array([[0.12345, 0.9], [1.0, 0.0]]),
                        [False, True])
    text = encode_timeline(tl)
    assert decode_timeline(text) == tl
    assert tl.probabilities[0] == [0.123, 0.9]
    assert len(text) < 120
    for bad in ("{}", "[1]", '{"v":1,"c":6,"l":["a"],"t":[0],"p":[2000],"s":"0"}', "nope"):
        with pytest.raises(ValueError):
            decode_timeline(bad)


def test_a_file_longer_than_its_header_says_is_measured(tracks, tmp_path: Path) -> None:
    """Two mp3s joined byte by byte: the first one's Info header claims 30 s of 630 s."""
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(tracks["clip"].read_bytes() + tracks["long"].read_bytes())
    got = decode_windows(_src(joined), SR, Placement(6.0, 8, 5.0, 5.0))
    assert got.duration_from == "measured"  # the tail probe found audio past the claimed end
    assert got.duration_s == pytest.approx(630.0, abs=1.0)
    assert got.starts[-1] == pytest.approx(630.0 - 5.0 - 6.0, abs=1.0)
    assert got.windows.shape == (8, 6 * SR)  # still only the windows are decoded


def test_timeline_contract_rejects_inconsistent_shapes() -> None:
    from pydantic import ValidationError

    from genretag.schemas import Timeline

    good = dict(clip_seconds=6.0, labels=["a", "b"], starts=[0.0, 6.0],
                probabilities=[[0.1, 0.9], [0.5, 0.5]], silent=[False, False])
    Timeline(**good)
    for bad in ({"starts": [0.0]}, {"silent": [False]}, {"probabilities": [[0.1], [0.5, 0.5]]},
                {"starts": [6.0, 0.0]}, {"starts": [0.0] * 300, "silent": [False] * 300,
                                         "probabilities": [[0.1, 0.9]] * 300}):
        with pytest.raises(ValidationError):
            Timeline(**{**good, **bad})


def test_both_decoders_judge_durations_alike_before_decoding(tracks) -> None:
    """``Decoder.durations``: the header's when trusted, measured when missing or estimated,
    unknown for junk; the same from either backend (FFmpeg 5.1 counts mp3 encoder padding:
    0.07 s at 22.05 kHz)."""
    names = ("long", "clip", "vbr", "junk", "five")
    srcs = [_src(tracks[k]) for k in names]
    libav = open_decoder("libav", 1)
    try:
        got = {d.name: d.durations(srcs, max_track_s=3600) for d in (FFMPEG, libav)}
    finally:
        libav.close()
    want = {"long": (600.0, "header"), "clip": (30.0, "header"), "vbr": (200.0, "measured"),
            "junk": (None, "unknown"), "five": (300.0, "header")}
    for name, a, b in zip(names, got["ffmpeg"], got["libav"], strict=True):
        seconds, how = want[name]
        for d in (a, b):
            assert d.duration_from == how, (name, d)
            if seconds is None:
                assert d.seconds is None, (name, d)
            else:
                assert d.seconds == pytest.approx(seconds, abs=0.3), (name, d)
        if seconds is not None:
            assert a.seconds == pytest.approx(b.seconds, abs=0.1), name
