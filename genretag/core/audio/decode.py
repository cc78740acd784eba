"""FFmpeg decoding to mono float32 at the model's sample rate: the one decoder of the project.

Training and serving both call :func:`decode_audio`, so a model never sees audio decoded
differently from what it was trained on. FFmpeg is built with ffmpeg-python and run as a
subprocess with a protocol whitelist, a demuxer whitelist of plain audio formats (no playlist,
concat or hls demuxer can send it to another file), ``-nostdin``, a timeout and an output length
cap. A local file is opened in Python (:func:`genretag.core.audio.uri.open_vetted`) and FFmpeg reads only
that descriptor (``/proc/self/fd/N``, inherited through ``pass_fds``).

:func:`decode_many` gives the same samples for many files while paying FFmpeg's start-up
(about two thirds of a 30 s mp3's decode cost) once per group: one FFmpeg process with one
input and one output pipe per file. If that process fails or times out, every file of the
group whose output is not known complete (it reached the length cap) is decoded again on its
own with :func:`decode_audio`, once: a hanging or bad file costs the good ones no second decode
and gets exactly the error (reason and detail) that :func:`decode_audio` gives it. Remote
(http) inputs, the only ones that can stall on I/O, are decoded alone, never in a group.
"""

from __future__ import annotations

import fcntl
import math
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ffmpeg
import numpy as np

from genretag.core.logs import get_logger
from genretag.schemas import ReasonCode
from genretag.core.errors import GenretagError, PermanentError
from genretag.core.audio.formats import AUDIO_DEMUXERS, REMATRIX_MAXVAL
from genretag.core.audio.uri import AudioSource, open_each, open_vetted

log = get_logger(__name__)

#: A local input is ``file:/proc/self/fd/N``: FFmpeg reads the descriptor Python opened.
LOCAL_PROTOCOLS = "file"
#: Remote inputs: no ``file`` (a remote playlist must not reach local files), no ``crypto``.
HTTP_PROTOCOLS = "http,https,tcp,tls"
GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "error")
#: Files per FFmpeg process in :func:`decode_many` (start-up is ~8 ms/file at 8, ~63 ms at 1).
DEFAULT_GROUP_SIZE = 8
_PIPE_BYTES = 1 << 20  # bigger pipes: fewer wake-ups per decoded file (Linux F_SETPIPE_SZ)
_MAX_PREALLOC_BYTES = 64 << 20  # buffers start at most this big and grow if ever needed
_STDERR_KEEP = 16 << 10
T = TypeVar("T")


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: rate, length cap and limits. ``max_seconds`` bounds output size."""

    sample_rate: int
    max_seconds: float
    timeout_s: float = 60.0
    offset_seconds: float = 0.0


def _input(source: AudioSource, opts: DecodeOptions, fd: int | None = None) -> Any:
    """One locked-down FFmpeg input: protocol and demuxer whitelists, ``file:`` prefix, offset.

    ``fd``: the descriptor :func:`open_vetted` returned (FFmpeg inherits it); None only for
    remote inputs and for showing a command line.
    """
    input_kwargs: dict[str, object] = {
        "protocol_whitelist": LOCAL_PROTOCOLS if source.is_local else HTTP_PROTOCOLS,
        "format_whitelist": AUDIO_DEMUXERS,
    }
    if opts.offset_seconds > 0:
        input_kwargs["ss"] = f"{opts.offset_seconds:.3f}"
    # "file:" stops FFmpeg from reading a protocol out of a path such as "concat:a|b".
    if not source.is_local:
        target = source.target
    elif fd is not None:
        target = f"file:/proc/self/fd/{fd}"
    else:
        target = f"file:{source.target}"
    return ffmpeg.input(target, **input_kwargs)


def _output_kwargs(opts: DecodeOptions) -> dict[str, object]:
    """Output options: mono float32 little-endian at the model rate, capped at ``max_seconds``.

    The downmix is the channels' mean (:data:`genretag.core.audio.formats.REMATRIX_MAXVAL`, shared with
    the libav path).
    """
    return {"format": "f32le", "acodec": "pcm_f32le", "ac": 1, "ar": opts.sample_rate,
            "rematrix_maxval": REMATRIX_MAXVAL, "t": f"{opts.max_seconds:.3f}"}


def ffmpeg_argv(source: AudioSource, opts: DecodeOptions, fd: int | None = None) -> list[str]:
    """The FFmpeg command line for one decode (exposed for logs, tests and benchmarks)."""
    stream = _input(source, opts, fd).output("pipe:", map="0:a:0", **_output_kwargs(opts))
    return stream.global_args(*GLOBAL_ARGS).compile()


def ffmpeg_group_argv(sources: Sequence[AudioSource], opts: DecodeOptions,
                      outputs: Sequence[str], fds: Sequence[int | None] | None = None) -> list[str]:
    """One FFmpeg command decoding ``sources[i]``'s first audio stream to ``outputs[i]``.

    Outputs are not flushed packet by packet (``-flush_packets 1`` cost 25-40 % of a group's
    decode time): after a kill, an output's last few KiB may be missing, so only an output
    that reached the length cap counts as complete.
    """
    if len(sources) != len(outputs) or not sources:
        raise ValueError("need one output per source, and at least one source")
    fds = list(fds) if fds is not None else [None] * len(sources)
    streams = [
        _input(src, opts, fd)["a:0"].output(out, **_output_kwargs(opts))
        for src, out, fd in zip(sources, outputs, fds, strict=True)
    ]
    return ffmpeg.merge_outputs(*streams).global_args(*GLOBAL_ARGS).compile()


def decode_audio(source: AudioSource, opts: DecodeOptions, track_id: str | None = None) -> np.ndarray:
    """Decode ``source`` to a 1-D float32 array at ``opts.sample_rate`` (mono, ≤ max_seconds).

    Raises :class:`PermanentError` with ``UNDECODABLE`` (FFmpeg failed or produced no audio)
    or ``DECODE_TIMEOUT``.
    """
    fd = open_vetted(source, track_id) if source.is_local else None
    argv = ffmpeg_argv(source, opts, fd)
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=opts.timeout_s,
            check=False, pass_fds=() if fd is None else (fd,),
        )
    except subprocess.TimeoutExpired:
        raise PermanentError(
            ReasonCode.DECODE_TIMEOUT, f"FFmpeg did not finish within {opts.timeout_s:g}s",
            track_id=track_id,
        ) from None
    except FileNotFoundError:
        raise RuntimeError("ffmpeg is not installed: run scripts/bootstrap.sh") from None
    finally:
        if fd is not None:
            os.close(fd)
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if fd is not None:  # FFmpeg names its input by descriptor: say which file it was
        stderr = stderr.replace(f"/proc/self/fd/{fd}", source.target)
    usable = len(proc.stdout) - len(proc.stdout) % 4
    if proc.returncode != 0 and usable == 0:
        raise PermanentError(
            ReasonCode.UNDECODABLE, f"FFmpeg exit {proc.returncode}: {_last_lines(stderr)}",
            track_id=track_id,
        )
    if usable == 0:
        raise PermanentError(
            ReasonCode.UNDECODABLE, f"no audio decoded: {_last_lines(stderr) or 'empty output'}",
            track_id=track_id,
        )
    return np.frombuffer(proc.stdout, dtype="<f4", count=usable // 4)


def decode_many(
    sources: Sequence[AudioSource], opts: DecodeOptions,
    track_ids: Sequence[str | None] | None = None, group_size: int = DEFAULT_GROUP_SIZE,
    *, isolate_remote: bool = True,
) -> list[np.ndarray | PermanentError]:
    """Decode every source, ``group_size`` per FFmpeg process; one result per source, in order.

    A result is the array :func:`decode_audio` would return, or the :class:`PermanentError`
    it would raise (same reason and detail). Runs in the calling thread: to use several cores,
    call it from several threads on separate chunks (see :func:`split_evenly`). Remote sources
    are decoded alone (``isolate_remote``), so a stalling server delays only its own file.
    """
    ids = list(track_ids) if track_ids is not None else [None] * len(sources)
    if len(ids) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(ids)} track ids")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    results: list[np.ndarray | PermanentError | None] = [None] * len(sources)
    grouped = [k for k, s in enumerate(sources) if s.is_local or not isolate_remote]
    for start in range(0, len(grouped), group_size):
        ks = grouped[start:start + group_size]
        for k, res in zip(ks, _decode_group([sources[k] for k in ks], opts, [ids[k] for k in ks]),
                          strict=True):
            results[k] = res
    for k, res in enumerate(results):
        if res is None:  # a remote source, kept out of the groups
            results[k] = _decode_one(sources[k], opts, ids[k])
    return results  # type: ignore[return-value] - every slot is set above


def split_evenly(items: Sequence[T], parts: int, min_size: int = 1) -> list[list[T]]:
    """``items`` in ≤ ``parts`` near-equal contiguous chunks, each ≥ ``min_size`` when possible."""
    parts = max(1, min(parts, len(items) // max(1, min_size)))
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for k in range(parts):
        stop = start + size + (k < extra)
        chunks.append(list(items[start:stop]))
        start = stop
    return [c for c in chunks if c]


class FFmpegRunFailed(GenretagError):
    """A multi-output FFmpeg run failed as a whole (exit status or timeout); ``partial`` holds
    the samples each output got before that."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.partial: list[np.ndarray] = []


def _decode_one(source: AudioSource, opts: DecodeOptions,
                track_id: str | None) -> np.ndarray | PermanentError:
    try:
        return decode_audio(source, opts, track_id)
    except PermanentError as exc:
        return exc


def _decode_group(sources: list[AudioSource], opts: DecodeOptions,
                  ids: list[str | None]) -> list[np.ndarray | PermanentError]:
    """One FFmpeg process for the group; a file it did not finish is decoded alone, once.

    Each local file is opened (and vetted again) first: one that fails gets its own error and
    stays out of the FFmpeg run. If the run fails or times out, outputs that reached the length
    cap are complete and kept; only the others are retried with :func:`decode_audio`.
    """
    if len(sources) == 1:
        return [_decode_one(sources[0], opts, ids[0])]
    results: list[np.ndarray | PermanentError | None] = [None] * len(sources)
    fds, errors = open_each(sources, ids)
    for k, exc in errors.items():
        results[k] = exc
    try:
        members = list(fds)
        if len(members) > 1:
            cap_samples = round(opts.max_seconds * opts.sample_rate)
            try:
                waves = _run_group([sources[k] for k in members], [fds[k] for k in members], opts)
                failure = None
            except (FFmpegRunFailed, OSError) as exc:  # OSError: out of fds/processes
                failure = exc
                waves = exc.partial if isinstance(exc, FFmpegRunFailed) else []
            # After a failure only outputs that reached the length cap are known complete.
            complete = [len(w) >= cap_samples for w in waves]
            kept = 0
            for j, k in enumerate(members):
                if j < len(waves) and len(waves[j]) and (failure is None or complete[j]):
                    results[k] = waves[j]
                    kept += 1
            if failure is not None:
                log.info("decode.group_retry", extra={
                    "files": len(members), "kept": kept, "retried": len(members) - kept,
                    "why": str(failure)[:500]})
    finally:
        for fd in fds.values():
            if fd is not None:
                os.close(fd)
    # Not finished in the group (or no audio: let decode_audio word the error exactly).
    return [r if r is not None else _decode_one(s, opts, t)
            for r, s, t in zip(results, sources, ids, strict=True)]


def _run_group(sources: list[AudioSource], fds: list[int | None],
               opts: DecodeOptions) -> list[np.ndarray]:
    """One FFmpeg for ``sources`` (:func:`run_to_pipes`), each output capped at ``max_seconds``."""
    cap = math.ceil(opts.max_seconds * opts.sample_rate) * 4 + 65536
    return run_to_pipes(lambda outputs: ffmpeg_group_argv(sources, opts, outputs, fds),
                        [fd for fd in fds if fd is not None],
                        [min(cap, _MAX_PREALLOC_BYTES)] * len(sources), opts.timeout_s)


def run_to_pipes(argv_for: Callable[[list[str]], list[str]], fds: Sequence[int],
                 sizes: Sequence[int], timeout_s: float) -> list[np.ndarray]:
    """Run one FFmpeg whose output i is a pipe read into a buffer of ``sizes[i]`` bytes (grown
    if an output is longer): each output's float32 samples.

    ``argv_for`` builds the command from the output names (``pipe:N``); FFmpeg inherits those
    pipes and the input descriptors ``fds``, nothing else. A timeout or non-zero exit raises
    :class:`FFmpegRunFailed` whose ``partial`` holds what each output got before it.
    """
    pipes: list[tuple[int, int]] = []
    proc: subprocess.Popen | None = None
    buffers: list[np.ndarray] = []
    filled: list[int] = []

    def outputs() -> list[np.ndarray]:
        return [buf[: n - n % 4].view("<f4") for buf, n in zip(buffers, filled, strict=True)]

    try:
        for _ in sizes:
            pipes.append(os.pipe())
            _enlarge_pipe(pipes[-1][0])
        argv = argv_for([f"pipe:{w}" for _, w in pipes])
        inherited = [w for _, w in pipes] + sorted(set(fds))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, pass_fds=inherited)
        except FileNotFoundError:
            raise RuntimeError("ffmpeg is not installed: run scripts/bootstrap.sh") from None
        finally:
            for _, w in pipes:  # only FFmpeg holds the write ends now: EOF when it is done
                os.close(w)
            pipes = [(r, -1) for r, _ in pipes]
        buffers = [np.empty(n, dtype=np.uint8) for n in sizes]
        filled = [0] * len(sizes)
        try:
            stderr = _pump(proc, [r for r, _ in pipes], buffers, filled, timeout_s)
            if proc.returncode != 0:
                raise FFmpegRunFailed(f"FFmpeg exit {proc.returncode}: {_last_lines(stderr)}")
        except FFmpegRunFailed as exc:
            exc.partial = outputs()
            raise
        return outputs()
    finally:
        for r, w in pipes:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)
        if proc is not None:
            _reap(proc)


def _reap(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, wait for it and close its stderr (no zombie, no fd)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _pump(proc: subprocess.Popen, fds: list[int], buffers: list[np.ndarray], filled: list[int],
          timeout_s: float) -> str:
    """Read every output pipe (and stderr) until EOF, within ``timeout_s``; returns stderr."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    err_fd = proc.stderr.fileno()
    err = bytearray()
    with selectors.DefaultSelector() as sel:
        for i, fd in enumerate(fds):
            sel.register(fd, selectors.EVENT_READ, i)
        sel.register(err_fd, selectors.EVENT_READ, -1)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FFmpegRunFailed(f"timeout: FFmpeg did not finish within {timeout_s:g}s")
            for key, _ in sel.select(remaining):
                i = key.data
                if i < 0:
                    chunk = os.read(err_fd, 65536)
                    err += chunk
                    del err[:-_STDERR_KEEP]
                    n = len(chunk)
                else:
                    if filled[i] == len(buffers[i]):  # longer than expected: grow (rare)
                        bigger = np.empty(2 * len(buffers[i]), dtype=np.uint8)
                        bigger[: filled[i]] = buffers[i]
                        buffers[i] = bigger
                    n = os.readv(key.fd, [memoryview(buffers[i])[filled[i]:]])
                    filled[i] += n
                if n == 0:
                    sel.unregister(key.fd)
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise FFmpegRunFailed("timeout: FFmpeg closed its outputs but did not exit") from None
    return err.decode("utf-8", "replace").strip()


def _enlarge_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except OSError:  # over /proc/sys/fs/pipe-max-size for unprivileged users: keep the default
        pass


def _last_lines(text: str, n: int = 3, limit: int = 500) -> str:
    return " | ".join(text.splitlines()[-n:])[-limit:]
