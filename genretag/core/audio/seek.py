"""Decode only a track's model windows, wherever they lie in it: cost independent of length.

For a group of files: one FFmpeg process reads every header (:mod:`genretag.core.audio.probe`), then
one FFmpeg process decodes every window of every file, each window an input of its own with
input seeking (``-ss start -t clip``: FFmpeg jumps to the start, it never decodes the audio
before it) and its own output pipe. A 10-minute track therefore costs what a 30 s clip costs
for the same number of windows, and at most ``windows × clip`` seconds are ever decoded.

Headers are checked, not trusted: with each header duration goes a one-second "tail" input at
that duration. Audio there (the file is longer than it says) or a window that comes back
short (it is shorter) makes the file's duration be measured packet by packet and its windows
decoded again once. If a group's process fails, each file is decoded in a process of its own;
if that fails too, the file's first window is decoded by :func:`genretag.core.audio.decode.decode_audio`,
so a bad file gets exactly the dead-letter reason and detail the rest of the project gives it.

With a :class:`WindowSeeker` (the libav decoder processes, the default) a local file is one
request instead: the decoder process reads the header, places, seeks and checks by the same
rules (:mod:`genretag.core.audio.libav_track`), with no FFmpeg process at all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import ffmpeg
import numpy as np

from genretag.core.audio.decode import (GLOBAL_ARGS, DecodeOptions, FFmpegRunFailed, _input,
                               _output_kwargs, decode_audio, run_to_pipes)
from genretag.core.audio.placement import TAIL_SECONDS, Placement, header_lied, place_windows
from genretag.core.audio.probe import Probed, measure_duration, probe_durations
from genretag.core.audio.uri import AudioSource, open_each
from genretag.core.errors import GenretagError, PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import ReasonCode

log = get_logger(__name__)

#: Inputs (windows + tails) per FFmpeg process: bounds its descriptors and memory.
MAX_INPUTS_PER_PROCESS = 64


@dataclass(frozen=True)
class WindowedAudio:
    """A track's decoded windows: ``windows[i]`` (zero-padded to a clip) starts at ``starts[i]``
    seconds and holds ``lengths[i]`` real samples; ``duration_s`` is the whole track's."""

    duration_s: float
    starts: list[float]
    windows: np.ndarray
    lengths: list[int]
    duration_from: str = "header"  # "header", "measured" or "decoded"

    @property
    def decoded_samples(self) -> int:
        return int(sum(self.lengths))

    @classmethod
    def from_spans(cls, duration_s: float, starts: Sequence[float], waves: Sequence[np.ndarray],
                   clip_samples: int, duration_from: str) -> WindowedAudio:
        """Decoded windows (each at most a clip; shorter ones zero-padded) as one array."""
        lengths = [min(len(w), clip_samples) for w in waves]
        out = np.zeros((len(waves), clip_samples), dtype=np.float32)
        for i, (w, n) in enumerate(zip(waves, lengths, strict=True)):
            out[i, :n] = w[:n]
        return cls(duration_s=duration_s, starts=list(starts), windows=out, lengths=lengths,
                   duration_from=duration_from)


@dataclass
class _Plan:
    """One file of a group: its source, duration, window starts and whether to check a tail."""

    k: int
    source: AudioSource
    fd: int | None  # the vetted descriptor FFmpeg reads (None: a remote source)
    duration_s: float
    starts: list[float]
    duration_from: str
    tail: bool
    waves: list[np.ndarray] = field(default_factory=list)

    @property
    def inputs(self) -> int:
        return len(self.starts) + self.tail


@runtime_checkable
class WindowSeeker(Protocol):
    """A decoder that places and seeks a local track's windows itself, in one call (the libav
    decoder processes; checkable with ``isinstance``, which looks only for the method)."""

    def decode_track(self, source: AudioSource, sample_rate: int, placement: Placement, *,
                     timeout_s: float = 60.0, max_track_s: float = 4 * 3600.0,
                     track_id: str | None = None) -> WindowedAudio: ...


class _RunFailed(GenretagError):
    """One multi-input FFmpeg run failed as a whole (exit status or timeout)."""


def decode_windows_many(
    sources: Sequence[AudioSource], sample_rate: int, placement: Placement, *,
    timeout_s: float = 60.0, max_track_s: float = 4 * 3600.0,
    track_ids: Sequence[str | None] | None = None, group_size: int = 8,
    seeker: WindowSeeker | None = None,
) -> list[WindowedAudio | PermanentError]:
    """Every source's windows, ``group_size`` files per probe/decode process; one result each.

    ``max_track_s`` caps how much of a file whose header is missing or estimated is read to
    measure it. Remote sources are handled alone (a stalling server delays only its file).
    With a ``seeker`` (the libav decoder processes) each local file is one request to it.
    """
    ids = list(track_ids) if track_ids is not None else [None] * len(sources)
    if len(ids) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(ids)} track ids")
    dec = _Decoder(sample_rate, placement, timeout_s, max_track_s)
    results: list[WindowedAudio | PermanentError | None] = [None] * len(sources)
    local = [k for k, s in enumerate(sources) if s.is_local]
    if seeker is not None:
        for k in local:
            try:
                results[k] = seeker.decode_track(sources[k], sample_rate, placement,
                                                 timeout_s=timeout_s, max_track_s=max_track_s,
                                                 track_id=ids[k])
            except PermanentError as exc:
                results[k] = exc
        local = []
    groups = [local[i:i + group_size] for i in range(0, len(local), max(1, group_size))]
    groups += [[k] for k, s in enumerate(sources) if not s.is_local]
    for ks in groups:
        for k, res in zip(ks, dec.group([sources[k] for k in ks], [ids[k] for k in ks]),
                          strict=True):
            results[k] = res
    return results  # type: ignore[return-value] - every slot is set above


def decode_windows(source: AudioSource, sample_rate: int, placement: Placement, *,
                   timeout_s: float = 60.0, max_track_s: float = 4 * 3600.0,
                   track_id: str | None = None) -> WindowedAudio:
    """One file's windows; raises the :class:`PermanentError` of a file that cannot be tagged."""
    [res] = decode_windows_many([source], sample_rate, placement, timeout_s=timeout_s,
                                max_track_s=max_track_s, track_ids=[track_id])
    if isinstance(res, PermanentError):
        raise res
    return res


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
            members = list(fds)
            probes = probe_durations([sources[k] for k in members], self.timeout_s,
                                     [fds[k] for k in members])
            plans: list[_Plan] = []
            for k, probed in zip(members, probes, strict=True):
                if probed.timed_out:  # one timeout is the file's whole allowance
                    results[k] = PermanentError(
                        ReasonCode.DECODE_TIMEOUT,
                        f"FFmpeg did not finish within {self.timeout_s:g}s", track_id=ids[k])
                    continue
                plan = self.plan(k, sources[k], fds[k], probed)
                if plan is None:  # no duration at all: the opening clip, or the decoder's error
                    results[k] = self.fallback(sources[k], ids[k])
                else:
                    plans.append(plan)
            for batch in _batches(plans):
                self.run(batch)
            for plan in plans:
                results[plan.k] = self.finish(plan, ids[plan.k])
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        return results  # type: ignore[return-value]

    def plan(self, k: int, src: AudioSource, fd: int | None, probed: Probed) -> _Plan | None:
        if probed.trusted:
            assert probed.duration_s is not None
            return self.make_plan(k, src, fd, probed.duration_s, "header", tail=True)
        measured = measure_duration(src, self.max_track_s, self.timeout_s, fd)
        if measured is None:
            return None
        return self.make_plan(k, src, fd, measured, "measured", tail=False)

    def make_plan(self, k: int, src: AudioSource, fd: int | None, duration_s: float, how: str,
                  tail: bool) -> _Plan:
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
            streams = [_input(src, self.opts(start, sec), fd)["a:0"].output(
                out, **_output_kwargs(self.opts(start, sec)))
                for (src, fd, start, sec), out in zip(items, outputs, strict=True)]
            return ffmpeg.merge_outputs(*streams).global_args(*GLOBAL_ARGS).compile()

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
