"""Valid files that once broke the libav decoder, and decoded audio that is not finite.

Both decoders, whole files and tracks' windows, on files generated here (the faults suite's own
generator, tests/faults/broken_files.py): two mp3s joined at another rate and channel count, a
chained Ogg (and Opus), a WAV claiming 0 channels, float WAVs with NaN and infinities. Also
training's decode, which must refuse what the worker refuses.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from genretag.core.audio.decoders import DecodeOptions, Decoder, open_decoder
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource, resolve_source
from genretag.core.errors import PermanentError
from genretag.schemas import ReasonCode
from genretag.training.features import WindowPlan, compute_features, decode_track
from genretag.training.items import LabelledItem
from tests.faults.broken_files import HALF_S, broken_streams, float_wav, square_arpeggio

SR = 16000
WHOLE = DecodeOptions(SR, 60.0, timeout_s=30.0)
PLACEMENT = Placement(clip_seconds=1.5, max_windows=4, skip_start_s=0.5, skip_end_s=0.5)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    f = broken_streams(root)
    tone = "sine=frequency={}:duration={}:sample_rate=48000"
    for name, channels in (("s48", 2), ("m48", 1)):  # a chained Opus: stereo, then mono
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        tone.format(300 if channels == 2 else 500, HALF_S), "-ac", str(channels),
                        "-c:a", "libopus", str(root / f"part-{name}.opus")], check=True)
    f["chained_opus"] = root / "chained.opus"
    f["chained_opus"].write_bytes((root / "part-s48.opus").read_bytes() +
                                  (root / "part-m48.opus").read_bytes())
    return f


@pytest.fixture(scope="module")
def decoders():
    ffmpeg, libav = open_decoder("ffmpeg"), open_decoder("libav", 1)
    yield {"ffmpeg": ffmpeg, "libav": libav}
    libav.close()


def _src(path: Path) -> AudioSource:
    return resolve_source(str(path), [str(path.parent)])


def _restarts(decoders: dict[str, Decoder]) -> int:
    return decoders["libav"].pool.restarts  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["joined_stereo_mono", "joined_mono_stereo"])
def test_joined_mp3s_decode_to_the_end_as_the_cli_does(files, decoders, name: str) -> None:
    """44.1 kHz stereo then 22.05 kHz mono (and the reverse): the same samples as the CLI, bit
    for bit, and the windows of the whole track (the libav process used to die on it)."""
    before = _restarts(decoders)
    want = decoders["ffmpeg"].decode_audio(_src(files[name]), WHOLE)
    got = decoders["libav"].decode_audio(_src(files[name]), WHOLE)
    assert len(want) == pytest.approx(2 * HALF_S * SR, abs=0.1 * SR)
    assert np.array_equal(got, want)
    for decoder in decoders.values():
        [track] = decoder.decode_tracks([_src(files[name])], SR, PLACEMENT)
        assert not isinstance(track, Exception), (decoder.name, track)
        assert track.duration_s == pytest.approx(2 * HALF_S, abs=0.15), decoder.name
        assert track.lengths == [round(1.5 * SR)] * 4, decoder.name
    assert _restarts(decoders) == before


@pytest.mark.parametrize(("name", "parts"), [("chained_ogg", ("s44o.ogg", "m22o.ogg")),
                                             ("chained_opus", ("s48.opus", "m48.opus"))])
def test_a_chained_ogg_is_decoded_link_after_link(files, decoders, name, parts) -> None:
    """Every link, in order: the whole decode is each link's own decode end to end (the first
    short of its resampler's last few samples, as the CLI drops them when it reconfigures), and
    the windows and duration cover both links (libav used to stop at the first: 6 s tagged)."""
    libav, ffmpeg = decoders["libav"], decoders["ffmpeg"]
    first, second = (libav.decode_audio(_src(files[name].parent / f"part-{p}"), WHOLE)
                     for p in parts)
    whole = libav.decode_audio(_src(files[name]), WHOLE)
    cut = len(first) + len(second) - len(whole)
    assert 0 <= cut <= 64, cut
    assert np.array_equal(whole[: len(first) - cut], first[: len(first) - cut])
    assert np.array_equal(whole[len(first) - cut:], second)
    assert len(whole) == pytest.approx(len(ffmpeg.decode_audio(_src(files[name]), WHOLE)),
                                       abs=0.05 * SR)
    [track] = libav.decode_tracks([_src(files[name])], SR, PLACEMENT)
    assert not isinstance(track, Exception), track
    assert track.duration_s == pytest.approx(2 * HALF_S, abs=0.1)
    assert track.lengths == [round(1.5 * SR)] * 4
    assert track.starts[-1] == pytest.approx(2 * HALF_S - 0.5 - 1.5, abs=0.1)
    [duration] = libav.durations([_src(files[name])])
    assert duration.seconds == pytest.approx(2 * HALF_S, abs=0.1)


def test_a_wav_claiming_zero_channels_is_undecodable_and_costs_no_restart(files,
                                                                         decoders) -> None:
    """Both decoders refuse it the same way; 16 of them cost the libav processes nothing (each
    used to raise inside the process, kill it and cost a restart and a retry: 0.66 s each)."""
    before = _restarts(decoders)
    src = _src(files["zero_channels"])
    for decoder in decoders.values():
        with pytest.raises(PermanentError) as err:
            decoder.decode_audio(src, WHOLE)
        assert err.value.reason == ReasonCode.UNDECODABLE, decoder.name
        [track] = decoder.decode_tracks([src], SR, PLACEMENT)
        assert isinstance(track, PermanentError) and track.reason == ReasonCode.UNDECODABLE
    started = time.monotonic()
    results = decoders["libav"].decode_tracks([src] * 16, SR, PLACEMENT)
    elapsed = time.monotonic() - started
    assert {r.reason for r in results if isinstance(r, PermanentError)} == {
        ReasonCode.UNDECODABLE} and len(results) == 16
    assert _restarts(decoders) == before
    print(f"16 zero-channel WAVs: {elapsed:.2f} s")


@pytest.mark.parametrize("name", ["nan_wav", "square_nan", "square_inf"])
def test_non_finite_samples_are_refused_by_both_decoders(files, decoders, name: str) -> None:
    src = _src(files[name])
    for decoder in decoders.values():
        with pytest.raises(PermanentError) as err:
            decoder.decode_audio(src, WHOLE)
        assert err.value.reason == ReasonCode.INVALID_AUDIO, decoder.name
        assert "NaN or infinite" in str(err.value)
        [track] = decoder.decode_tracks([src], SR, PLACEMENT, track_ids=["t-nan"])
        assert isinstance(track, PermanentError) and track.reason == ReasonCode.INVALID_AUDIO
        assert track.track_id == "t-nan"


def test_the_clean_arpeggio_and_windows_clear_of_bad_samples_are_tagged(decoders,
                                                                          tmp_path) -> None:
    """The check is on what reaches the model: the clean square wave passes; so does a track
    whose only bad samples lie in its skipped intro."""
    rate = 22050
    clean = float_wav(tmp_path / "clean.wav", square_arpeggio(rate, 8.0), rate)
    intro = square_arpeggio(rate, 8.0)
    intro[: rate // 4] = np.nan  # the first 0.25 s, before the first window at 0.5 s
    broken_intro = float_wav(tmp_path / "intro.wav", intro, rate)
    for decoder in decoders.values():
        assert np.isfinite(decoder.decode_audio(_src(clean), WHOLE)).all()
        found = decoder.decode_tracks([_src(clean), _src(broken_intro)], SR, PLACEMENT)
        assert not any(isinstance(r, Exception) for r in found), (decoder.name, found)


class _Levels(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, None, None, :16]


@pytest.mark.parametrize("decoder", ["libav", "ffmpeg"])
def test_training_refuses_non_finite_clips_with_the_reason(files, decoder: str) -> None:
    opened = open_decoder(decoder)
    try:
        with pytest.raises(PermanentError) as err:
            decode_track(files["square_nan"], SR, 1.0, 0.5, decoder=opened)
    finally:
        opened.close()
    assert err.value.reason == ReasonCode.INVALID_AUDIO
    items = [LabelledItem("nan", files["square_nan"], ["a"], "training"),
             LabelledItem("ok", files["joined_stereo_mono"], ["a"], "training")]
    got = compute_features(items, _Levels(), WindowPlan(SR, 1, 1.0), SR, min_seconds=0.5,
                           workers=1, decoder=decoder)
    assert [i.item_id for i in got.items] == ["ok"]
    assert [s["item_id"] for s in got.skipped] == ["nan"]
    assert got.skipped[0]["reason"].startswith("invalid_audio: ")
