"""URI vetting and FFmpeg decoding on real files made with FFmpeg."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from genretag.schemas import ReasonCode
from genretag.core.audio.decoders import DecodeOptions
from genretag.core.audio.ffmpeg.command import ffmpeg_argv, multi_output_argv
from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.errors import PermanentError
from genretag.core.audio.uri import AudioSource, resolve_source
from tests.stall_server import stalling_server


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def tone(path: Path, seconds: float = 2.0, freq: int = 440, rate: int = 44100, channels: int = 2) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency={freq}:duration={seconds}:sample_rate={rate}", "-ac", str(channels),
         "-b:a", "128k", str(path)], check=True,
    )
    return path


def test_decode_tone_rate_length_and_pitch(tmp_path: Path) -> None:
    src = resolve_source(str(tone(tmp_path / "a.mp3", 2.0, 440)), [str(tmp_path)])
    wave = decode_audio(src, DecodeOptions(sample_rate=16000, max_seconds=30))
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / 16000 - 2.0) < 0.06  # mp3 encoder padding is a few ms
    spectrum = np.abs(np.fft.rfft(wave[2000:18000]))
    peak_hz = np.argmax(spectrum) * 16000 / 16000
    assert abs(peak_hz - 440) < 3


def test_stereo_downmix_is_the_channels_mean(tmp_path: Path) -> None:
    """Same tone in both channels decodes as loud as the mono file (not FFmpeg's +3 dB)."""
    opts = DecodeOptions(sample_rate=16000, max_seconds=30)
    mono = decode_audio(resolve_source(str(tone(tmp_path / "m.wav", channels=1)),
                                       [str(tmp_path)]), opts)
    both = tmp_path / "s.wav"  # the mono file's samples copied into both channels
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(tmp_path / "m.wav"),
                    "-af", "pan=stereo|c0=c0|c1=c0", str(both)], check=True)
    stereo = decode_audio(resolve_source(str(both), [str(tmp_path)]), opts)
    assert len(mono) == len(stereo)
    assert abs(np.std(stereo) / np.std(mono) - 1.0) < 1e-3


def test_decode_caps_length(tmp_path: Path) -> None:
    src = resolve_source(str(tone(tmp_path / "b.wav", 3.0)), [str(tmp_path)])
    wave = decode_audio(src, DecodeOptions(sample_rate=8000, max_seconds=1.0))
    assert len(wave) == 8000


def test_decode_garbage_is_undecodable(tmp_path: Path) -> None:
    bad = tmp_path / "text.mp3"
    bad.write_text("hello, I am not an mp3\n" * 20)
    with pytest.raises(PermanentError) as info:
        decode_audio(resolve_source(str(bad), [str(tmp_path)]), DecodeOptions(8000, 10))
    assert info.value.reason is ReasonCode.UNDECODABLE


def test_decoder_that_hangs_times_out() -> None:
    opts = DecodeOptions(sample_rate=8000, max_seconds=10, timeout_s=1.0)
    with stalling_server() as (url, _):  # sends a WAV header, then nothing
        with pytest.raises(PermanentError) as info:
            decode_audio(resolve_source(url, [], allow_http=True), opts, track_id="t")
    assert info.value.reason is ReasonCode.DECODE_TIMEOUT


def test_fifo_and_devices_never_block(tmp_path: Path) -> None:
    fifo = tmp_path / "hang.mp3"
    os.mkfifo(fifo)  # opening it for reading would block without O_NONBLOCK
    opts = DecodeOptions(sample_rate=8000, max_seconds=10, timeout_s=30.0)
    for target in (str(fifo), "/dev/zero"):
        started = time.monotonic()
        with pytest.raises(PermanentError) as info:
            decode_audio(AudioSource(target, is_local=True), opts)
        assert info.value.reason is ReasonCode.MISSING_FILE and "not a regular file" in str(info.value)
        assert time.monotonic() - started < 5
    with pytest.raises(PermanentError) as info:
        resolve_source(str(fifo), [str(tmp_path)])
    assert info.value.reason is ReasonCode.MISSING_FILE


def test_ffmpeg_argv_is_locked_down(tmp_path: Path) -> None:
    argv = ffmpeg_argv(AudioSource("/x/concat:a|b.mp3", True), DecodeOptions(22050, 30))
    assert "-nostdin" in argv
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    assert "file:/x/concat:a|b.mp3" in argv  # never interpreted as the concat protocol
    formats = set(argv[argv.index("-format_whitelist") + 1].split(","))
    assert {"mp3", "wav", "flac", "ogg", "mov"} <= formats
    assert not formats & {"hls", "concat", "ffconcat", "image2", "lavfi", "data", "tee"}
    assert ffmpeg_argv(AudioSource("/x/a.mp3", True), DecodeOptions(22050, 30), fd=7)[
        argv.index("-i") + 1] == "file:/proc/self/fd/7"  # FFmpeg reads the vetted descriptor
    remote = ffmpeg_argv(AudioSource("https://h/a.mp3", False), DecodeOptions(22050, 30))
    assert remote[remote.index("-protocol_whitelist") + 1] == "http,https,tcp,tls"  # no file


def test_group_argv_is_locked_down() -> None:
    """One FFmpeg for many inputs (the window groups): every input as locked down as one alone."""
    sources = [AudioSource("/x/concat:a|b.mp3", True), AudioSource("/y/b.mp3", True)]
    opts = DecodeOptions(22050, 30)
    argv = multi_output_argv([(s, None, opts) for s in sources], ["pipe:7", "pipe:8"])
    assert "-nostdin" in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-protocol_whitelist"] == ["file"] * 2
    formats = [argv[i + 1] for i, a in enumerate(argv) if a == "-format_whitelist"]
    assert len(formats) == 2 and not {"hls", "concat", "ffconcat"} & set(formats[0].split(","))
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-i"] == [
        "file:/x/concat:a|b.mp3", "file:/y/b.mp3"]  # never interpreted as the concat protocol
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-t"] == ["30.000"] * 2
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["0:a:0", "1:a:0"]
    assert argv.index("pipe:7") < argv.index("-map", argv.index("pipe:7")) < argv.index("pipe:8")
    windows = multi_output_argv([(sources[1], 9, DecodeOptions(22050, 6.0, offset_seconds=41.5)),
                                 (sources[1], 9, DecodeOptions(22050, 1.0, offset_seconds=90.0))],
                                ["pipe:3", "pipe:4"])
    assert [windows[i + 1] for i, a in enumerate(windows) if a == "-i"] == [
        "file:/proc/self/fd/9"] * 2  # both windows read the one vetted descriptor
    assert [windows[i + 1] for i, a in enumerate(windows) if a == "-ss"] == ["41.500", "90.000"]
    assert [windows[i + 1] for i, a in enumerate(windows) if a == "-t"] == ["6.000", "1.000"]
    with pytest.raises(ValueError):
        multi_output_argv([(sources[0], None, opts)], ["pipe:3", "pipe:4"])


@pytest.mark.parametrize("uri", ["http://example.com/a.mp3", "concat:/a.mp3|/b.mp3",
                                 "subfile:,,start,0,end,10,,:/a.mp3", "data:audio/mp3;base64,AAAA",
                                 "pipe:0", "relative/path.mp3"])
def test_disallowed_uris(uri: str, tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        resolve_source(uri, [str(tmp_path)])
    assert info.value.reason is ReasonCode.DISALLOWED_URI


def test_paths_must_stay_under_allowed_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = tone(outside / "s.wav", 0.5)
    (root / "link.wav").symlink_to(secret)
    for uri in [str(root / ".." / "outside" / "s.wav"), str(secret), str(root / "link.wav"),
                f"file://{root}/../outside/s.wav"]:
        with pytest.raises(PermanentError) as info:
            resolve_source(uri, [str(root)])
        assert info.value.reason is ReasonCode.DISALLOWED_URI, uri
    inside = tone(root / "in.wav", 0.5)
    assert resolve_source(f"file://{inside}", [str(root)]).target == str(inside)


def test_missing_empty_and_oversized_files(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "nope.mp3"): ReasonCode.MISSING_FILE,
        str(tmp_path / "empty.mp3"): ReasonCode.EMPTY_FILE,
        str(tone(tmp_path / "big.wav", 1.0)): ReasonCode.TOO_LARGE,
    }
    (tmp_path / "empty.mp3").touch()
    for uri, reason in cases.items():
        with pytest.raises(PermanentError) as info:
            resolve_source(uri, [str(tmp_path)], max_file_bytes=10_000)
        assert info.value.reason is reason, uri
