"""In-process libav decoding (PyAV) to mono float32 at the model's rate: the codec's speed.

Same samples as the FFmpeg command line of :mod:`genretag.core.audio.ffmpeg` (libswresample with
the same options does the downmix and resampling in both), without a process start per file. Runs
inside the decoder processes of :mod:`genretag.core.audio.libav.pool`, which bound its time and
memory: call it directly only on trusted files. Safety of the input side is kept here: the file is opened by us
with ``O_NOFOLLOW`` and checked with ``fstat`` (regular, non-empty, under the size cap), PyAV only
gets the file object (no protocol, no URL, nothing nested), and only plain audio demuxers may be
probed (no playlists, no concat, no images). In the decoder processes the parent has already
opened and vetted the file (:func:`genretag.core.audio.uri.open_vetted`) and the child opens that
very descriptor (``/proc/PID/fd/N``), checking its device and inode.

Decodes either the whole file (up to ``max_samples``) or a list of ``(start_s, duration_s)``
windows, each by seeking: :func:`decode_file` returns one array per requested span. Frames are
pooled, then downmixed, resampled and copied in blocks, so Python's share is small: ~30 ms CPU per
30 s 44.1 kHz stereo mp3 to 22.05 kHz mono, the codec alone ~20 ms (per-frame work was ~80 ms).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import numpy as np

from genretag.core.audio.formats import AUDIO_DEMUXERS, REMATRIX_MAXVAL

# Reason codes (values of schemas.ReasonCode): this module stays free of the project's heavier
# imports (pydantic, kafka, redis), so each decoder process costs ~50 MiB less.
MISSING_FILE, EMPTY_FILE, TOO_LARGE, UNDECODABLE, DISALLOWED_URI = (
    "missing_file", "empty_file", "too_large", "undecodable", "disallowed_uri")
#: Decode errors tolerated per file before giving up (the CLI skips bad packets too).
MAX_PACKET_ERRORS = 200
#: Seconds decoded and dropped before a window's start (codec and resampler state settle).
SEEK_PREROLL_S = 0.1
#: Windows whose gap is at most this are decoded in one pass: decoding the gap costs less than a
#: seek's pre-roll and the decoder and resampler restarting after it.
MERGE_GAP_S = 0.25
#: libavformat's warning when a duration is only a bitrate guess (the CLI path reads it too).
_ESTIMATED = "Estimating duration from bitrate"
#: Bytes PyAV reads per call from the file object.
_IO_BUFFER = 1 << 16
#: Input samples per resampler call: big enough that per-call costs vanish, small enough to
#: stay in cache (one 1.3 M-sample call is slower than 40 of these).
_CHUNK = 1 << 15
#: libswresample options of the CLI path (:func:`genretag.core.audio.ffmpeg.command.output_kwargs`).
_SWR = {"rematrix_maxval": str(REMATRIX_MAXVAL)}
#: A frame unlike the stream's first (PyAV's resampler's words, which this refusal replaces).
_MISMATCH = "Frame does not match AudioResampler setup."


class LibavError(Exception):
    """Why a file did not decode: ``reason`` is a :class:`genretag.schemas.ReasonCode` value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """One file to decode: whole (``windows`` empty) or by ``(start_s, duration_s)`` windows."""

    path: str
    sample_rate: int
    max_samples: int
    max_file_bytes: int | None = None
    offset_s: float = 0.0
    windows: tuple[tuple[float, float], ...] = ()
    #: Demuxers that may be probed (by default the FFmpeg CLI path's whitelist).
    formats: str = AUDIO_DEMUXERS
    #: (st_dev, st_ino) of the vetted file: then ``path`` is the parent's ``/proc/PID/fd/N``
    #: and the opened file must be that very file.
    identity: tuple[int, int] | None = None


def library_versions() -> dict[str, str]:
    """PyAV and the libav libraries it runs (recorded in model manifests)."""
    libs = {name: ".".join(map(str, v)) for name, v in av.library_versions.items()
            if name in ("libavcodec", "libavformat", "libswresample")}
    return {"pyav": av.__version__, "ffmpeg": str(av.ffmpeg_version_info), **libs}


def open_checked(path: str, max_file_bytes: int | None,
                 identity: tuple[int, int] | None = None) -> BinaryIO:
    """Open ``path`` read-only, not following a final symlink: a non-empty regular file.

    With ``identity``, ``path`` is a descriptor the parent opened and vetted
    (``/proc/PID/fd/N``, a link by design): it is followed, and the file opened must have
    that (device, inode).
    """
    nofollow = 0 if identity else os.O_NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | nofollow | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _fail(MISSING_FILE, f"no such file: {path}") from None
    except OSError as exc:  # ELOOP: a symlink swapped in after validation; EACCES...
        raise _fail(MISSING_FILE, f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _fail(MISSING_FILE, f"not a regular file: {path}")
        if identity and (st.st_dev, st.st_ino) != tuple(identity):
            raise _fail(DISALLOWED_URI, f"{path} is not the vetted file")
        if st.st_size == 0:
            raise _fail(EMPTY_FILE, f"file is empty: {path}")
        if max_file_bytes is not None and st.st_size > max_file_bytes:
            raise _fail(TOO_LARGE,
                        f"file is {st.st_size} bytes, cap is {max_file_bytes}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def decode_file(req: Request, out: np.ndarray | None = None) -> list[np.ndarray]:
    """Decode ``req``; one float32 array per window (one for a whole-file decode).

    With ``out`` (a float32 buffer of at least ``req.max_samples``), samples are written into it
    and the arrays returned are views of it; otherwise they are fresh arrays. Raises
    :class:`LibavError` (``undecodable``, or the file-check reasons of :func:`open_checked`).
    """
    if out is None:
        out = np.empty(req.max_samples, dtype=np.float32)
    with opened(req) as (container, _):
        stream = container.streams.audio[0]
        spans = req.windows or ((req.offset_s, math.inf),)
        results = decode_spans(container, stream, req.sample_rate, spans, out[: req.max_samples])
    if not any(len(r) for r in results):
        raise _fail(UNDECODABLE, "no audio decoded")
    return results


@contextmanager
def opened(req: Request, *, notice_estimate: bool = False) -> Iterator[tuple[Any, bool]]:
    """``req``'s file checked and opened, with an audio stream: (container, estimated).

    ``estimated``: libavformat only guessed the duration from the bitrate (a VBR mp3 without
    a Xing header), told by its own warning, which ``notice_estimate`` listens for.
    """
    with open_checked(req.path, req.max_file_bytes, req.identity) as f:
        level = av.logging.get_level()
        try:
            if notice_estimate:
                av.logging.set_level(av.logging.WARNING)
            with av.logging.Capture() as said:
                container = av.open(f, mode="r", buffer_size=_IO_BUFFER, options={
                    "format_whitelist": req.formats, "protocol_whitelist": "file"})
        except av.FFmpegError as exc:
            raise _fail(UNDECODABLE, f"libav cannot open it: {_why(exc)}") from None
        finally:
            av.logging.set_level(level)
        with container:
            if not container.streams.audio:
                raise _fail(UNDECODABLE, "no audio stream")
            container.streams.audio[0].codec_context.thread_count = 1  # a process per core
            yield container, any(_ESTIMATED in str(m) for *_, m in said)


def decode_spans(container, stream, rate: int, spans: Sequence[tuple[float, float]],
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
            n = _decode_span(container, stream, rate, start0, out[used: used + extent])
            for w in wants:
                results.append(out[used: used + min(w, n)])
                used += min(w, n)
                n -= min(w, n)
            continue
        scratch = np.empty(extent, dtype=np.float32)  # gaps or overlaps: slices copied out
        n = _decode_span(container, stream, rate, start0, scratch)
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


def _decode_span(container, stream, rate: int, start_s: float, out: np.ndarray) -> int:
    """Decode from ``start_s`` into ``out`` until it is full or the audio ends; samples written.

    Decoded frames gather in a FIFO and go to the resampler in blocks of up to ``_CHUNK``
    samples (never more than the rest of the span needs), so the per-frame Python work is only
    the FIFO write: downmix, resampling and copy run once per block, not once per codec frame.
    """
    want = len(out)
    # Frame times count from the stream's start (e.g. mp3 encoder delay); samples from 0.
    origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    if start_s > 0:
        target = max(0.0, start_s - SEEK_PREROLL_S) + origin  # decoder and resampler settle
        container.seek(int(target * av.time_base), backward=True, any_frame=False)
    # The CLI's own conversion: libswresample downmixes with ``rematrix_maxval=1`` (the channels'
    # mean for stereo; its standard matrix, normalised, for 5.1 and others) and resamples, in the
    # order it picks: the same samples, bit for bit, and a downsample resamples one channel.
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate, options=_SWR)
    fifo = av.AudioFifo()
    skip: int | None = None if start_s > 0 else 0  # samples before start_s, known at 1st frame
    filled, need, in_rate, layout = 0, 0, 0, None
    for frame in _frames(container, stream):
        if layout is None:
            if skip is None:
                frame, first = _on_output_grid(frame, origin, rate)
                if frame is None:
                    continue
                skip = max(0, round((start_s - first) * rate))
            layout, in_rate = frame.layout, frame.sample_rate
            need = _input_needed(want - filled + skip, in_rate, rate)
        elif frame.layout != layout:  # the FIFO checks format and rate, not channels
            raise ValueError(_MISMATCH)
        frame.pts = None  # the FIFO would refuse a gap (a skipped bad packet); swr ignores pts
        try:
            fifo.write(frame)
        except ValueError:  # format or rate changed mid-stream: the resampler's refusal
            raise ValueError(_MISMATCH) from None
        if fifo.samples >= need:
            filled, skip = _take(resampler.resample(fifo.read()), out, filled, want, skip)
            if filled >= want:
                return filled
            need = _input_needed(want - filled + skip, in_rate, rate)
    if fifo.samples:
        filled, skip = _take(resampler.resample(fifo.read()), out, filled, want, skip or 0)
    filled, _ = _take(resampler.resample(None), out, filled, want, skip or 0)
    return filled


def _input_needed(samples_out: int, in_rate: int, rate: int) -> int:
    """Input samples to gather before resampling: what ``samples_out`` take, at most a block.

    Asking no more than the span still needs keeps decoding from running past the frame at
    which the per-frame loop stopped (a window's end costs no extra block of decode).
    """
    return max(1, min(_CHUNK, -(-samples_out * in_rate // rate)))


def _on_output_grid(frame, origin: float, rate: int):
    """After a seek: drop the frame's leading samples that precede the next output sample time.

    The whole-file decode resamples from sample 0, so its output samples fall at multiples of
    ``in_rate / gcd``; starting a window on the same grid gives the same samples, not a
    half-sample shift. Returns (frame or None if wholly dropped, its start in seconds).
    """
    in_rate = frame.sample_rate
    if frame.time is None:
        return frame, 0.0
    i0 = round((float(frame.time) - origin) * in_rate)
    d = (-i0) % (in_rate // math.gcd(in_rate, rate))
    if d == 0:
        return frame, i0 / in_rate
    if d >= frame.samples:
        return None, 0.0
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    data = data[:, d:] if frame.format.is_planar else data[:, d * channels:]
    cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name,
                                     layout=frame.layout.name)
    cut.sample_rate = in_rate
    return cut, (i0 + d) / in_rate


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


def _frames(container, stream) -> Iterator:
    """Decoded audio frames; bad packets are skipped (as the CLI does), up to a limit."""
    errors = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:  # unreadable data after a good start: keep what decoded so far
            return
        try:
            yield from packet.decode()
        except av.FFmpegError as exc:
            errors += 1
            if errors > MAX_PACKET_ERRORS:
                raise _fail(UNDECODABLE,
                            f"more than {MAX_PACKET_ERRORS} bad packets: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or str(exc))[:300]


def _fail(reason: str, message: str) -> LibavError:
    return LibavError(reason, message)
