"""Decode labelled items into fixed-length waveforms with the worker's own decoder.

Broken clips (undecodable, empty, or shorter than ``min_seconds``) are skipped and reported,
never silently dropped: FMA ships a few of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from worker.batch import make_windows
from worker.decode import DecodeOptions, decode_audio
from worker.errors import PermanentError
from worker.uri import AudioSource


class Item(Protocol):
    """What the trainer needs of a labelled item (FMA track, folder file, CSV row)."""

    item_id: str
    path: Path
    labels: list[str]
    split: str


@dataclass
class DecodedSet:
    """Waveforms ``(n, clip_samples)`` of the items that decoded, and why the others did not."""

    waves: np.ndarray
    items: list[Item]
    skipped: list[dict[str, str]] = field(default_factory=list)


def decode_one(path: Path, sample_rate: int, clip_seconds: float, min_seconds: float,
               timeout_s: float = 60.0) -> np.ndarray:
    """One clip → ``(clip_samples,)`` float32 (centre crop / zero pad), as the worker does."""
    source = AudioSource(target=str(Path(path).resolve()), is_local=True)
    opts = DecodeOptions(sample_rate=sample_rate, max_seconds=clip_seconds * 2, timeout_s=timeout_s)
    wave = decode_audio(source, opts)
    if len(wave) < min_seconds * sample_rate:
        raise PermanentError(
            "too_short",  # type: ignore[arg-type]
            f"{len(wave) / sample_rate:.2f}s of audio, minimum is {min_seconds:g}s",
        )
    return make_windows(wave, int(round(clip_seconds * sample_rate)), 1)[0]


def decode_items(
    items: Sequence[Item], sample_rate: int, clip_seconds: float, min_seconds: float = 1.0,
    workers: int = 4, desc: str = "decode", cache_dir: Path | None = None,
) -> DecodedSet:
    """Decode ``items`` in parallel (FFmpeg subprocesses, so threads suffice) with a progress bar.

    With ``cache_dir``, the result is stored as a memory-mapped ``.npy`` keyed by the item ids
    and decode parameters, and reused on the next run.
    """
    cache = _cache_paths(cache_dir, items, sample_rate, clip_seconds, min_seconds)
    if cache and cache[0].exists() and cache[1].exists():
        return _load_cache(cache, items)

    def work(item: Item) -> np.ndarray | str:
        try:
            return decode_one(item.path, sample_rate, clip_seconds, min_seconds)
        except PermanentError as exc:
            return f"{getattr(exc.reason, 'value', exc.reason)}: {exc}"

    kept: list[Item] = []
    waves: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for item, result in tqdm(zip(items, pool.map(work, items)), total=len(items), desc=desc,
                                 unit="clip", leave=False):
            if isinstance(result, str):
                skipped.append({"item_id": item.item_id, "path": str(item.path), "reason": result})
            else:
                kept.append(item)
                waves.append(result)
    clip_samples = int(round(clip_seconds * sample_rate))
    array = np.stack(waves) if waves else np.zeros((0, clip_samples), np.float32)
    decoded = DecodedSet(waves=array, items=kept, skipped=skipped)
    if cache:
        _save_cache(cache, decoded)
    return decoded


def _cache_paths(cache_dir, items, sample_rate, clip_seconds, min_seconds):
    if cache_dir is None:
        return None
    import hashlib

    key = hashlib.sha256(
        repr((sample_rate, clip_seconds, min_seconds, [(i.item_id, str(i.path)) for i in items]))
        .encode()
    ).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir / f"waves-{key}.npy", cache_dir / f"waves-{key}.json"


def _save_cache(cache, decoded: DecodedSet) -> None:
    import json

    np.save(cache[0], decoded.waves)
    meta = {"kept": [i.item_id for i in decoded.items], "skipped": decoded.skipped}
    cache[1].write_text(json.dumps(meta))


def _load_cache(cache, items: Sequence[Item]) -> DecodedSet:
    import json

    meta = json.loads(cache[1].read_text())
    by_id = {i.item_id: i for i in items}
    return DecodedSet(
        waves=np.load(cache[0], mmap_mode="r"),
        items=[by_id[k] for k in meta["kept"]],
        skipped=meta["skipped"],
    )
