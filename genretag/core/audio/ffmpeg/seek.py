"""A track's model windows with FFmpeg, wherever they lie in it: cost independent of length.

For a group of files: one FFmpeg process reads every header
(:mod:`genretag.core.audio.ffmpeg.probe`), then one FFmpeg process decodes every window of every
file, each window an input of its own with input seeking (``-ss start -t clip``: FFmpeg jumps to
the start, it never decodes the audio before it) and its own output pipe. A 10-minute track
therefore costs what a 30 s clip costs for the same number of windows, and at most
``windows × clip`` seconds are ever decoded.

Headers are checked, not trusted: with each header duration goes a one-second "tail" input at
that duration. Audio there (the file is longer than it says) or a window that comes back
short (it is shorter) makes the file's duration be measured packet by packet and its windows
decoded again once (:func:`genretag.core.audio.placement.header_lied`, the rule the libav
backend applies too). If a group's process fails, each file is decoded in a process of its
own; if that fails too, the file's opening clip is decoded by
:func:`genretag.core.audio.ffmpeg.decode.decode_audio`, so a bad file gets exactly the
dead-letter reason and detail the rest of the project gives it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genretag.core.audio.ffmpeg.command import multi_output_argv
from genretag.core.audio.ffmpeg.decode import FFmpegRunFailed, decode_audio, run_to_pipes
from genretag.core.audio.ffmpeg.probe import Probed, measure_duration, probe_durations
from genretag.core.audio.placement import TAIL_SECONDS, Placement, header_lied, place_windows
from genretag.core.audio.protocol import (DEFAULT_MAX_TRACK_S, DEFAULT_TIMEOUT_S, DecodeOptions,
                                          Duration, DurationFrom, WindowedAudio, ids_for)
from genretag.core.audio.uri import AudioSource, open_each
from genretag.core.errors import GenretagError, PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import ReasonCode

log = get_logger(__name__)

#: Inputs (windows + tails) per FFmpeg process: bounds its descriptors and memory.
MAX_INPUTS_PER_PROCESS = 64


@dataclass
class _Plan:
    """One file of a group: its source, duration, window starts and whether to check a tail."""

    k: int
    source: AudioSource
    fd: int | None  # the vetted descriptor FFmpeg reads (None: a remote source)
    duration_s: float
    starts: list[float]
    duration_from: DurationFrom
    tail: bool
    waves: list[np.ndarray] = field(default_factory=list)

    @property
    def inputs(self) -> int:
        return len(self.starts) + self.tail


class _RunFailed(GenretagError):
    """One multi-input FFmpeg run failed as a whole (exit status or timeout)."""


def decode_windows_many(
    sources: Sequence[AudioSource], sample_rate: int, placement: Placement, *,
    timeout_s: float = DEFAULT_TIMEOUT_S, max_track_s: float = DEFAULT_MAX_TRACK_S,
    track_ids: Sequence[str | None] | None = None, group_size: int = 8,
) -> list[WindowedAudio | PermanentError]:
    """Every source's windows, ``group_size`` files per probe/decode process; one result each.

    ``max_track_s`` caps how much of a file whose header is missing or estimated is read to
    measure it. Remote sources are handled alone (a stalling server delays only its file).
    """
    ids = ids_for(sources, track_ids)
    dec = _Decoder(sample_rate, placement, timeout_s, max_track_s)
    results: list[WindowedAudio | PermanentError | None] = [None] * len(sources)
    for ks in _groups(sources, group_size):
        for k, res in zip(ks, dec.group([sources[k] for k in ks], [ids[k] for k in ks]),
                          strict=True):
            results[k] = res
    return results  # type: ignore[return-value] - every slot is set above


def durations_many(sources: Sequence[AudioSource], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                   max_track_s: float = DEFAULT_MAX_TRACK_S,
                   track_ids: Sequence[str | None] | None = None,
                   group_size: int = 8) -> list[Duration | PermanentError]:
    """Every source's header duration (one probe process per group), measured where the
    header has none or only an estimate; nothing decoded."""
    ids = ids_for(sources, track_ids)
    dec = _Decoder(1, Placement(1.0), timeout_s, max_track_s)
    results: list[Duration | PermanentError | None] = [None] * len(sources)
    for ks in _groups(sources, group_size):
        for k, res in zip(ks, dec.durations([sources[k] for k in ks], [ids[k] for k in ks]),
                          strict=True):
            results[k] = res
    return results  # type: ignore[return-value] - every slot is set above


def _groups(sources: Sequence[AudioSource], group_size: int) -> list[list[int]]:
    """Indices of the local sources by ``group_size``, then each remote source alone."""
    local = [k for k, s in enumerate(sources) if s.is_local]
    groups = [local[i:i + group_size] for i in range(0, len(local), max(1, group_size))]
    return groups + [[k] for k, s in enumerate(sources) if not s.is_local]


class _Decoder:
    def __init__(self, sample_rate: int, placement: Placement, timeout_s: float,
                 max_track_s: float) -> None:
        self.sr = sample_rate
        self.placement = placement
        self.clip_samples = int(round(placement.clip_seconds * sample_rate))
        self.timeout_s = timeout_s
        self.max_track_s = max_track_s

    def opts(self, start: float, seconds: float) -> DecodeOptions:
        return DecodeOptions(sample_rate=self.sr, max_seconds=seconds, timeout_s=self.timeout_s,
                             offset_seconds=start)

    # -- one group -------------------------------------------------------------------------
    def group(self, sources: list[AudioSource],
              ids: list[str | None]) -> list[WindowedAudio | PermanentError]:
        """Open (and vet again) each local file once; FFmpeg reads only those descriptors."""
        results: list[WindowedAudio | PermanentError | None] = [None] * len(sources)
        fds, errors = open_each(sources, ids)
        for k, exc in errors.items():
            results[k] = exc
        try:
            plans: list[_Plan] = []
            for k, found in self.judge(sources, ids, fds).items():
                if isinstance(found, PermanentError):
                    results[k] = found
                elif found.seconds is None:  # the opening clip, or the decoder's error
                    results[k] = self.fallback(sources[k], ids[k])
                else:
                    plans.append(self.make_plan(k, sources[k], fds[k], found.seconds,
                                                found.duration_from,
                                                tail=found.duration_from == "header"))
            for batch in _batches(plans):
                self.run(batch)
            for plan in plans:
                results[plan.k] = self.finish(plan, ids[plan.k])
        finally:
            _close_all(fds)
        return results  # type: ignore[return-value]

    def durations(self, sources: list[AudioSource],
                  ids: list[str | None]) -> list[Duration | PermanentError]:
        """The group's durations as :meth:`group` judges them before decoding."""
        results: list[Duration | PermanentError | None] = [None] * len(sources)
        fds, errors = open_each(sources, ids)
        for k, exc in errors.items():
            results[k] = exc
        try:
            for k, found in self.judge(sources, ids, fds).items():
                results[k] = found
        finally:
            _close_all(fds)
        return results  # type: ignore[return-value]

    def judge(self, sources: list[AudioSource], ids: list[str | None],
              fds: dict[int, int | None]) -> dict[int, Duration | PermanentError]:
        """The opened members' durations: their headers (one probe process), measured where a
        header has none or only an estimate; a probe that timed out is the file's error."""
        members = list(fds)
        probes = probe_durations([sources[k] for k in members], self.timeout_s,
                                 [fds[k] for k in members])
        out: dict[int, Duration | PermanentError] = {}
        for k, probed in zip(members, probes, strict=True):
            if probed.timed_out:  # one timeout is the file's whole allowance
                out[k] = PermanentError(ReasonCode.DECODE_TIMEOUT,
                                        f"FFmpeg did not finish within {self.timeout_s:g}s",
                                        track_id=ids[k])
            else:
                out[k] = self.duration(sources[k], fds[k], probed)
        return out

    def duration(self, src: AudioSource, fd: int | None, probed: Probed) -> Duration:
        if probed.trusted:
            return Duration(probed.duration_s, "header")
        measured = measure_duration(src, self.max_track_s, self.timeout_s, fd)
        return Duration(measured, "measured" if measured is not None else "unknown")

    def make_plan(self, k: int, src: AudioSource, fd: int | None, duration_s: float,
                  how: DurationFrom, tail: bool) -> _Plan:
        return _Plan(k, src, fd, duration_s, place_windows(duration_s, self.placement), how, tail)

    # -- decoding --------------------------------------------------------------------------
    def run(self, plans: list[_Plan]) -> None:
        """Decode ``plans``' windows in one process; on failure each file alone, then per window."""
        try:
            waves = self.run_inputs([(p.source, p.fd, s, sec) for p in plans
                                     for s, sec in self.inputs(p)])
        except (_RunFailed, OSError) as exc:
            if len(plans) > 1:
                log.info("decode.windows_group_retry", extra={"files": len(plans),
                                                               "why": str(exc)[:500]})
                for p in plans:
                    self.run([p])
                return
            plans[0].waves = []  # finish() words the error
            return
        for p in plans:
            p.waves, waves = waves[:p.inputs], waves[p.inputs:]

    def inputs(self, plan: _Plan) -> list[tuple[float, float]]:
        clip = self.placement.clip_seconds
        pairs = [(s, clip) for s in plan.starts]
        return pairs + ([(plan.duration_s, TAIL_SECONDS)] if plan.tail else [])

    def run_inputs(self, items: list[tuple[AudioSource, int | None, float, float]]
                   ) -> list[np.ndarray]:
        """One FFmpeg: input i is ``items[i]`` (source, descriptor, start, seconds), output i
        a pipe. Several inputs may read one descriptor (each opens ``/proc/self/fd/N`` anew)."""
        def argv_for(outputs: list[str]) -> list[str]:
            return multi_output_argv([(src, fd, self.opts(start, sec))
                                      for src, fd, start, sec in items], outputs)

        try:
            return run_to_pipes(argv_for, [fd for _, fd, _, _ in items if fd is not None],
                                [math.ceil(sec * self.sr) * 4 + 65536 for *_, sec in items],
                                self.timeout_s)
        except FFmpegRunFailed as exc:  # exit status or timeout
            raise _RunFailed(str(exc)) from None

    # -- checking and assembling -----------------------------------------------------------
    def mismatch(self, plan: _Plan) -> bool:
        """The header lied: audio past its end, or a window shorter than it should be."""
        past = len(plan.waves[-1]) / self.sr if plan.tail and plan.waves else 0.0
        return header_lied(plan.duration_s, plan.starts, [len(w) for w in plan.waves],
                           self.placement.clip_seconds, self.sr, past)

    def finish(self, plan: _Plan, track_id: str | None) -> WindowedAudio | PermanentError:
        if plan.waves and plan.duration_from == "header" and self.mismatch(plan):
            measured = measure_duration(plan.source, self.max_track_s, self.timeout_s, plan.fd)
            log.info("decode.duration_mismatch", extra={
                "track_id": track_id, "header_s": plan.duration_s, "measured_s": measured})
            if measured is None:
                return self.fallback(plan.source, track_id)
            plan = self.make_plan(plan.k, plan.source, plan.fd, measured, "measured", tail=False)
            self.run([plan])
        waves = plan.waves[: len(plan.starts)]
        if not waves or not any(len(w) for w in waves):
            return self.fallback(plan.source, track_id)
        duration = plan.duration_s
        if len(plan.starts) == 1 and plan.starts[0] == 0.0 and len(waves[0]) < self.clip_samples:
            duration = len(waves[0]) / self.sr  # the whole track is in that window: exact
        return WindowedAudio.from_spans(duration, plan.starts, waves, self.clip_samples,
                                        plan.duration_from)

    def fallback(self, src: AudioSource, track_id: str | None) -> WindowedAudio | PermanentError:
        """No usable duration or windows: the opening clip as :func:`decode_audio` gives it (one
        window, duration as decoded), or exactly the error it raises for the file."""
        try:
            wave = decode_audio(src, self.opts(0.0, self.placement.clip_seconds), track_id)
        except PermanentError as exc:
            return exc
        n = min(len(wave), self.clip_samples)
        return WindowedAudio.from_spans(n / self.sr, [0.0], [wave], self.clip_samples, "decoded")


def _close_all(fds: dict[int, int | None]) -> None:
    for fd in fds.values():
        if fd is not None:
            os.close(fd)


def _batches(plans: list[_Plan]) -> list[list[_Plan]]:
    """Consecutive plans with at most :data:`MAX_INPUTS_PER_PROCESS` inputs together."""
    out: list[list[_Plan]] = []
    size = 0
    for p in plans:
        if out and size + p.inputs <= MAX_INPUTS_PER_PROCESS:
            out[-1].append(p)
            size += p.inputs
        else:
            out.append([p])
            size = p.inputs
    return out
