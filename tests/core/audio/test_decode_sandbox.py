"""FFmpeg reads exactly the bytes of the one vetted file: playlists, swaps, FIFOs, remote lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from genretag.core.audio.decoders import DecodeOptions, open_decoder
from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource, resolve_source
from genretag.core.errors import PermanentError
from genretag.schemas import ReasonCode
from tests.stall_server import stalling_server
from tests.core.audio.test_uri_and_decode import tone

OPTS = DecodeOptions(sample_rate=8000, max_seconds=5.0, timeout_s=20.0)
#: One window as long as OPTS decodes: a 1 s file is one window holding the whole file.
WHOLE = Placement(clip_seconds=5.0, max_windows=1)


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with one good file, and a secret audio file outside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return {"root": root, "outside": outside, "secret": tone(outside / "secret.mp3", 1.0),
            "good": tone(root / "good.wav", 1.0, freq=660)}


def playlists(secret: Path) -> dict[str, str]:
    """Text files FFmpeg would follow to ``secret`` if its demuxers were not restricted."""
    return {
        "m3u": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n{secret}\n",
        "hls": (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n"
                f"file:{secret}\n#EXT-X-ENDLIST\n"),
        "ffconcat": f"ffconcat version 1.0\nfile '{secret}'\n",
        "concat_url": f"ffconcat version 1.0\nfile 'file:{secret}'\n",
    }


@pytest.mark.parametrize("kind", ["m3u", "hls", "ffconcat", "concat_url"])
@pytest.mark.parametrize("name", ["track.mp3", "list.m3u8", "list.ffconcat"])
def test_playlist_inside_the_root_is_not_followed(layout, kind: str, name: str) -> None:
    path = layout["root"] / name
    path.write_text(playlists(layout["secret"])[kind])
    src = resolve_source(str(path), [str(layout["root"])])  # the file itself is inside: vetted
    with pytest.raises(PermanentError) as info:
        decode_audio(src, OPTS, track_id="p")
    assert info.value.reason is ReasonCode.UNDECODABLE
    # And in a group, next to a good file: the good one decodes, the playlist does not (the
    # worker's groups: a track's windows, with either decoder).
    good = resolve_source(str(layout["good"]), [str(layout["root"])])
    for name in ("ffmpeg", "libav"):
        decoder = open_decoder(name)
        try:
            got = decoder.decode_tracks([good, src], OPTS.sample_rate, WHOLE, timeout_s=20.0)
        finally:
            decoder.close()
        assert not isinstance(got[0], PermanentError) and got[0].decoded_samples == 8000, name
        assert isinstance(got[1], PermanentError) and got[1].reason is ReasonCode.UNDECODABLE


def test_symlink_swapped_in_after_vetting_is_not_followed(layout) -> None:
    path = layout["root"] / "song.wav"
    tone(path, 1.0)
    src = resolve_source(str(path), [str(layout["root"])])
    path.unlink()
    path.symlink_to(layout["secret"])  # the race: vetted, then swapped before FFmpeg opens it
    ffmpeg = open_decoder("ffmpeg")
    for attempt in (lambda: decode_audio(src, OPTS),
                    lambda: ffmpeg.decode_tracks([src, src], OPTS.sample_rate, WHOLE)[0]):
        with pytest.raises(PermanentError) as info:
            result = attempt()
            if isinstance(result, PermanentError):
                raise result
        assert info.value.reason is ReasonCode.MISSING_FILE, info.value


def test_file_or_folder_replaced_after_vetting_is_refused(layout) -> None:
    folder = layout["root"] / "album"
    folder.mkdir()
    tone(folder / "secret.mp3", 1.0)
    src = resolve_source(str(folder / "secret.mp3"), [str(layout["root"])])
    folder.rename(layout["root"] / "old")
    folder.symlink_to(layout["outside"])  # same name, now through a folder link to the outside
    with pytest.raises(PermanentError) as info:
        decode_audio(src, OPTS)
    assert info.value.reason is ReasonCode.DISALLOWED_URI and "replaced" in str(info.value)
    other = tone(layout["root"] / "other.wav", 1.0)
    src2 = resolve_source(str(other), [str(layout["root"])])
    os.replace(layout["good"], other)  # a different regular file under the vetted name
    with pytest.raises(PermanentError) as info:
        decode_audio(src2, OPTS)
    assert info.value.reason is ReasonCode.DISALLOWED_URI


def test_file_grown_past_the_cap_after_vetting_is_refused(layout) -> None:
    path = tone(layout["root"] / "grows.wav", 0.2)
    src = resolve_source(str(path), [str(layout["root"])], max_file_bytes=100_000)
    with open(path, "ab") as f:
        f.write(b"\0" * 200_000)
    with pytest.raises(PermanentError) as info:
        decode_audio(src, OPTS)
    assert info.value.reason is ReasonCode.TOO_LARGE


def test_remote_playlist_cannot_reach_local_files(layout) -> None:
    body = playlists(layout["secret"])["hls"].encode()
    with stalling_server(body, stall=False, name="list.m3u8") as (url, seen):
        src = resolve_source(url, [], allow_http=True)
        with pytest.raises(PermanentError) as info:
            decode_audio(src, OPTS, track_id="r")
    assert seen and info.value.reason is ReasonCode.UNDECODABLE


def test_nul_in_file_uri_and_roots_setting_named(layout) -> None:
    with pytest.raises(PermanentError) as info:
        resolve_source(f"file://{layout['root']}/a%00.mp3", [str(layout["root"])])
    assert info.value.reason is ReasonCode.DISALLOWED_URI
    with pytest.raises(PermanentError) as info:
        resolve_source(str(layout["secret"]), [str(layout["root"])])
    assert info.value.reason is ReasonCode.DISALLOWED_URI
    assert "GENRETAG_ALLOWED_ROOTS" in str(info.value)


def test_ffmpeg_errors_name_the_file_not_the_descriptor(layout) -> None:
    bad = layout["root"] / "text.mp3"
    bad.write_text("not audio\n" * 50)
    with pytest.raises(PermanentError) as info:
        decode_audio(resolve_source(str(bad), [str(layout["root"])]), OPTS)
    assert f"file:{bad}" in str(info.value) and "/proc/self/fd" not in str(info.value)
