"""Long-lived decoder processes running libav in-process: the codec's speed, the CLI's isolation.

:class:`DecoderPool` keeps ``processes`` children (:mod:`genretag.core.audio.decoder_child`), each with
a memfd shared with this process, sized to the largest output asked for so far: a child decodes
straight into it and the parent copies the samples out once. Any thread may call
:meth:`DecoderPool.decode_audio` (same contract as :func:`genretag.core.audio.decode.decode_audio`) or
:meth:`DecoderPool.decode_windows`, or :meth:`DecoderPool.decode_track` (a whole track's
windows, placed by the child); a call takes an idle child for one file.

A child that crashes or outlives the timeout is killed and replaced, and the file is tried once
more, alone, on the fresh child; if that fails the same way the file gets ``UNDECODABLE`` or
``DECODE_TIMEOUT``. Non-local sources (http) go to the FFmpeg command line, whose protocol
whitelist covers them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genretag.core.audio.decode import DecodeOptions, decode_audio
from genretag.core.audio.placement import Placement
from genretag.core.audio.seek import WindowedAudio
from genretag.core.audio.uri import AudioSource, open_vetted
from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import ReasonCode

log = get_logger(__name__)

CHILD_CMD = (sys.executable, "-m", "genretag.core.audio.decoder_child")
#: Seconds a child may take to start (import numpy and PyAV) before the pool gives up on it.
START_TIMEOUT_S = 120.0
_REPLY_LIMIT = 64 << 10
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


class _ChildFailed(Exception):
    """The child died or hung during a request (it has been killed)."""

    def __init__(self, hung: bool, why: str) -> None:
        super().__init__(why)
        self.hung = hung


class _Child:
    """One decoder process and its shared output buffer of ``capacity`` float32 samples."""

    def __init__(self, capacity: int, cmd: Sequence[str]) -> None:
        self.capacity = capacity
        nbytes = capacity * 4
        self.fd = os.memfd_create("genretag-decode", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, nbytes)
        self.shared = mmap.mmap(self.fd, nbytes)
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get(
                   "PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(
            [*cmd, str(self.fd), str(nbytes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, pass_fds=[self.fd], env=env)
        self.ready = False
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, fields: dict, timeout_s: float) -> dict:
        """Send one request, wait for its reply; raises :class:`_ChildFailed` (child killed)."""
        if not self.ready:
            self._read_reply(time.monotonic() + START_TIMEOUT_S, starting=True)
            self.ready = True
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(fields).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            self.kill()
            raise _ChildFailed(False, f"decoder process gone ({exc.strerror})") from None
        return self._read_reply(time.monotonic() + timeout_s)

    def _read_reply(self, deadline: float, starting: bool = False) -> dict:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.kill()
                    if starting:
                        raise RuntimeError("the decoder process did not start in time")
                    raise _ChildFailed(True, "decoder process did not answer in time")
                chunk = os.read(fd, 65536)
                if not chunk or len(self._buf) > _REPLY_LIMIT:
                    code = self.kill()
                    if starting:
                        raise RuntimeError(f"the decoder process exited at start ({code}): "
                                           "is PyAV (`av`) installed?")
                    raise _ChildFailed(False, f"decoder process died ({_exit_text(code)})")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def samples(self, lengths: list[int]) -> list[np.ndarray]:
        """Copy the spans of the last reply out of the shared buffer (one copy each)."""
        view = np.frombuffer(self.shared, dtype=np.float32)
        if sum(lengths) > len(view):
            raise RuntimeError("decoder reply claims more samples than its buffer holds")
        out, at = [], 0
        for n in lengths:
            out.append(view[at: at + n].copy())
            at += n
        return out

    def kill(self) -> int | None:
        """Stop the process (SIGKILL if needed) and free the buffer; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if not self.shared.closed:
            self.shared.close()
            os.close(self.fd)
        return code


def _exit_text(code: int | None) -> str:
    return f"signal {-code}" if code is not None and code < 0 else f"exit {code}"


class DecoderPool:
    """``processes`` long-lived libav decoder processes; thread-safe, one file per call."""

    def __init__(self, processes: int, capacity_samples: int = 1 << 20,
                 cmd: Sequence[str] = CHILD_CMD, max_file_bytes: int | None = None) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.cmd = tuple(cmd)
        self.max_file_bytes = max_file_bytes
        self._idle: queue.Queue[_Child] = queue.Queue()
        self._all: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(processes):  # started now, in parallel; each waits for "ready" at first use
            self._add(_Child(capacity_samples, self.cmd))
        self.restarts = 0

    def _add(self, child: _Child) -> None:
        with self._lock:
            self._all.append(child)
        self._idle.put(child)

    def _replace(self, child: _Child, capacity: int) -> _Child:
        child.kill()
        fresh = _Child(capacity, self.cmd)
        with self._lock:
            self._all = [c for c in self._all if c is not child] + [fresh]
        return fresh

    def pids(self) -> list[int]:
        """Process ids of the current children (for tests and logs)."""
        with self._lock:
            return [c.pid for c in self._all]

    def close(self) -> None:
        """Stop every child."""
        with self._lock:
            self._closed = True
            children, self._all = self._all, []
        for child in children:
            child.kill()

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def decode_audio(self, source: AudioSource, opts: DecodeOptions,
                     track_id: str | None = None) -> np.ndarray:
        """The whole file (from ``offset_seconds``, ≤ ``max_seconds``), as :func:`decode_audio`."""
        if not source.is_local:
            return decode_audio(source, opts, track_id)
        max_samples = round(opts.max_seconds * opts.sample_rate)
        return self._decode(source, opts, track_id, max_samples, ())[1][0]

    def decode_windows(self, source: AudioSource, opts: DecodeOptions,
                       windows: Sequence[tuple[float, float]],
                       track_id: str | None = None) -> list[np.ndarray]:
        """One array per ``(start_s, duration_s)`` window, each decoded after a seek.

        The windows together are capped at ``opts.max_seconds``; a window past the end of the
        audio comes back shorter (or empty).
        """
        if not source.is_local:
            raise PermanentError(ReasonCode.DISALLOWED_URI, "windowed decoding needs a local file",
                                 track_id=track_id)
        total = sum(round(d * opts.sample_rate) for _, d in windows)
        max_samples = min(total, round(opts.max_seconds * opts.sample_rate))
        _, spans = self._decode(source, opts, track_id, max_samples, tuple(windows))
        return spans + [np.zeros(0, np.float32)] * (len(windows) - len(spans))

    def decode_track(self, source: AudioSource, sample_rate: int, placement: Placement, *,
                     timeout_s: float = 60.0, max_track_s: float = 4 * 3600.0,
                     track_id: str | None = None) -> WindowedAudio:
        """A local file's windows, placed over its whole duration, in one child request.

        The child reads the header, places, seeks and checks itself
        (:mod:`genretag.core.audio.libav_track`): no FFmpeg process, one open of the file. Raises the
        file's :class:`PermanentError` (the reasons of :meth:`decode_audio`).
        """
        if not source.is_local:
            raise PermanentError(ReasonCode.DISALLOWED_URI, "windowed decoding needs a local file",
                                 track_id=track_id)
        clip = round(placement.clip_seconds * sample_rate)
        opts = DecodeOptions(sample_rate, placement.clip_seconds * placement.max_windows,
                             timeout_s=timeout_s)
        track = {**dataclasses.asdict(placement), "max_track_s": max_track_s}  # every field
        reply, spans = self._decode(source, opts, track_id, clip * placement.max_windows, (),
                                    track)
        return WindowedAudio.from_spans(float(reply["duration_s"]), reply["starts"], spans, clip,
                                        str(reply["duration_from"]))

    def _decode(self, source: AudioSource, opts: DecodeOptions, track_id: str | None,
                max_samples: int, windows: tuple,
                track: dict | None = None) -> tuple[dict, list[np.ndarray]]:
        if self._closed:
            raise RuntimeError("decoder pool is closed")
        # Opened and checked here exactly as the FFmpeg CLI path does (same reasons); the child
        # opens this very descriptor through /proc and checks it is the same file.
        fd = open_vetted(source, track_id)
        try:
            st = os.fstat(fd)
            fields = {"path": f"/proc/{os.getpid()}/fd/{fd}", "sample_rate": opts.sample_rate,
                      "max_samples": max_samples, "max_file_bytes": self.max_file_bytes,
                      "offset_s": opts.offset_seconds, "windows": [list(w) for w in windows],
                      "identity": [st.st_dev, st.st_ino]}
            if track is not None:
                fields["track"] = track
            return self._on_child(fields, source, opts, track_id, max_samples)
        finally:
            os.close(fd)

    def _on_child(self, fields: dict, source: AudioSource, opts: DecodeOptions,
                  track_id: str | None, max_samples: int) -> tuple[dict, list[np.ndarray]]:
        """Run ``fields`` on an idle child; a crash or hang: fresh child, one retry."""
        child = self._idle.get()
        try:
            failure: _ChildFailed | None = None
            for attempt in (1, 2):
                if child.proc.poll() is not None or max_samples > child.capacity:
                    child = self._replace(child, max(max_samples, child.capacity))
                try:
                    reply = child.request(fields, opts.timeout_s)
                    break
                except _ChildFailed as exc:
                    failure = exc
                    self.restarts += 1
                    log.warning("decode.child_failed", extra={
                        "track_id": track_id, "attempt": attempt, "why": str(exc),
                        "path": source.target})
                    child = self._replace(child, child.capacity)
            else:
                assert failure is not None
                if failure.hung:
                    raise PermanentError(
                        ReasonCode.DECODE_TIMEOUT,
                        f"decoding did not finish within {opts.timeout_s:g}s (tried twice)",
                        track_id=track_id)
                raise PermanentError(ReasonCode.UNDECODABLE, f"{failure} (tried twice)",
                                     track_id=track_id)
            if not reply.get("ok"):
                detail = str(reply["detail"]).replace(fields["path"], source.target)
                raise PermanentError(ReasonCode(reply["reason"]), detail[:4000],
                                     track_id=track_id)
            return reply, child.samples([int(n) for n in reply["lengths"]])
        finally:
            if self._closed:
                child.kill()
            else:
                self._idle.put(child)


def pool_capacity(opts: DecodeOptions) -> int:
    """Samples a child's buffer needs for ``opts`` (whole-file decodes)."""
    return math.ceil(opts.max_seconds * opts.sample_rate)
