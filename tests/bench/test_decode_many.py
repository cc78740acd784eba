"""``bench.decode_many`` (many whole files per FFmpeg process, the benchmark's amortised floor)
against the FFmpeg backend's per-file decode, on real FFmpeg."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import bench.decode_many as decode_mod
from bench.decode_many import decode_many
from genretag.core.audio.decoders import DecodeOptions
from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError
from genretag.schemas import ReasonCode
from tests.core.audio.test_decode_sandbox import OPTS as SANDBOX_OPTS
from tests.core.audio.test_decode_sandbox import layout, playlists  # noqa: F401 - fixture
from tests.core.audio.test_open_exhausted import _run as run_out_of_descriptors
from tests.core.audio.test_open_exhausted import _tone
from tests.stall_server import stalling_server
from genretag.core.audio.uri import resolve_source

OPTS = DecodeOptions(sample_rate=22050, max_seconds=4.0, timeout_s=30.0)


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def render(path: Path, graph: str, *codec: str) -> Path:
    """Write ``path`` from a lavfi graph with FFmpeg (real encoders, real containers)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", graph,
                    *codec, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[AudioSource]:
    """Stereo 44.1 kHz mp3s (like FMA) of different lengths and pitches, plus a mono wav."""
    root = tmp_path_factory.mktemp("batch")
    paths = [
        render(root / f"tone{i}.mp3", f"sine=frequency={220 * (i + 1)}:duration={secs}:sample_rate=44100",
               "-ac", "2", "-b:a", "128k")
        for i, secs in enumerate([5.0, 2.5, 6.0, 1.0, 4.5])
    ]
    paths.append(render(root / "noise.wav", "anoisesrc=d=3:r=16000:c=pink"))
    return [AudioSource(str(p), is_local=True) for p in paths]


def expected(sources: list[AudioSource], opts: DecodeOptions, ids=None) -> list:
    out = []
    for src, tid in zip(sources, ids or [None] * len(sources), strict=True):
        try:
            out.append(decode_audio(src, opts, tid))
        except PermanentError as exc:
            out.append(exc)
    return out


def assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, PermanentError):
            assert isinstance(g, PermanentError), type(g)
            assert (g.reason, g.track_id, g.stage) == (w.reason, w.track_id, w.stage)
            assert _no_addresses(str(g)) == _no_addresses(str(w))  # FFmpeg's own words
        else:
            assert isinstance(g, np.ndarray) and g.dtype == np.float32 and g.ndim == 1
            assert g.shape == w.shape
            np.testing.assert_array_equal(g, w)  # bit-exact: the same FFmpeg pipeline per file


@pytest.fixture
def per_file_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every fallback to one-process-per-file decoding inside decode_many."""
    calls: list[str] = []
    original = decode_mod.decode_audio

    def counting(source, opts, track_id=None):
        calls.append(source.target)
        return original(source, opts, track_id)

    monkeypatch.setattr(decode_mod, "decode_audio", counting)
    return calls


@pytest.mark.parametrize("group_size", [2, 3, 8])
def test_same_samples_as_decode_audio(clips, group_size: int, per_file_calls) -> None:
    want = expected(clips, OPTS)
    per_file_calls.clear()
    got = decode_many(clips, OPTS, group_size=group_size)
    assert_same(got, want)
    # Amortised for real: only a trailing group of one goes through decode_audio.
    assert len(per_file_calls) == (1 if len(clips) % group_size == 1 else 0)


def test_offset_cap_and_duplicates(clips) -> None:
    opts = DecodeOptions(sample_rate=16000, max_seconds=1.5, offset_seconds=0.5)
    group = [clips[0], clips[2], clips[0], clips[5]]
    got = decode_many(group, opts)
    assert_same(got, expected(group, opts))
    assert all(len(w) == 24000 for w in got)


def test_bad_files_are_isolated_with_decode_audio_errors(clips, tmp_path: Path, per_file_calls) -> None:
    garbage = tmp_path / "garbage.mp3"
    garbage.write_text("not an mp3 at all\n" * 40)
    truncated = tmp_path / "truncated.mp3"
    truncated.write_bytes(Path(clips[0].target).read_bytes()[:1200])
    image = render(tmp_path / "still.png", "color=c=red:s=16x16", "-frames:v", "1")
    group = [clips[0], AudioSource(str(garbage), True), clips[1], AudioSource(str(image), True),
             AudioSource(str(truncated), True), clips[2]]
    ids = [f"t{i}" for i in range(len(group))]
    want = expected(group, OPTS, ids)
    assert [type(w).__name__ for w in want].count("PermanentError") >= 2
    assert want[1].reason is ReasonCode.UNDECODABLE and want[3].reason is ReasonCode.UNDECODABLE
    per_file_calls.clear()
    got = decode_many(group, OPTS, track_ids=ids, group_size=8)
    assert_same(got, want)
    assert len(per_file_calls) == len(group)  # the failed group was redone file by file


def test_empty_group_and_bad_arguments() -> None:
    assert decode_many([], OPTS) == []
    with pytest.raises(ValueError):
        decode_many([AudioSource("/x.mp3", True)], OPTS, track_ids=["a", "b"])
    with pytest.raises(ValueError):
        decode_many([AudioSource("/x.mp3", True)], OPTS, group_size=0)


def test_hanging_input_times_out_and_the_rest_decodes(clips, per_file_calls) -> None:
    """A remote input that stalls is decoded alone: one timeout, the local files grouped once."""
    opts = DecodeOptions(sample_rate=8000, max_seconds=2.0, timeout_s=1.0)
    with stalling_server() as (url, seen):
        group = [clips[0], AudioSource(url, False), clips[1]]
        per_file_calls.clear()
        started = time.monotonic()
        got = decode_many(group, opts, track_ids=["a", "hang", "b"])
        elapsed = time.monotonic() - started
    assert isinstance(got[1], PermanentError) and got[1].reason is ReasonCode.DECODE_TIMEOUT
    assert got[1].track_id == "hang"
    assert_same([got[0], got[2]], expected([clips[0], clips[1]], opts))
    assert per_file_calls == [url] and len(seen) == 1  # the good ones were never redone
    assert elapsed < 6  # one timeout (1 s) plus decodes, not two
    assert not any(p.name.startswith("ffmpeg") for p in _children())


def test_group_timeout_retries_each_unfinished_file_once(tmp_path: Path, per_file_calls,
                                                         caplog) -> None:
    """A group that times out: outputs at the cap are kept, every other file is retried alone once.

    FFmpeg 5.1 keeps a group's outputs in step, so a stalled input holds the others short of the
    cap: they are retried (alone, once each) and their samples equal decode_audio's.
    """
    opts = DecodeOptions(sample_rate=8000, max_seconds=10.0, timeout_s=3.0)
    song = render(tmp_path / "song.mp3", "sine=frequency=300:duration=20:sample_rate=44100",
                  "-ac", "2", "-b:a", "128k")
    short = render(tmp_path / "short.mp3", "sine=frequency=500:duration=3:sample_rate=44100",
                   "-ac", "2", "-b:a", "128k")
    # 7 s of the song (past FFmpeg's 5 s stream analysis, short of the 10 s cap), then silence.
    with stalling_server(song.read_bytes()[:7 * 16000]) as (url, seen):
        group = [AudioSource(str(song), True), AudioSource(url, False), AudioSource(str(short), True)]
        per_file_calls.clear()
        started = time.monotonic()
        with caplog.at_level("INFO", logger="bench.decode_many"):
            got = decode_many(group, opts, track_ids=list("ahb"), isolate_remote=False)
        elapsed = time.monotonic() - started
    assert isinstance(got[1], PermanentError) and got[1].reason is ReasonCode.DECODE_TIMEOUT
    assert_same([got[0], got[2]], expected([group[0], group[2]], opts))
    assert sorted(per_file_calls) == sorted(s.target for s in group)  # once each, no more
    assert len(seen) == 2  # the stalled server was asked twice: group, then alone
    retry = [r for r in caplog.records if r.msg == "decode.group_retry"]
    assert len(retry) == 1 and retry[0].kept + retry[0].retried == 3
    assert elapsed < 2 * opts.timeout_s + 4  # group timeout + one retry, not one per file


def test_fifo_and_device_fail_fast_in_a_group(clips, tmp_path: Path) -> None:
    fifo = tmp_path / "hang.mp3"
    os.mkfifo(fifo)  # opening it for reading would block without O_NONBLOCK
    opts = DecodeOptions(sample_rate=8000, max_seconds=2.0, timeout_s=20.0)
    group = [clips[0], AudioSource(str(fifo), True), AudioSource("/dev/zero", True), clips[1]]
    started = time.monotonic()
    got = decode_many(group, opts, track_ids=["a", "fifo", "dev", "b"])
    assert time.monotonic() - started < 10
    assert [g.reason for g in got[1:3]] == [ReasonCode.MISSING_FILE] * 2
    assert "not a regular file" in str(got[1])
    assert_same([got[0], got[3]], expected([clips[0], clips[1]], opts))


@pytest.mark.parametrize("kind", ["m3u", "hls", "ffconcat", "concat_url"])
def test_a_playlist_in_a_group_is_not_followed(layout, kind: str) -> None:  # noqa: F811
    """Next to a good file in one FFmpeg process: the good one decodes, the playlist does not."""
    path = layout["root"] / "track.mp3"
    path.write_text(playlists(layout["secret"])[kind])
    src = resolve_source(str(path), [str(layout["root"])])
    got = decode_many([resolve_source(str(layout["good"]), [str(layout["root"])]), src],
                      SANDBOX_OPTS)
    assert not isinstance(got[0], PermanentError) and len(got[0]) == 8000
    assert isinstance(got[1], PermanentError) and got[1].reason is ReasonCode.UNDECODABLE


def test_a_symlink_swapped_in_after_vetting_is_not_followed_in_a_group(layout) -> None:  # noqa: F811
    from tests.core.audio.test_uri_and_decode import tone

    path = layout["root"] / "song.wav"
    tone(path, 1.0)
    src = resolve_source(str(path), [str(layout["root"])])
    path.unlink()
    path.symlink_to(layout["secret"])
    got = decode_many([src, src], SANDBOX_OPTS)[0]
    assert isinstance(got, PermanentError) and got.reason is ReasonCode.MISSING_FILE, got


def test_a_group_decode_out_of_descriptors_gives_each_file_its_outcome(tmp_path: Path) -> None:
    got = run_out_of_descriptors(_tone(tmp_path / "a.wav"), "bench_group")
    assert got.get("results") == ["internal", "internal"], got


def _no_addresses(text: str) -> str:
    """FFmpeg logs context pointers (``[mp3 @ 0x55..]``) that differ between runs."""
    return re.sub(r"0x[0-9a-f]+", "0x?", text)


def _children() -> list[Path]:
    """Executables of this process's live children (zombies and reaped ones excluded)."""
    out = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                out.append(Path(os.readlink(f"/proc/{pid}/exe")))
            except OSError:
                pass
    return out
