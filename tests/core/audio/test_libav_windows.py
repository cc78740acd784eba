"""``DECODER=libav`` in the worker: the libav decoder processes seek the whole-track windows.

The same tracks through :class:`genretag.worker.process.Processor` with ``decoder="ffmpeg"`` (FFmpeg
groups, ``-ss`` per window) and ``decoder="libav"`` (``DecoderPool.decode_track``: the decoder
process reads the header and places the windows itself): the same window starts and durations
up to the encoder padding FFmpeg 5.1's header counts, the same outcomes, samples close at the
same starts (not bit-identical: FFmpeg's ``-ss`` decodes the first ~40 ms after a seek without
the codec's pre-roll and, when a start is not on the whole-file resampling grid, half an output
sample off it; the libav windows are the whole-file decode's own samples), and the model's top
label unchanged. Also: the decoder
processes really do the seeking, http stays with FFmpeg, and hostile or lying files get the
same reason codes both ways.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import genretag.core.audio.ffmpeg.seek as seek_mod
from genretag.core.audio.decoders import DecodeOptions, open_decoder
from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.audio.libav.pool import DecoderPool
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource
from genretag.core.errors import PermanentError
from genretag.schemas import TrackRef
from tests.faults.test_hostile_input import MAX_FILE_BYTES, TAGGED, hostile_cases, make_files
from tests.stall_server import stalling_server
from tests.core.audio.test_wholetrack_decode import tracks  # noqa: F401 - the lying/odd files fixture
from genretag.training.models import make_frontend
from genretag.training.synth import synth_clip
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection, WorkerSettings
from genretag.worker.process import Processor
from genretag.worker.tracks import Prepared

#: Samples (~93 ms at 22.05 kHz) after a seek in which FFmpeg's ``-ss`` output is still settling
#: (measured: up to ~45 ms), and the MFCC frames (hop 512, n_fft 2048, centred) they touch.
SETTLE_SAMPLES = 2048
SETTLE_FRAMES = 6
#: Bounds, libav vs FFmpeg windows, measured on these tracks with the demo model and then
#: about doubled. Whole windows: waveform max |diff| 0.33 (peaks ~0.3), MFCC relative L2 per
#: window 0.21 (all of it in the first 4 frames). After the settling: waveform 0.15 and MFCC
#: 0.025 (the half-sample shift, on a bright chiptune; 0 where starts are on the grid).
#: Probabilities: 0.0015.
MAX_ABS_DIFF, MAX_MFCC_REL = 0.6, 0.4
MAX_ABS_SETTLED, MAX_MFCC_REL_SETTLED = 0.3, 0.08
MAX_PROB_DIFF = 0.01
LENGTHS_S = (5.0, 30.0, 120.0)


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Stereo 44.1 kHz 128 kbps mp3s of 5 s (one window), 30 s and 2 min (seeked windows)."""
    root = tmp_path_factory.mktemp("songs")
    return [synth_clip(root / f"song{i}.mp3", label, seconds, seed=10 + i)
            for i, (label, seconds) in enumerate(zip(("techno", "ambient", "chiptune"),
                                                     LENGTHS_S, strict=True))]


@pytest.fixture(scope="module")
def tagger(demo_model: Path) -> Tagger:
    return Tagger.load(ModelSection(path=demo_model, device="cpu", max_windows_per_call=64))


def _processor(tagger: Tagger, decoder: str, roots: list[str], **extra: object) -> Processor:
    settings = WorkerSettings(worker_id="w", allowed_roots=roots, decoder=decoder,
                              decode_workers=1, **extra)
    return Processor(settings, tagger)


def _prepare(tagger: Tagger, decoder: str, uris: list[str], roots: list[str],
             **extra: object) -> list[Prepared | Exception]:
    processor = _processor(tagger, decoder, roots, **extra)
    try:
        return processor.prepare_many([TrackRef(track_id=f"t{i}", uri=u)
                                       for i, u in enumerate(uris)])
    finally:
        processor.close()


class Record:
    """The fields of a Kafka ConsumerRecord that the processor reads."""

    def __init__(self, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = "t", 0, 0, value


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    """The largest per-window relative L2 difference of features ``(n, ...)``."""
    return max(float(np.linalg.norm(x - y) / np.linalg.norm(x)) for x, y in zip(a, b, strict=True))


def _outcome(result: Prepared | Exception) -> str:
    return str(result.reason) if isinstance(result, PermanentError) else (
        TAGGED if isinstance(result, Prepared) else type(result).__name__)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts of the real decodes: libav ``decode_track`` and FFmpeg multi-input runs (both
    still run: the counters wrap them, they do not replace them)."""
    seen = {"libav": 0, "ffmpeg": 0}
    libav, ffmpeg = DecoderPool.decode_track, seek_mod._Decoder.run_inputs

    def counted_libav(self, *args, **kwargs):
        seen["libav"] += 1
        return libav(self, *args, **kwargs)

    def counted_ffmpeg(self, *args, **kwargs):
        seen["ffmpeg"] += 1
        return ffmpeg(self, *args, **kwargs)

    monkeypatch.setattr(DecoderPool, "decode_track", counted_libav)
    monkeypatch.setattr(seek_mod._Decoder, "run_inputs", counted_ffmpeg)
    yield seen


def test_libav_windows_match_ffmpeg_after_seeks(tagger: Tagger, songs: list[Path]) -> None:
    """Both workers place the windows alike and tag alike; at the same starts, the samples
    after a seek are close. Durations differ by the encoder padding: FFmpeg 5.1's header counts
    it (30.04 s), the libav the decoder processes run does not (30.0 s, what either decodes)."""
    roots = [str(songs[0].parent)]
    uris = [str(p) for p in songs]
    cli, lav = (_prepare(tagger, d, uris, roots) for d in ("ffmpeg", "libav"))
    frontend = make_frontend(tagger.manifest.sample_rate, tagger.manifest.frontend).eval()
    sr, clip = tagger.manifest.sample_rate, tagger.manifest.clip_seconds
    for seconds, path, a, b in zip(LENGTHS_S, songs, cli, lav, strict=True):
        assert isinstance(a, Prepared) and isinstance(b, Prepared), (a, b)
        assert b.duration_s == pytest.approx(seconds, abs=0.01)
        assert a.duration_s == pytest.approx(b.duration_s, abs=0.06)
        assert b.starts == pytest.approx(a.starts, abs=0.06)
        # Default coverage: 5 s one padded window, 30 s end to end (5 × 6 s), 2 min 10 spread.
        assert len(a.starts) == {5.0: 1, 30.0: 5, 120.0: 10}[seconds]
        assert b.windows.shape == a.windows.shape and (b.silent == a.silent).all()
        src = AudioSource(target=str(path), is_local=True, size_bytes=path.stat().st_size)
        same_starts = np.stack([
            _padded(decode_audio(src, DecodeOptions(sr, clip, offset_seconds=t)),
                    b.windows.shape[1]) for t in b.starts])
        wave = np.abs(same_starts - b.windows)
        with torch.inference_mode():
            fa, fb = (frontend(torch.from_numpy(w)).numpy() for w in (same_starts, b.windows))
        rel = _relative(fa, fb)
        settled = _relative(fa[..., SETTLE_FRAMES:], fb[..., SETTLE_FRAMES:])
        pa, pb = tagger.predict_windows([a.windows, b.windows])
        print(f"{seconds:g}s: starts {a.starts} / {b.starts} max|diff| {wave.max():.3f} "
              f"(settled {wave[:, SETTLE_SAMPLES:].max():.3f}) MFCC rel {rel:.4f} "
              f"(settled {settled:.4f}) prob {float(np.abs(pa - pb).max()):.5f}")
        if seconds < 10:  # one window from 0: no seek, the very same samples
            assert wave.max() == 0.0 and (a.windows == b.windows).all()
        assert wave.max() <= MAX_ABS_DIFF and rel <= MAX_MFCC_REL
        assert wave[:, SETTLE_SAMPLES:].max() <= MAX_ABS_SETTLED
        assert settled <= MAX_MFCC_REL_SETTLED
        assert float(np.abs(pa - pb).max()) <= MAX_PROB_DIFF
        assert (pa.argmax(axis=1) == pb.argmax(axis=1)).all()
        assert pa.mean(axis=0).argmax() == pb.mean(axis=0).argmax()


def _padded(wave: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(wave))] = wave[:n]
    return out


def test_libav_windows_are_the_whole_file_decodes_samples(songs: list[Path]) -> None:
    """Why the two differ: each libav window is the whole-file decode's samples from the
    window's start (rounded to an output sample), which FFmpeg's ``-ss`` is not quite."""
    song = songs[-1]
    src = AudioSource(target=str(song), is_local=True, size_bytes=song.stat().st_size)
    sr = 22050
    whole = decode_audio(src, DecodeOptions(sr, 1000.0))
    starts = [10.0, 41.343, 72.687, 104.03]
    with DecoderPool(1) as pool:
        windows = pool.decode_windows(src, DecodeOptions(sr, 24.0), [(s, 4.0) for s in starts])
    for start, wave in zip(starts, windows, strict=True):
        at = start * sr  # a tie (x.5) may round either way
        errors = [float(np.abs(wave - whole[i:i + len(wave)]).max())
                  for i in {round(at), int(np.floor(at)), int(np.ceil(at))}]
        assert len(wave) == 4 * sr and min(errors) == 0.0, (start, errors)


def test_processor_with_libav_seeks_in_the_decoder_processes(
        tagger: Tagger, songs: list[Path], calls: dict[str, int]) -> None:
    roots = [str(songs[0].parent)]
    processor = _processor(tagger, "libav", roots)
    try:
        assert processor.decoder.name == "libav"
        prepared = processor.prepare_many(
            [TrackRef(track_id=f"t{i}", uri=str(p)) for i, p in enumerate(songs)])
        assert all(isinstance(p, Prepared) for p in prepared)
        assert calls == {"libav": len(songs), "ffmpeg": 0}
        # The worker's own path: one message, one pool task, the same decoder processes.
        record = Record(json.dumps({"track_id": "one", "uri": str(songs[1])}).encode())
        [outcome] = processor.process([record])
        assert outcome.record is not None and calls == {"libav": len(songs) + 1, "ffmpeg": 0}
    finally:
        processor.close()
    ffmpeg = _processor(tagger, "ffmpeg", roots)
    try:
        assert ffmpeg.decoder.name == "ffmpeg"
        ffmpeg.prepare_many([TrackRef(track_id="t", uri=str(songs[1]))])
        assert calls["ffmpeg"] == 1 and calls["libav"] == len(songs) + 1
    finally:
        ffmpeg.close()


def test_http_sources_still_go_through_ffmpeg(tagger: Tagger, songs: list[Path],
                                              calls: dict[str, int]) -> None:
    with stalling_server(songs[0].read_bytes(), stall=False, name="song.mp3") as (url, seen):
        [got] = _prepare(tagger, "libav", [url], [], allow_http=True)
    assert isinstance(got, Prepared) and seen, got
    assert calls["libav"] == 0 and calls["ffmpeg"] >= 1


def test_hostile_inputs_get_the_same_reasons_through_either_window_path(
        tagger: Tagger, tmp_path: Path) -> None:
    clip = synth_clip(tmp_path / "clips" / "clip.mp3", "techno", 2.5, seed=7)
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    files = make_files(inside, outside, clip)
    cases = [c for c in hostile_cases(files, inside, outside) if c.track_id and c.value]
    cases = [c for c in cases if c.expected != ("bad_message",)]
    uris = [json.loads(c.value)["uri"] for c in cases] + [str(clip)]
    roots = [str(inside), str(clip.parent)]
    got = {d: [_outcome(r) for r in _prepare(tagger, d, uris, roots, max_file_bytes=MAX_FILE_BYTES)]
           for d in ("ffmpeg", "libav")}
    assert len(cases) >= 25 and got["libav"][-1] == got["ffmpeg"][-1] == TAGGED
    names = [c.name for c in cases] + ["good clip"]
    assert dict(zip(names, got["libav"], strict=True)) == dict(zip(names, got["ffmpeg"],
                                                                   strict=True))
    wrong = {c.name: o for c, o in zip(cases, got["libav"], strict=False) if o not in c.expected}
    assert not wrong, wrong


def test_lying_and_odd_files_are_measured_the_same_way(tracks: dict[str, Path],  # noqa: F811
                                                       tmp_path: Path) -> None:
    """VBR without Xing, a WAV claiming 37 h, a file longer than its header, junk, 0.4 s."""
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(tracks["clip"].read_bytes() + tracks["long"].read_bytes())
    paths = [tracks[k] for k in ("vbr", "liar", "junk", "tiny", "clip")] + [joined]
    srcs = [AudioSource(target=str(p), is_local=True, size_bytes=p.stat().st_size) for p in paths]
    placement = Placement(6.0, 4, 5.0, 5.0)
    cli = open_decoder("ffmpeg").decode_tracks(srcs, 16000, placement, timeout_s=30)
    libav = open_decoder("libav", 1)
    try:
        lav = libav.decode_tracks(srcs, 16000, placement, timeout_s=30)
    finally:
        libav.close()
    for path, a, b in zip(paths, cli, lav, strict=True):
        if isinstance(a, PermanentError):
            assert isinstance(b, PermanentError) and b.reason == a.reason, (path.name, a, b)
            continue
        assert not isinstance(b, PermanentError), (path.name, b)
        assert b.duration_from == a.duration_from, path.name
        assert b.duration_s == pytest.approx(a.duration_s, abs=0.1), path.name
        assert b.starts == pytest.approx(a.starts, abs=0.1), path.name
        assert sum(b.lengths) == pytest.approx(sum(a.lengths), abs=0.1 * 16000), path.name


def test_a_libav_batch_starts_no_ffmpeg_process(tagger: Tagger, songs: list[Path],
                                                calls: dict[str, int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With libav, each file is one request to a decoder process, which reads the header
    itself: no FFmpeg probe (that process start cost more CPU than the libav decode itself)."""
    probes: list[int] = []
    probe = seek_mod.probe_durations

    def counted(sources, *args, **kwargs):
        probes.append(len(sources))
        return probe(sources, *args, **kwargs)

    monkeypatch.setattr(seek_mod, "probe_durations", counted)
    paths = [*songs, songs[1]]
    records = [Record(json.dumps({"track_id": f"t{i}", "uri": str(p)}).encode())
               for i, p in enumerate(paths)]
    processor = _processor(tagger, "libav", [str(songs[0].parent)])
    try:
        outcomes = processor.process(records)
    finally:
        processor.close()
    assert all(o.record is not None for o in outcomes)
    assert probes == [] and calls == {"libav": len(paths), "ffmpeg": 0}
