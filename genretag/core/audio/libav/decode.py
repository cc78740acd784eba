"""In-process libav decoding (PyAV) to mono float32 at the model's rate: the codec's speed.

Same samples as the FFmpeg command line of :mod:`genretag.core.audio.ffmpeg` (libswresample with
the same options does the downmix and resampling in both), without a process start per file. Runs
inside the decoder processes of :mod:`genretag.core.audio.libav.pool`, which bound its time and
memory: call it directly only on trusted files. The input side's safety is
:func:`genretag.core.audio.libav.media.opened`'s: the file opened by us (``O_NOFOLLOW``, or the
parent's vetted descriptor, ``/proc/PID/fd/N``, with its device and inode checked) and checked
with ``fstat``, PyAV given only the file object (no protocol, no URL, nothing nested), only
plain audio demuxers probed (no playlists, no concat, no images).

Decodes either the whole file (up to ``max_samples``) or a list of ``(start_s, duration_s)``
windows, each by seeking: :func:`decode_file` returns one array per requested span. Frames are
pooled, then downmixed, resampled and copied in blocks, so Python's share is small: ~30 ms CPU per
30 s 44.1 kHz stereo mp3 to 22.05 kHz mono, the codec alone ~20 ms (per-frame work was ~80 ms).
A change of rate, channels or sample format mid-stream (two mp3s joined, the links of a chained
Ogg) is converted as the CLI converts it, and decoding goes on to the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import av
import numpy as np

from genretag.core.audio.formats import REMATRIX_MAXVAL
from genretag.core.audio.libav.media import Media, Part, opened
from genretag.core.audio.libav.request import (DISALLOWED_URI, EMPTY_FILE, MISSING_FILE,
                                               TOO_LARGE, UNDECODABLE, LibavError, Request)

__all__ = ["DISALLOWED_URI", "EMPTY_FILE", "MISSING_FILE", "TOO_LARGE", "UNDECODABLE",
           "LibavError", "Request", "decode_file", "decode_spans", "library_versions"]

#: Seconds decoded and dropped before a window's start (codec and resampler state settle).
SEEK_PREROLL_S = 0.1
#: Windows whose gap is at most this are decoded in one pass: decoding the gap costs less than a
#: seek's pre-roll and the decoder and resampler restarting after it.
MERGE_GAP_S = 0.25
#: Input samples per resampler call: big enough that per-call costs vanish, small enough to
#: stay in cache (one 1.3 M-sample call is slower than 40 of these).
_CHUNK = 1 << 15
#: libswresample options of the CLI path (:func:`genretag.core.audio.ffmpeg.command.output_kwargs`).
_SWR = {"rematrix_maxval": str(REMATRIX_MAXVAL)}


def library_versions() -> dict[str, str]:
    """PyAV and the libav libraries it runs (recorded in model manifests)."""
    libs = {name: ".".join(map(str, v)) for name, v in av.library_versions.items()
            if name in ("libavcodec", "libavformat", "libswresample")}
    return {"pyav": av.__version__, "ffmpeg": str(av.ffmpeg_version_info), **libs}


def decode_file(req: Request, out: np.ndarray | None = None) -> list[np.ndarray]:
    """Decode ``req``; one float32 array per window (one for a whole-file decode).

    With ``out`` (a float32 buffer of at least ``req.max_samples``), samples are written into it
    and the arrays returned are views of it; otherwise they are fresh arrays. Raises
    :class:`LibavError` (``undecodable``, or the file-check reasons of :func:`open_checked`).
    """
    if out is None:
        out = np.empty(req.max_samples, dtype=np.float32)
    with opened(req) as media:
        spans = req.windows or ((req.offset_s, math.inf),)
        results = decode_spans(media, req.sample_rate, spans, out[: req.max_samples])
    if not any(len(r) for r in results):
        raise LibavError(UNDECODABLE, "no audio decoded")
    return results


def decode_spans(media: Media, rate: int, spans: Sequence[tuple[float, float]],
                 out: np.ndarray) -> list[np.ndarray]:
    """Each ``(start_s, duration_s)`` span, back to back in ``out`` (views of it; the last ones
    cut short or empty once ``out`` is full). Spans closer than :data:`MERGE_GAP_S` are
    decoded in one pass (no seek between them: a 30 s clip's windows touch each other)."""
    results: list[np.ndarray] = []
    used = 0
    for run in _runs(spans):
        start0 = run[0][0]
        wants = [len(out) if math.isinf(d) else round(d * rate) for _, d in run]
        offsets = [round((s - start0) * rate) for s, _ in run]
        extent = max(o + w for o, w in zip(offsets, wants, strict=True))
        if offsets == [sum(wants[:k]) for k in range(len(run))]:  # back to back: in place
            n = _decode_span(media, rate, start0, out[used: used + extent])
            for w in wants:
                results.append(out[used: used + min(w, n)])
                used += min(w, n)
                n -= min(w, n)
            continue
        scratch = np.empty(extent, dtype=np.float32)  # gaps or overlaps: slices copied out
        n = _decode_span(media, rate, start0, scratch)
        for o, w in zip(offsets, wants, strict=True):
            k = max(0, min(w, n - o, len(out) - used))
            out[used: used + k] = scratch[o: o + k]
            results.append(out[used: used + k])
            used += k
    return results


def _runs(spans: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """Consecutive spans grouped while each starts within :data:`MERGE_GAP_S` of the last end."""
    runs: list[list[tuple[float, float]]] = []
    for start, duration in spans:
        if runs and not math.isinf(runs[-1][-1][1]) and (
                runs[-1][-1][0] <= start <= runs[-1][-1][0] + runs[-1][-1][1] + MERGE_GAP_S):
            runs[-1].append((start, duration))
        else:
            runs.append([(start, duration)])
    return runs


def _decode_span(media: Media, rate: int, start_s: float, out: np.ndarray) -> int:
    """Decode from ``start_s`` into ``out`` until it is full or the audio ends; samples written.

    Decoded frames gather in a FIFO and go to the resampler in blocks of up to ``_CHUNK``
    samples (never more than the rest of the span needs), so the per-frame Python work is only
    the FIFO write: downmix, resampling and copy run once per block, not once per codec frame.
    A frame of another rate, layout or sample format than the ones before it (two files joined,
    the next link of a chained Ogg) gets a conversion of its own, as the CLI reconfigures its
    filters: the samples converted so far are kept, the old resampler's tail is dropped.
    """
    want = len(out)
    conv: _Conversion | None = None
    skip: int | None = None if start_s > 0 else 0  # samples before start_s, known at 1st frame
    filled, need = 0, 0
    for frame, part in media.frames(start_s, SEEK_PREROLL_S):
        if conv is None:
            if skip is None:
                frame, first = _on_output_grid(frame, part, rate)
                if frame is None:
                    continue
                skip = max(0, round((start_s - first) * rate))
            conv = _Conversion(frame, rate)
            need = _input_needed(want - filled + skip, conv.in_rate, rate)
        frame.pts = None  # the FIFO would refuse a gap (a skipped bad packet); swr ignores pts
        if frame.layout != conv.layout or not conv.write(frame):  # the format changed
            filled, skip = _take(conv.convert(), out, filled, want, skip or 0)
            if filled >= want:
                return filled
            conv = _Conversion(frame, rate)
            conv.write(frame)
            need = _input_needed(want - filled + skip, conv.in_rate, rate)
        if conv.fifo.samples >= need:
            filled, skip = _take(conv.convert(), out, filled, want, skip or 0)
            if filled >= want:
                return filled
            need = _input_needed(want - filled + skip, conv.in_rate, rate)
    if conv is not None:
        filled, skip = _take(conv.convert(), out, filled, want, skip or 0)
        filled, _ = _take(conv.resampler.resample(None), out, filled, want, skip)
    return filled


class _Conversion:
    """Frames of one (sample format, layout, rate) → mono float32 at ``rate``: a FIFO and the
    CLI's own conversion. libswresample downmixes with ``rematrix_maxval=1`` (the channels' mean
    for stereo; its standard matrix, normalised, for 5.1 and others) and resamples, in the order
    it picks: the same samples as the CLI, bit for bit, and a downsample resamples one channel."""

    def __init__(self, frame, rate: int) -> None:
        self.layout = frame.layout
        self.in_rate = frame.sample_rate
        self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate, options=_SWR)
        self.fifo = av.AudioFifo()

    def write(self, frame) -> bool:
        """Queue ``frame``; False if it is of another rate or sample format (the FIFO checks
        those; the layout is the caller's to compare, which the FIFO does not)."""
        try:
            self.fifo.write(frame)
        except ValueError:
            return False
        return True

    def convert(self) -> list:
        """The FIFO's samples through the resampler (what it can give yet)."""
        return self.resampler.resample(self.fifo.read()) if self.fifo.samples else []


def _input_needed(samples_out: int, in_rate: int, rate: int) -> int:
    """Input samples to gather before resampling: what ``samples_out`` take, at most a block.

    Asking no more than the span still needs keeps decoding from running past the frame at
    which the per-frame loop stopped (a window's end costs no extra block of decode).
    """
    return max(1, min(_CHUNK, -(-samples_out * in_rate // rate)))


def _on_output_grid(frame, part: Part, rate: int):
    """After a seek: drop the frame's leading samples that precede the next output sample time.

    The whole-file decode resamples from sample 0, so its output samples fall at multiples of
    ``in_rate / gcd``; starting a window on the same grid gives the same samples, not a
    half-sample shift. Returns (frame or None if wholly dropped, its start in seconds on the
    track's timeline). The grid counts from the start of ``part``, where the conversion starts.
    """
    in_rate = frame.sample_rate
    if frame.time is None:
        return frame, part.offset_s
    i0 = round((float(frame.time) - part.origin) * in_rate)
    d = (-i0) % (in_rate // math.gcd(in_rate, rate))
    if d == 0:
        return frame, part.offset_s + i0 / in_rate
    if d >= frame.samples:
        return None, 0.0
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    data = data[:, d:] if frame.format.is_planar else data[:, d * channels:]
    cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name,
                                     layout=frame.layout.name)
    cut.sample_rate = in_rate
    return cut, part.offset_s + (i0 + d) / in_rate


def _take(frames: list, out: np.ndarray, filled: int, want: int,
          skip: int) -> tuple[int, int]:
    """Copy the resampled mono ``frames`` into ``out`` after dropping ``skip`` leading samples."""
    for frame in frames:
        dropped = min(skip, frame.samples)
        skip -= dropped
        n = min(frame.samples - dropped, want - filled)
        if n <= 0:
            continue
        samples = np.frombuffer(frame.planes[0], dtype=np.float32)
        out[filled: filled + n] = samples[dropped: dropped + n]
        filled += n
    return filled, skip
