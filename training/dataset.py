"""Decode labelled items into fixed-length waveforms with the worker's own decoder.

Broken clips (undecodable, empty, missing, or shorter than ``min_seconds``) are skipped and
reported, never silently dropped: FMA ships a few of them. With a cache folder the waveforms are
written straight into a raw float32 file (fma_small at 22.05 kHz, 30 s: ~21 GB) and memory-mapped,
so a large subset never has to fit in RAM.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from core.logs import get_logger
from schemas import ReasonCode
from core.audio.windows import make_windows
from core.audio.decode import DecodeOptions, decode_audio
from core.audio.decoders import DEFAULT_DECODER, Decoder, DecoderName, open_decoder
from core.errors import PermanentError
from core.audio.uri import AudioSource

log = get_logger(__name__)
_CACHE_VERSION = 2


class Item(Protocol):
    """What the trainer needs of a labelled item (FMA track, folder file, CSV row)."""

    item_id: str
    path: Path
    labels: list[str]
    split: str


@dataclass
class DecodedSet:
    """Waveforms ``(n, clip_samples)`` of the items that decoded, and why the others did not.

    ``lengths[i]`` is how many samples of row ``i`` are audio (the rest is zero padding).
    """

    waves: np.ndarray
    items: list[Item]
    skipped: list[dict[str, str]] = field(default_factory=list)
    lengths: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.lengths is None:
            self.lengths = np.full(len(self.items), self.waves.shape[1], dtype=np.int64)


def decode_clip(path: Path, sample_rate: int, clip_seconds: float, min_seconds: float,
                timeout_s: float = 60.0, decoder: Decoder | None = None) -> tuple[np.ndarray, int]:
    """One clip → ``(clip_samples,)`` float32 (centre crop / zero pad) and its audio length.

    ``decoder`` as the worker's (:func:`core.audio.decoders.open_decoder`); None: the FFmpeg CLI.
    """
    path = Path(path)
    if not path.is_file():
        raise PermanentError(ReasonCode.MISSING_FILE, f"file not found: {path}")
    if path.stat().st_size == 0:
        raise PermanentError(ReasonCode.EMPTY_FILE, f"empty file: {path}")
    source = AudioSource(target=str(path.resolve()), is_local=True)
    opts = DecodeOptions(sample_rate=sample_rate, max_seconds=clip_seconds * 2, timeout_s=timeout_s)
    wave = decoder.decode_audio(source, opts) if decoder else decode_audio(source, opts)
    if len(wave) < min_seconds * sample_rate:
        raise PermanentError(
            ReasonCode.TOO_SHORT,
            f"{len(wave) / sample_rate:.2f}s of audio, minimum is {min_seconds:g}s",
        )
    clip_samples = int(round(clip_seconds * sample_rate))
    return make_windows(wave, clip_samples, 1)[0], min(len(wave), clip_samples)


def decode_items(
    items: Sequence[Item], sample_rate: int, clip_seconds: float, min_seconds: float = 1.0,
    workers: int = 4, desc: str = "decode", cache_dir: Path | None = None,
    decoder: DecoderName = DEFAULT_DECODER,
) -> DecodedSet:
    """Decode ``items`` in parallel (FFmpeg subprocesses, so threads suffice) with a progress bar.

    With ``cache_dir``, the result is stored as a memory-mapped raw file keyed by the item ids
    and decode parameters, and reused on the next run.
    """
    cache = _cache_paths(cache_dir, items, sample_rate, clip_seconds, min_seconds)
    if cache and cache[0].exists() and cache[1].exists():
        log.info("decode.cache_hit", extra={"path": str(cache[0]), "items": len(items)})
        return _load_cache(cache, items)
    clip_samples = int(round(clip_seconds * sample_rate))
    if cache:
        tmp = cache[0].with_suffix(".tmp")
        out = np.memmap(tmp, dtype=np.float32, mode="w+", shape=(max(1, len(items)), clip_samples))
    else:
        out = np.zeros((len(items), clip_samples), dtype=np.float32)

    def work(item: Item) -> tuple[np.ndarray, int] | str:
        try:
            return decode_clip(item.path, sample_rate, clip_seconds, min_seconds, decoder=dec)
        except PermanentError as exc:
            return f"{getattr(exc.reason, 'value', exc.reason)}: {exc}"

    kept: list[Item] = []
    lengths: list[int] = []
    skipped: list[dict[str, str]] = []
    dec = open_decoder(decoder, max(1, workers))
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for item, result in tqdm(zip(items, pool.map(work, items)), total=len(items),
                                     desc=desc, unit="clip", leave=False):
                if isinstance(result, str):
                    skipped.append({"item_id": item.item_id, "path": str(item.path),
                                    "reason": result})
                    log.warning("decode.skipped", extra=skipped[-1])
                else:
                    out[len(kept)] = result[0]
                    lengths.append(result[1])
                    kept.append(item)
    finally:
        dec.close()
    if cache:
        out.flush()
        del out
        os.truncate(tmp, len(kept) * clip_samples * 4)
        tmp.replace(cache[0])
        meta = {"kept": [i.item_id for i in kept], "skipped": skipped, "lengths": lengths,
                "clip_samples": clip_samples}
        cache[1].write_text(json.dumps(meta))
        return _load_cache(cache, items)
    return DecodedSet(waves=out[: len(kept)], items=kept, skipped=skipped,
                      lengths=np.array(lengths, dtype=np.int64))


def _cache_paths(cache_dir: Path | None, items: Sequence[Item], sample_rate: int,
                 clip_seconds: float, min_seconds: float) -> tuple[Path, Path] | None:
    if cache_dir is None:
        return None
    key = hashlib.sha256(
        repr((_CACHE_VERSION, sample_rate, clip_seconds, min_seconds,
              [(i.item_id, str(i.path)) for i in items])).encode()
    ).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir / f"waves-{key}.f32", cache_dir / f"waves-{key}.json"


def _load_cache(cache: tuple[Path, Path], items: Sequence[Item]) -> DecodedSet:
    meta = json.loads(cache[1].read_text())
    by_id = {i.item_id: i for i in items}
    kept = [by_id[k] for k in meta["kept"]]
    shape = (len(kept), int(meta["clip_samples"]))
    waves = (np.memmap(cache[0], dtype=np.float32, mode="r", shape=shape) if kept
             else np.zeros(shape, np.float32))
    return DecodedSet(waves=waves, items=kept, skipped=meta["skipped"],
                      lengths=np.array(meta["lengths"], dtype=np.int64))
