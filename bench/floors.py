"""In-process decode limits: what libav itself costs, without processes, pipes or a worker.

``codec_floor``: libav decode only (no downmix, no resample, no copy), ``inprocess_floor``:
decode + downmix + resample to the model's rate (:func:`genretag.core.audio.libav.decode.decode_file`), each
run in ``workers`` processes started beforehand, so the rate is the codec's on these cores.
``decoder_pool``: the worker's decoder (:class:`genretag.core.audio.libav.pool.DecoderPool`) called
from ``workers`` threads, i.e. the floor plus the hand-over to the worker's process.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genretag.core.audio.decoders import DecodeOptions
from genretag.core.audio.uri import AudioSource


def _codec_only(path: str) -> int:
    """Samples per channel that libav decodes from ``path`` (no conversion at all)."""
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        return sum(frame.samples for frame in container.decode(stream))


def _inprocess(args: tuple[str, int, int]) -> int:
    """Samples of the worker's decode of ``path`` (mono, model rate, capped), in this process."""
    from genretag.core.audio.libav.decode import Request, decode_file

    path, rate, max_samples = args
    return len(decode_file(Request(path, rate, max_samples))[0])


def _ready(args: tuple[str, int, int]) -> bool:
    """Import and run both decodes once, so no process pays first-use costs on the clock."""
    _codec_only(args[0])
    _inprocess(args)
    return True


def floors(paths: list[Path], opts: DecodeOptions, workers: int) -> dict[str, float]:
    """clips/s of ``codec_floor`` and ``inprocess_floor`` with ``workers`` processes."""
    max_samples = round(opts.max_seconds * opts.sample_rate)
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, float] = {}
    with ctx.Pool(workers) as pool:
        pool.map(_ready, [(str(paths[0]), opts.sample_rate, max_samples)] * (workers * 2),
                 chunksize=1)
        started = time.perf_counter()
        pool.map(_codec_only, [str(p) for p in paths], chunksize=1)
        out["codec_floor"] = round(len(paths) / (time.perf_counter() - started), 2)
        started = time.perf_counter()
        pool.map(_inprocess, [(str(p), opts.sample_rate, max_samples) for p in paths], chunksize=1)
        out["inprocess_floor"] = round(len(paths) / (time.perf_counter() - started), 2)
    return out


def decoder_pool_rate(paths: list[Path], opts: DecodeOptions, workers: int) -> float:
    """clips/s of the worker's libav decoder processes, ``workers`` calls at a time."""
    from genretag.core.audio.libav.pool import DecoderPool

    sources = [AudioSource(str(p), is_local=True) for p in paths]
    with DecoderPool(workers) as pool, ThreadPoolExecutor(workers) as threads:
        list(threads.map(lambda s: pool.decode_audio(s, opts), sources[:workers]))  # started
        started = time.perf_counter()
        list(threads.map(lambda s: pool.decode_audio(s, opts), sources))
        return round(len(sources) / (time.perf_counter() - started), 2)
