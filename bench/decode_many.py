"""Whole files, many per FFmpeg process: the benchmark's amortised decode floor (``decode_many``).

The worker decodes windows, never whole files in groups, so this lives here, with the
benchmarks that measure what grouping FFmpeg's start-up buys (``bench.decode``) and the worker's
former decode options they feed it (:func:`worker_decode_options`). It runs the production FFmpeg
backend's own pieces (its locked-down command line, its vetted opens, its runner), so its samples
are the FFmpeg backend's, bit for bit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from genretag.core.audio.decoders import DEFAULT_GROUP_SIZE, DecodeOptions
from genretag.core.audio.ffmpeg.command import multi_output_argv
from genretag.core.audio.ffmpeg.decode import FFmpegRunFailed, decode_audio, run_to_pipes
from genretag.core.audio.uri import AudioSource, open_each
from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import ModelManifest
from genretag.worker.settings import WorkerSettings

log = get_logger(__name__)

_MAX_PREALLOC_BYTES = 64 << 20  # buffers start at most this big and grow if ever needed


def worker_decode_options(manifest: ModelManifest, settings: WorkerSettings) -> DecodeOptions:
    """A plain decode of the opening ``max_windows`` clips (the pre-whole-track worker, the
    benchmark's naive baseline)."""
    return DecodeOptions(sample_rate=manifest.sample_rate,
                         max_seconds=manifest.clip_seconds * settings.windows.max_windows,
                         timeout_s=settings.decode.timeout_s)


def decode_many(
    sources: Sequence[AudioSource], opts: DecodeOptions,
    track_ids: Sequence[str | None] | None = None, group_size: int = DEFAULT_GROUP_SIZE,
    *, isolate_remote: bool = True,
) -> list[np.ndarray | PermanentError]:
    """Decode every source, ``group_size`` per FFmpeg process; one result per source, in order.

    A result is the array :func:`decode_audio` would return, or the :class:`PermanentError`
    it would raise (same reason and detail). Runs in the calling thread: to use several cores,
    call it from several threads on separate chunks. Remote sources are decoded alone
    (``isolate_remote``), so a stalling server delays only its own file.
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
    inputs = [(src, fd, opts) for src, fd in zip(sources, fds, strict=True)]
    return run_to_pipes(lambda outputs: multi_output_argv(inputs, outputs),
                        [fd for fd in fds if fd is not None],
                        [min(cap, _MAX_PREALLOC_BYTES)] * len(sources), opts.timeout_s)
