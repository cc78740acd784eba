"""Long-lived decoder processes running libav in-process: the codec's speed, the CLI's isolation.

:class:`DecoderPool` keeps ``processes`` decoder processes
(:class:`genretag.core.audio.libav.exchange.DecoderProcess`), each with a memfd shared with this
process, sized to the largest output asked for so far: a process decodes straight into it and
the parent copies the samples out once. Any thread may call :meth:`DecoderPool.decode_audio`
(same contract as the FFmpeg backend's :func:`genretag.core.audio.ffmpeg.decode.decode_audio`),
:meth:`DecoderPool.decode_windows`, :meth:`DecoderPool.decode_track` (a whole track's windows,
placed by the process) or :meth:`DecoderPool.duration`; a call takes an idle process for one
local file.

An exchange that fails in any way (the process died, hung, answered garbled or for another
request, or this process ran out of descriptors mid-exchange) has already killed its process; a
killed process is never reused. A fresh one takes its place and the file is tried once more on
it; if that fails too, the file gets ``DECODE_TIMEOUT`` (hung), ``INTERNAL`` (this worker was out
of descriptors or memory: the file was not judged, replay it) or ``UNDECODABLE``. A file that
makes libav raise gets its reply like any other (the decoder process turns every exception into
one), so it costs no restart.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
from collections.abc import Sequence

import numpy as np

from genretag.core.audio.libav.exchange import DecoderProcess, ExchangeFailed
from genretag.core.audio.placement import Placement
from genretag.core.audio.protocol import (DEFAULT_MAX_TRACK_S, DEFAULT_TIMEOUT_S, DecodeOptions,
                                          Duration, WindowedAudio)
from genretag.core.audio.uri import AudioSource, open_vetted
from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import ReasonCode

log = get_logger(__name__)

CHILD_CMD = (sys.executable, "-m", "genretag.core.audio.libav.child")


class DecoderPool:
    """``processes`` long-lived libav decoder processes; thread-safe, one file per call."""

    def __init__(self, processes: int, capacity_samples: int = 1 << 20,
                 cmd: Sequence[str] = CHILD_CMD, max_file_bytes: int | None = None) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.cmd = tuple(cmd)
        self.max_file_bytes = max_file_bytes
        self._idle: queue.Queue[DecoderProcess] = queue.Queue()
        self._all: list[DecoderProcess] = []
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        for _ in range(processes):  # started now, in parallel; each waits for "ready" at first use
            child = DecoderProcess(capacity_samples, self.cmd)
            with self._lock:
                self._all.append(child)
            self._idle.put(child)

    def _fresh(self, child: DecoderProcess, capacity: int) -> DecoderProcess:
        """A new process in ``child``'s slot (``child`` killed); raises OSError if none can be
        started now (the dead one then keeps the slot and is replaced at its next use)."""
        child.kill()
        fresh = DecoderProcess(capacity, self.cmd)
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
        """The whole local file (from ``offset_seconds``, ≤ ``max_seconds``)."""
        _local_only(source, track_id)
        max_samples = round(opts.max_seconds * opts.sample_rate)
        return self._decode(source, opts, track_id, max_samples, ())[1][0]

    def decode_windows(self, source: AudioSource, opts: DecodeOptions,
                       windows: Sequence[tuple[float, float]],
                       track_id: str | None = None) -> list[np.ndarray]:
        """One array per ``(start_s, duration_s)`` window, each decoded after a seek.

        The windows together are capped at ``opts.max_seconds``; a window past the end of the
        audio comes back shorter (or empty).
        """
        _local_only(source, track_id)
        total = sum(round(d * opts.sample_rate) for _, d in windows)
        max_samples = min(total, round(opts.max_seconds * opts.sample_rate))
        _, spans = self._decode(source, opts, track_id, max_samples, tuple(windows))
        return spans + [np.zeros(0, np.float32)] * (len(windows) - len(spans))

    def decode_track(self, source: AudioSource, sample_rate: int, placement: Placement, *,
                     timeout_s: float = DEFAULT_TIMEOUT_S, max_track_s: float = DEFAULT_MAX_TRACK_S,
                     track_id: str | None = None) -> WindowedAudio:
        """A local file's windows, placed over its whole duration, in one child request.

        The child reads the header, places, seeks and checks itself
        (:mod:`genretag.core.audio.libav.track`): no FFmpeg process, one open of the file. Raises
        the file's :class:`PermanentError` (the reasons of :meth:`decode_audio`).
        """
        _local_only(source, track_id)
        clip = round(placement.clip_seconds * sample_rate)
        opts = DecodeOptions(sample_rate, placement.clip_seconds * placement.max_windows,
                             timeout_s=timeout_s)
        track = {**dataclasses.asdict(placement), "max_track_s": max_track_s}  # every field
        reply, spans = self._decode(source, opts, track_id, clip * placement.max_windows, (),
                                    {"track": track})
        return WindowedAudio.from_spans(float(reply["duration_s"]), reply["starts"], spans, clip,
                                        reply["duration_from"])

    def duration(self, source: AudioSource, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_track_s: float = DEFAULT_MAX_TRACK_S, track_id: str | None = None) -> Duration:
        """A local file's duration as :meth:`decode_track` judges it before decoding: the
        header's, measured (packets read, no decode) when it has none or only an estimate."""
        _local_only(source, track_id)
        opts = DecodeOptions(1, 0.0, timeout_s=timeout_s)
        reply, _ = self._decode(source, opts, track_id, 0, (),
                                {"duration": {"max_track_s": max_track_s}})
        seconds = reply["duration_s"]
        return Duration(None if seconds is None else float(seconds), reply["duration_from"])

    def _decode(self, source: AudioSource, opts: DecodeOptions, track_id: str | None,
                max_samples: int, windows: tuple,
                op: dict | None = None) -> tuple[dict, list[np.ndarray]]:
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
            fields.update(op or {})
            return self._on_child(fields, source, opts, track_id, max_samples)
        finally:
            os.close(fd)

    def _on_child(self, fields: dict, source: AudioSource, opts: DecodeOptions,
                  track_id: str | None, max_samples: int) -> tuple[dict, list[np.ndarray]]:
        """Run ``fields`` on an idle process; a failed exchange: a fresh process, one retry."""
        child = self._idle.get()
        try:
            failures: list[ExchangeFailed] = []
            for attempt in (1, 2):
                try:
                    child = self._usable(child, max_samples)
                    reply, spans = child.exchange(fields, opts.timeout_s)
                    break
                except ExchangeFailed as exc:
                    failures.append(exc)
                    log.warning("decode.child_failed", extra={
                        "track_id": track_id, "attempt": attempt, "why": str(exc),
                        "kind": exc.kind, "path": source.target})
                    child = self._restart(child)
            else:
                raise _gave_up(failures, opts.timeout_s, track_id)
            if not reply["ok"]:
                detail = str(reply.get("detail", "")).replace(fields["path"], source.target)
                if reply["reason"] == ReasonCode.INTERNAL:
                    log.error("decode.child_error", extra={"track_id": track_id,
                                                           "path": source.target,
                                                           "why": detail[:2000]})
                raise PermanentError(ReasonCode(reply["reason"]), detail[:4000],
                                     track_id=track_id)
            return reply, spans
        finally:
            if self._closed:
                child.kill()
            else:
                self._idle.put(child)

    def _usable(self, child: DecoderProcess, max_samples: int) -> DecoderProcess:
        """``child``, or a fresh process in its slot if it is dead or its buffer too small."""
        if self._closed:
            raise RuntimeError("decoder pool is closed")
        if child.alive and max_samples <= child.capacity:
            return child
        try:
            return self._fresh(child, max(max_samples, child.capacity))
        except OSError as exc:  # out of descriptors or processes: the file was not judged
            raise ExchangeFailed("local", f"cannot start a decoder process: "
                                          f"{exc.strerror or exc}") from None

    def _restart(self, child: DecoderProcess) -> DecoderProcess:
        """After a failed exchange (``child`` already killed): count it and start a fresh
        process now, so one stands ready; if none can start, the dead one keeps the slot."""
        self.restarts += 1
        if self._closed:
            return child
        try:
            return self._fresh(child, child.capacity)
        except OSError:
            return child


def _gave_up(failures: list[ExchangeFailed], timeout_s: float,
             track_id: str | None) -> PermanentError:
    """The file's error after two failed exchanges: not judged if this process was at fault."""
    last = failures[-1]
    if any(f.kind == "local" for f in failures):
        return PermanentError(
            ReasonCode.INTERNAL,
            f"{last} (tried twice): this worker is out of file descriptors or memory (raise its "
            "open-files limit, `ulimit -n`, or lower DECODE_WORKERS); the file was not judged, "
            "replay it", track_id=track_id)
    if last.kind == "hung":
        return PermanentError(ReasonCode.DECODE_TIMEOUT,
                              f"decoding did not finish within {timeout_s:g}s (tried twice)",
                              track_id=track_id)
    return PermanentError(ReasonCode.UNDECODABLE, f"{last} (tried twice)", track_id=track_id)


def _local_only(source: AudioSource, track_id: str | None) -> None:
    """The decoder processes read local files only (remote ones go to the FFmpeg backend)."""
    if not source.is_local:
        raise PermanentError(ReasonCode.DISALLOWED_URI,
                             "the libav decoder processes read local files only",
                             track_id=track_id)
