"""Run FFmpeg: one file to a float32 array (:func:`decode_audio`), or one multi-output process
into pipes (:func:`run_to_pipes`), with a timeout, a length cap and no descriptor but the vetted
ones inherited.

A local file is opened in Python (:func:`genretag.core.audio.uri.open_vetted`) and FFmpeg reads
only that descriptor (``/proc/self/fd/N``, inherited through ``pass_fds``), with the command line
of :mod:`genretag.core.audio.ffmpeg.command`.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Sequence

import numpy as np

from genretag.core.audio.ffmpeg.command import ffmpeg_argv
from genretag.core.audio.protocol import DecodeOptions
from genretag.core.audio.uri import AudioSource, open_vetted
from genretag.core.errors import GenretagError, PermanentError
from genretag.schemas import ReasonCode

_PIPE_BYTES = 1 << 20  # bigger pipes: fewer wake-ups per decoded file (Linux F_SETPIPE_SZ)
_STDERR_KEEP = 16 << 10


def decode_audio(source: AudioSource, opts: DecodeOptions,
                 track_id: str | None = None) -> np.ndarray:
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
            ReasonCode.UNDECODABLE, f"FFmpeg exit {proc.returncode}: {last_lines(stderr)}",
            track_id=track_id,
        )
    if usable == 0:
        raise PermanentError(
            ReasonCode.UNDECODABLE, f"no audio decoded: {last_lines(stderr) or 'empty output'}",
            track_id=track_id,
        )
    return np.frombuffer(proc.stdout, dtype="<f4", count=usable // 4)


class FFmpegRunFailed(GenretagError):
    """A multi-output FFmpeg run failed as a whole (exit status or timeout); ``partial`` holds
    the samples each output got before that."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.partial: list[np.ndarray] = []


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
                raise FFmpegRunFailed(f"FFmpeg exit {proc.returncode}: {last_lines(stderr)}")
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


def last_lines(text: str, n: int = 3, limit: int = 500) -> str:
    """FFmpeg's last ``n`` stderr lines on one line, at most ``limit`` characters."""
    return " | ".join(text.splitlines()[-n:])[-limit:]
