"""Decode-only limits: per-file FFmpeg (``decode_audio``) vs ``decode_many``, and libav's floors."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.decode_many import decode_many
from bench.floors import decoder_pool_rate, floors
from genretag.core.audio.decoders import DecodeOptions
from genretag.core.audio.ffmpeg.decode import decode_audio
from genretag.core.audio.uri import AudioSource


def _digest(wave: np.ndarray | Exception) -> str:
    if isinstance(wave, Exception):
        return f"error:{wave}"
    return hashlib.blake2b(wave.tobytes(), digest_size=16).hexdigest()


def per_file(sources: list[AudioSource], opts: DecodeOptions, workers: int) -> list[str]:
    """One FFmpeg process per file, ``workers`` at a time (what the worker's pool does)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: _digest(decode_audio(s, opts)), sources))


def amortised(sources: list[AudioSource], opts: DecodeOptions, workers: int,
              group_size: int) -> list[str]:
    """``group_size`` files per FFmpeg process, ``workers`` processes at a time."""
    groups = [sources[i : i + group_size] for i in range(0, len(sources), group_size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda g: decode_many(g, opts, group_size=group_size), groups)
        return [_digest(w) for results in done for w in results]


def _timed(fn: Callable[[], list[str]], n: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - started), out


def decode_round(sources: list[AudioSource], opts: DecodeOptions, workers: int,
                 group_size: int, libav: bool = True) -> dict[str, object]:
    """Per-file then amortised on the same files, back to back: clips/s and sample equality.

    With ``libav``, then the in-process floors (``codec_floor``, ``inprocess_floor``) and the
    worker's libav decoder processes (``decoder_pool``) on the same files.
    """
    n = len(sources)
    per_rate, want = _timed(lambda: per_file(sources, opts, workers), n)
    am_rate, got = _timed(lambda: amortised(sources, opts, workers, group_size), n)
    out: dict[str, object] = {"per_file": round(per_rate, 2), "amortised": round(am_rate, 2),
                              "bit_exact": got == want}
    if libav:
        paths = [Path(s.target) for s in sources]
        out.update(floors(paths, opts, workers))
        out["decoder_pool"] = decoder_pool_rate(paths, opts, workers)
    return out


def group_sweep(sources: list[AudioSource], opts: DecodeOptions, workers: int,
                sizes: list[int]) -> dict[int, float]:
    """clips/s for each number of files per FFmpeg process (one pass each)."""
    return {g: round(_timed(lambda g=g: amortised(sources, opts, workers, g), len(sources))[0], 2)
            for g in sizes}


def _pinned_amortised(sources: list[AudioSource], opts: DecodeOptions, core: int,
                      group_size: int) -> list[str]:
    """``decode_many`` from a thread pinned to ``core``: its FFmpeg children inherit the pin."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})  # pid 0 = this thread on Linux
    try:
        return [_digest(w) for w in decode_many(sources, opts, group_size=group_size)]
    finally:
        os.sched_setaffinity(0, before)


def decode_scaling(sources: list[AudioSource], opts: DecodeOptions, cores: list[int],
                   group_size: int) -> dict[str, float]:
    """The machine's own two-core scaling for this work: FFmpeg alone, no genretag code.

    One stream of ``decode_many`` pinned to one core, then one such stream on each of two cores
    (each decoding the whole list). Their ratio is the ceiling for the workers' scaling row:
    a VM whose two vCPUs share a physical core, or a host that is busy, shows it here too.
    """
    n = len(sources)
    one, _ = _timed(lambda: _pinned_amortised(sources, opts, cores[0], group_size), n)
    with ThreadPoolExecutor(max_workers=2) as pool:
        both = lambda: list(pool.map(  # noqa: E731
            lambda core: _pinned_amortised(sources, opts, core, group_size), cores[:2]))
        two, _ = _timed(both, 2 * n)
    return {"one_core": round(one, 2), "two_cores": round(two, 2), "ratio": round(two / one, 3)}
