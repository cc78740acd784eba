"""The in-process libav decoder in its decoder processes, against the FFmpeg command line.

Real FFmpeg renders the inputs, real PyAV decodes them, real child processes crash and hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import genretag.core.audio.libav.decode as libav
from genretag.core.audio.decoders import DecodeOptions
from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.audio.libav.decode import LibavError, Request, decode_file, library_versions
from genretag.core.audio.libav.pool import DecoderPool
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError
from genretag.schemas import ReasonCode

OPTS = DecodeOptions(sample_rate=22050, max_seconds=8.0, timeout_s=30.0)


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def render(path: Path, graph: str, *codec: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", graph,
                    *codec, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("libav")
    stereo = "sine=frequency=330:duration=12:sample_rate=44100,aformat=channel_layouts=stereo"
    return {
        "mp3": render(root / "tone.mp3", stereo, "-b:a", "128k"),
        "noise_mp3": render(root / "noise.mp3", "anoisesrc=d=3:r=44100:c=pink", "-ac", "2"),
        "wav16k": render(root / "noise.wav", "anoisesrc=d=3:r=16000:c=pink"),
        "flac48k": render(root / "tone.flac", "sine=frequency=500:duration=2:sample_rate=48000"),
        "ogg": render(root / "tone.ogg", "sine=frequency=700:duration=2:sample_rate=44100",
                      "-c:a", "libvorbis"),
        # Channels that differ (the files above repeat one channel): the downmix itself counts.
        "stereo_mp3": render(root / "stereo.mp3", distinct_channels(2, 44100), "-b:a", "128k"),
        "surround_flac": render(root / "surround.flac", distinct_channels(6, 48000) +
                                ",aformat=channel_layouts=5.1"),
    }


def distinct_channels(n: int, rate: int) -> str:
    """A lavfi graph of ``n`` channels that all differ (noise and tones), 3 s at ``rate``."""
    sources = [f"anoisesrc=d=3:r={rate}:c=pink:seed={k}" if k % 2 else
               f"sine=frequency={110 * (k + 1)}:duration=3:sample_rate={rate}" for k in range(n)]
    return ";".join(f"{src}[c{k}]" for k, src in enumerate(sources)) + ";" + "".join(
        f"[c{k}]" for k in range(n)) + f"amerge=inputs={n}"


@pytest.fixture(scope="module")
def pool() -> DecoderPool:
    with DecoderPool(2) as p:
        yield p


def src(path: Path) -> AudioSource:
    return AudioSource(str(path), is_local=True)


@pytest.mark.parametrize("name", ["mp3", "noise_mp3", "wav16k", "flac48k", "ogg", "stereo_mp3",
                                  "surround_flac"])
def test_same_samples_as_the_ffmpeg_command_line(files, pool, name: str) -> None:
    want = decode_audio(src(files[name]), OPTS)
    got = pool.decode_audio(src(files[name]), OPTS)
    assert got.dtype == np.float32 and got.shape == want.shape
    if name == "ogg":  # Vorbis float rounding moved between FFmpeg 5.1 (CLI) and PyAV's 8.x
        assert float(np.abs(got - want).max()) < 1e-6
    else:
        assert np.array_equal(got, want), float(np.abs(got - want).max())


def test_output_is_capped_at_max_seconds(files, pool) -> None:
    opts = DecodeOptions(sample_rate=16000, max_seconds=1.25)
    got = pool.decode_audio(src(files["mp3"]), opts)
    assert len(got) == 20000 == len(decode_audio(src(files["mp3"]), opts))


def test_windows_are_the_whole_decode_cut_at_their_starts(files, pool) -> None:
    opts = DecodeOptions(sample_rate=22050, max_seconds=60.0)
    whole = pool.decode_audio(src(files["mp3"]), opts)
    windows = [(0.0, 2.0), (3.5, 2.0), (7.0, 1.5), (11.0, 3.0), (40.0, 1.0)]
    got = pool.decode_windows(src(files["mp3"]), opts, windows)
    assert [len(w) for w in got] == [44100, 44100, 33075, 22050, 0]  # 1 s left after 11 s
    for (start, _), w in zip(windows[:4], got, strict=False):
        at = round(start * 22050)
        assert np.array_equal(w, whole[at: at + len(w)]), start


def test_windows_together_are_capped_at_max_seconds(files, pool) -> None:
    got = pool.decode_windows(src(files["mp3"]), DecodeOptions(22050, max_seconds=3.0),
                              [(0.0, 2.0), (4.0, 2.0), (8.0, 2.0)])
    assert [len(w) for w in got] == [44100, 22050, 0]


def test_a_channel_or_rate_change_mid_stream_is_decoded_like_the_cli(tmp_path, pool) -> None:
    """Two mp3s joined (podcasts are): the conversion starts again at the new rate or channels,
    as the CLI reconfigures its filters, and decoding goes on to the end: the CLI's very samples.
    (It used to raise "Frame does not match AudioResampler setup" and kill the process.)"""
    noise = "anoisesrc=d=2:r={}:c=pink"
    stereo = render(tmp_path / "s.mp3", noise.format(44100), "-ac", "2")
    mono = render(tmp_path / "m.mp3", noise.format(44100), "-ac", "1")
    low = render(tmp_path / "l.mp3", noise.format(22050), "-ac", "2")
    low_mono = render(tmp_path / "lm.mp3", noise.format(22050), "-ac", "1")
    opts = DecodeOptions(22050, 10.0)
    for i, (first, second) in enumerate([(stereo, mono), (mono, stereo), (stereo, low),
                                         (stereo, low_mono), (low_mono, stereo)]):
        mixed = tmp_path / f"mixed{i}.mp3"
        mixed.write_bytes(first.read_bytes() + second.read_bytes())
        want = decode_audio(src(mixed), opts)
        got = pool.decode_audio(src(mixed), opts)
        assert len(want) > 3.9 * 22050 and np.array_equal(got, want), i
        windows = decode_file(Request(str(mixed), 22050, 22050 * 10,
                                      windows=((0.5, 3.0), (2.5, 1.0))))
        assert [len(w) for w in windows] == [3 * 22050, 22050], i  # across and after the change


def test_symlink_swapped_in_after_validation_is_not_followed(files, tmp_path) -> None:
    link = tmp_path / "swapped.mp3"
    link.symlink_to(files["mp3"])
    with pytest.raises(LibavError) as err:
        decode_file(Request(str(link), 22050, max_samples=22050))
    assert err.value.reason == ReasonCode.MISSING_FILE and "cannot open" in str(err.value)


def test_non_audio_demuxers_are_refused(files, tmp_path) -> None:
    """Playlists and concat lists that name other files are not probed at all."""
    hls = tmp_path / "list.mp3"
    hls.write_text(f"#EXTM3U\n#EXTINF:10,\nfile:{files['mp3']}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "concat.mp3"
    concat.write_text(f"ffconcat version 1.0\nfile '{files['mp3']}'\n")
    png = tmp_path / "image.mp3"
    render(png, "color=red:s=16x16:d=0.04", "-frames:v", "1", "-f", "image2", "-c:v", "png")
    for path in (hls, concat, png):
        with pytest.raises(LibavError) as err:
            decode_file(Request(str(path), 22050, max_samples=22050))
        assert err.value.reason == ReasonCode.UNDECODABLE, path


def test_file_checks_in_the_decoder_itself(tmp_path) -> None:
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    fifo = tmp_path / "fifo.mp3"
    os.mkfifo(fifo)
    big = tmp_path / "big.mp3"
    big.write_bytes(b"\0" * 5000)
    cases = [(empty, None, ReasonCode.EMPTY_FILE), (fifo, None, ReasonCode.MISSING_FILE),
             (tmp_path, None, ReasonCode.MISSING_FILE), (big, 4096, ReasonCode.TOO_LARGE),
             (tmp_path / "nope.mp3", None, ReasonCode.MISSING_FILE)]
    for path, cap, reason in cases:
        with pytest.raises(LibavError) as err:
            decode_file(Request(str(path), 22050, max_samples=100, max_file_bytes=cap))
        assert err.value.reason == reason, path


ABORTS = [sys.executable, "-c", "import os, sys; print('{\"ready\": true}', flush=True); "
          "sys.stdin.readline(); os.abort()"]
HANGS = [sys.executable, "-c", "import sys, time; print('{\"ready\": true}', flush=True); "
         "sys.stdin.readline(); time.sleep(60)"]


def test_a_crashing_decoder_is_restarted_retried_once_then_undecodable(files) -> None:
    with DecoderPool(1, cmd=ABORTS) as pool:
        first = pool.pids()
        with pytest.raises(PermanentError) as err:
            pool.decode_audio(src(files["mp3"]), OPTS, track_id="t-crash")
        assert err.value.reason == ReasonCode.UNDECODABLE and err.value.track_id == "t-crash"
        assert "signal 6" in str(err.value) and "tried twice" in str(err.value)
        assert pool.restarts == 2 and pool.pids() != first  # a live replacement stands by


def test_a_hanging_decoder_is_killed_retried_once_then_timed_out(files) -> None:
    with DecoderPool(1, cmd=HANGS) as pool:
        with pytest.raises(PermanentError) as err:
            pool.decode_audio(src(files["mp3"]), DecodeOptions(22050, 8.0, timeout_s=0.3))
        assert err.value.reason == ReasonCode.DECODE_TIMEOUT and pool.restarts == 2


def test_pool_goes_on_after_a_child_is_killed_mid_run(files, pool) -> None:
    victim = pool.pids()[0]
    os.kill(victim, 9)
    for _ in range(3):  # whichever child serves, the file decodes
        assert len(pool.decode_audio(src(files["mp3"]), OPTS)) == 8 * 22050
    assert victim not in pool.pids()


def test_libav_reasons_are_reason_codes_and_the_decoder_imports_little() -> None:
    """The decoder processes import the libav decode modules alone: their reasons must still be
    ReasonCodes, and what the process imports (its entry module and everything its ``main``
    imports) stays free of the project's heavy dependencies."""
    for reason in (libav.MISSING_FILE, libav.EMPTY_FILE, libav.TOO_LARGE, libav.UNDECODABLE,
                   libav.DISALLOWED_URI):
        assert ReasonCode(reason).value == reason
    code = ("import sys, genretag.core.audio.libav.child, genretag.core.audio.libav.decode, "
            "genretag.core.audio.libav.track, genretag.core.audio.placement; "
            "heavy = {'pydantic', 'kafka', 'redis', 'torch'}; "
            "print(sorted(heavy & set(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"


def test_library_versions_name_pyav_and_libavcodec() -> None:
    v = library_versions()
    assert v["pyav"] and v["libavcodec"].count(".") == 2


def test_a_file_replaced_after_vetting_is_refused_like_the_cli(files, pool, tmp_path) -> None:
    from genretag.core.audio.uri import resolve_source

    path = tmp_path / "swap.mp3"
    path.write_bytes(files["mp3"].read_bytes())
    source = resolve_source(str(path), [str(tmp_path)])
    other = tmp_path / "other.mp3"
    other.write_bytes(files["noise_mp3"].read_bytes())
    other.replace(path)  # same name, another inode
    errors = []
    for decode in (decode_audio, pool.decode_audio):
        with pytest.raises(PermanentError) as err:
            decode(source, OPTS, "t-swap")
        errors.append((err.value.reason, err.value.stage, str(err.value)))
    assert errors[0] == errors[1] and errors[0][0] == ReasonCode.DISALLOWED_URI


def test_decoder_child_checks_the_identity_of_the_descriptor(files) -> None:
    st = os.stat(files["mp3"])
    ok = Request(str(files["mp3"]), 22050, 22050, identity=(st.st_dev, st.st_ino))
    assert len(decode_file(ok)[0]) == 22050
    with pytest.raises(LibavError) as err:
        decode_file(Request(str(files["mp3"]), 22050, 22050, identity=(st.st_dev, st.st_ino + 1)))
    assert err.value.reason == "disallowed_uri"


def test_touching_windows_are_decoded_in_one_pass(files, monkeypatch) -> None:
    """Windows that touch, overlap or nearly touch share one seek and one decode pass, and
    still get exactly the whole decode's samples at their starts."""
    passes: list[float] = []
    decode_span = libav._decode_span

    def counted(media, rate, start_s, out):
        passes.append(start_s)
        return decode_span(media, rate, start_s, out)

    monkeypatch.setattr(libav, "_decode_span", counted)
    path, sr = str(files["mp3"]), 22050
    whole = libav.decode_file(Request(path, sr, 60 * sr))[0]
    passes.clear()
    windows = ((1.0, 2.0), (3.0, 2.0), (4.5, 1.0), (5.6, 1.0), (9.0, 1.0))
    got = libav.decode_file(Request(path, sr, 7 * sr, windows=windows))
    assert passes == [1.0, 9.0]  # touching, overlapping, a 0.1 s gap: one pass; 9 s: a seek
    assert [len(w) for w in got] == [2 * sr, 2 * sr, sr, sr, sr]
    for (start, _), w in zip(windows, got, strict=True):
        at = round(start * sr)
        assert np.array_equal(w, whole[at: at + len(w)]), start
