"""The front end computed once: decode each clip, cut the windows the model sees, cache features.

Evaluation windows are exactly the worker's (``make_windows`` with the serving window count), so
track-level evaluation averages what serving averages. Training clips give more windows, evenly
spaced ``train_hop`` apart over the decoded audio: each is a real window of audio run through
the model's own frontend, so choosing among them is an exact crop augmentation. Features are
stored per window (``(n_windows, channels, n_mfcc, frames)`` float32) and, with a cache folder,
memory-mapped and reused by the next run with the same items, decode and frontend parameters.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from genretag.core.audio.decoders import (DEFAULT_DECODER, DEFAULT_TIMEOUT_S, DecodeOptions,
                                           Decoder, DecoderName, open_decoder)
from genretag.core.audio.placement import windows_for
from genretag.core.audio.uri import AudioSource
from genretag.core.audio.windows import make_windows
from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import ReasonCode
from genretag.training.items import Item

log = get_logger(__name__)
_CACHE_VERSION = 1
#: Frontend batch (windows per call) while caching: bounds the memory of one call.
_FRONTEND_BATCH = 16


@dataclass(frozen=True)
class WindowPlan:
    """Which windows of a decoded clip get features: the serving ones or denser training ones.

    ``hop_samples == 0``: ``make_windows(wave, clip_samples, max_windows)``, the worker's
    windows. Otherwise windows every ``hop_samples`` (evenly spread) over the decoded audio.
    """

    clip_samples: int
    max_windows: int
    decode_seconds: float
    hop_samples: int = 0

    def starts(self, n: int) -> np.ndarray:
        """Start sample of each window :meth:`windows` cuts from ``n`` samples (a clip no
        longer than a window is one zero-padded window at 0): lets several plans over one
        decoded clip share the windows they have in common (``feature_pool``)."""
        clip = self.clip_samples
        if n <= clip:
            return np.zeros(1, np.int64)
        if self.hop_samples <= 0:
            count = min(self.max_windows, windows_for(n, clip))  # make_windows' count
        else:
            count = 1 + int(round((n - clip) / self.hop_samples))
        if count == 1:
            return np.array([(n - clip) // 2], np.int64)
        return np.linspace(0, n - clip, count).round().astype(np.int64)

    def windows(self, wave: np.ndarray) -> np.ndarray:
        """``(n, clip_samples)`` windows of ``wave``."""
        n, clip = len(wave), self.clip_samples
        if self.hop_samples <= 0 or n <= clip:
            return make_windows(wave, clip, self.max_windows)
        count = 1 + int(round((n - clip) / self.hop_samples))
        if count == 1:
            return make_windows(wave, clip, 1)
        starts = np.linspace(0, n - clip, count).round().astype(np.int64)
        return np.stack([wave[s : s + clip] for s in starts]).astype(np.float32, copy=False)


@dataclass
class FeatureSet:
    """Cached features of every window, which item each window belongs to, and skipped clips."""

    feats: np.ndarray  # (n_windows, channels, n_mfcc, frames) float32
    owner: np.ndarray  # (n_windows,) int64 index into items
    items: list[Item]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def n_windows(self) -> int:
        """Number of windows (rows of ``feats``)."""
        return int(self.feats.shape[0])

    def select(self, keep: Sequence[int]) -> FeatureSet:
        """The items at positions ``keep`` (in that order) with their windows, owners renumbered;
        so one cache of a whole set serves every fold of a cross-validation."""
        position = np.full(len(self.items), -1, dtype=np.int64)
        position[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep))
        rows = np.flatnonzero(position[self.owner] >= 0)
        order = rows[np.argsort(position[self.owner[rows]], kind="stable")]
        feats = np.asarray(self.feats[order]) if len(order) else self.feats[:0]
        return FeatureSet(feats, position[self.owner[order]], [self.items[k] for k in keep])


def decode_track(path: Path, sample_rate: int, max_seconds: float, min_seconds: float,
                 timeout_s: float = DEFAULT_TIMEOUT_S, decoder: Decoder | None = None) -> np.ndarray:
    """The first ``max_seconds`` of a file, mono at ``sample_rate``, like the worker decodes it
    (``decoder`` from :func:`genretag.core.audio.decoders.open_decoder`; None: the FFmpeg
    command line, which holds no process).

    Raises ``PermanentError`` for a missing, empty, undecodable or too short file.
    """
    path = Path(path)
    if not path.is_file():
        raise PermanentError(ReasonCode.MISSING_FILE, f"file not found: {path}")
    if path.stat().st_size == 0:
        raise PermanentError(ReasonCode.EMPTY_FILE, f"empty file: {path}")
    source = AudioSource(target=str(path.resolve()), is_local=True)
    opts = DecodeOptions(sample_rate=sample_rate, max_seconds=max_seconds, timeout_s=timeout_s)
    wave = (decoder or open_decoder("ffmpeg")).decode_audio(source, opts)
    if len(wave) < min_seconds * sample_rate:
        raise PermanentError(ReasonCode.TOO_SHORT, f"{len(wave) / sample_rate:.2f}s of audio, "
                             f"minimum is {min_seconds:g}s")
    return wave


def window_features(frontend: torch.nn.Module, windows: np.ndarray,
                    batch_windows: int = _FRONTEND_BATCH) -> np.ndarray:
    """The frontend's features of ``(n, clip_samples)`` windows, ``batch_windows`` per call,
    float32."""
    frontend.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), batch_windows):
            batch = torch.from_numpy(np.array(windows[start:start + batch_windows], np.float32))
            out.append(frontend(batch).numpy())
    return np.concatenate(out).astype(np.float32, copy=False)


def compute_features(
    items: Sequence[Item], frontend: torch.nn.Module, plan: WindowPlan, sample_rate: int,
    min_seconds: float = 1.0, workers: int = 4, cache_dir: Path | None = None,
    cache_key: str = "", desc: str = "features", progress: bool = False,
    decoder: DecoderName = DEFAULT_DECODER,
) -> FeatureSet:
    """Decode ``items`` (the worker's ``decoder``, in threads), cut windows by ``plan``, run
    ``frontend`` once.

    Broken clips are skipped with their reason. With ``cache_dir`` the features are written to
    a raw float32 file keyed by the items, ``plan``, ``sample_rate`` and ``cache_key`` (the
    frontend's parameters) and memory-mapped on the next call.
    """
    paths = cache_paths(cache_dir, items, plan, sample_rate, min_seconds, cache_key)
    if paths and paths[0].exists() and paths[1].exists():
        log.info("features.cache_hit", extra={"path": str(paths[0]), "items": len(items)})
        return load_cached(paths, items)

    def work(item: Item) -> np.ndarray | str:
        try:
            return plan.windows(decode_track(item.path, sample_rate, plan.decode_seconds,
                                             min_seconds, decoder=dec))
        except PermanentError as exc:
            return f"{getattr(exc.reason, 'value', exc.reason)}: {exc}"

    kept: list[Item] = []
    owners: list[int] = []
    skipped: list[dict[str, str]] = []
    writer = FeatureWriter(paths[0].with_suffix(f".tmp{os.getpid()}") if paths else None)
    dec = open_decoder(decoder, max(1, workers))
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for item, result in tqdm(zip(items, pool.map(work, items)), total=len(items),
                                     desc=desc, unit="clip", leave=False, disable=not progress):
                if isinstance(result, str):
                    skipped.append({"item_id": item.item_id, "path": str(item.path),
                                    "reason": result})
                    log.warning("decode.skipped", extra=skipped[-1])
                    continue
                writer.add(window_features(frontend, result))
                owners += [len(kept)] * len(result)
                kept.append(item)
    finally:
        dec.close()
    return writer.store(paths, items, kept, owners, skipped)


class FeatureWriter:
    """Collects window features in memory, or appends them to a raw file (the cache)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.parts: list[np.ndarray] = []
        self.shape: tuple[int, ...] | None = None
        self.rows = 0
        self._file = open(path, "wb") if path else None  # noqa: SIM115 - closed in finish

    def add(self, feats: np.ndarray) -> None:
        if self.shape is not None and feats.shape[1:] != self.shape:
            raise ValueError(f"window features {feats.shape[1:]} differ from {self.shape}")
        self.shape = feats.shape[1:]
        self.rows += len(feats)
        if self._file is not None:
            self._file.write(np.ascontiguousarray(feats, np.float32).tobytes())
        else:
            self.parts.append(feats)

    def store(self, paths: tuple[Path, Path] | None, items: Sequence[Item], kept: list[Item],
              owners: list[int], skipped: list[dict[str, str]]) -> FeatureSet:
        """Finish; with ``paths`` move the file into the cache beside its index and map it."""
        feats = self.finish()
        if paths:
            meta = {"kept": [i.item_id for i in kept], "skipped": skipped, "owner": owners,
                    "shape": list(feats.shape[1:]) if feats.ndim == 4 else []}
            self.path.replace(paths[0])  # type: ignore[union-attr]
            paths[1].write_text(json.dumps(meta))
            return load_cached(paths, items)
        return FeatureSet(feats, np.array(owners, dtype=np.int64), kept, skipped)

    def finish(self) -> np.ndarray:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            return np.zeros((self.rows, *(self.shape or ())), np.float32)[:0]
        if not self.parts:
            return np.zeros((0, 0, 0, 0), np.float32)
        return np.concatenate(self.parts)


def cache_paths(cache_dir: Path | None, items: Sequence[Item], plan: WindowPlan,
                sample_rate: int, min_seconds: float, cache_key: str) -> tuple[Path, Path] | None:
    """The (features, index) files of these items, plan and frontend under ``cache_dir``."""
    if cache_dir is None:
        return None
    key = hashlib.sha256(repr((
        _CACHE_VERSION, sample_rate, plan, min_seconds, cache_key,
        [(i.item_id, str(i.path)) for i in items],
    )).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir / f"feats-{key}.f32", cache_dir / f"feats-{key}.json"


def load_cached(paths: tuple[Path, Path], items: Sequence[Item]) -> FeatureSet:
    """The cached features at ``paths`` (memory-mapped), their items looked up in ``items``."""
    meta = json.loads(paths[1].read_text())
    by_id = {i.item_id: i for i in items}
    kept = [by_id[k] for k in meta["kept"]]
    owner = np.array(meta["owner"], dtype=np.int64)
    shape = (len(owner), *meta["shape"]) if meta["shape"] else (0, 0, 0, 0)
    feats = (np.memmap(paths[0], dtype=np.float32, mode="r", shape=shape) if len(owner)
             else np.zeros(shape, np.float32))
    return FeatureSet(feats, owner, kept, meta["skipped"])


def frontend_key(sample_rate: int, params_json: str) -> str:
    """The part of the cache key that names the frontend (its parameters as JSON)."""
    return f"{sample_rate}:{params_json}"


def plans(clip_seconds: float, sample_rate: int, eval_windows: int, train_seconds: float,
          train_hop_seconds: float) -> tuple[WindowPlan, WindowPlan]:
    """(training plan, evaluation plan): evaluation decodes and cuts like the worker."""
    clip = int(round(clip_seconds * sample_rate))
    evaluation = WindowPlan(clip, eval_windows, clip_seconds * eval_windows)
    hop = max(1, int(round(train_hop_seconds * sample_rate)))
    cap = max(1, math.ceil(train_seconds / max(train_hop_seconds, 1e-9)) + 1)
    training = WindowPlan(clip, cap, train_seconds, hop)
    return training, evaluation

