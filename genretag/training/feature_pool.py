"""Several window plans of one frontend from one decode: each clip is decoded once and every
distinct window goes through the frontend once, whichever plans ask for it.

A model's training plan (windows every ``train_hop``) and evaluation plan (the worker's windows)
usually overlap: for musicnn's 3 s clips over 30 s the worker's 10 windows are 10 of the 19
training windows every 1.5 s (a head's default training plan is the worker's own), for a 30 s
MFCC window over a 30 s clip both plans are the same one window. Computing
them separately decodes every clip twice and runs the shared windows twice; cross-validation,
which needs both plans over the same tracks, pays that for every candidate. Here the plans
share the decode and the frontend, and each plan's features are cached under the key
``features.compute_features`` gives them, so either path reuses the other's cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from genretag.core.audio.decoders import DEFAULT_DECODER, DecoderName, open_decoder
from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.training.features import (
    FeatureSet,
    FeatureWriter,
    WindowPlan,
    cache_paths,
    compute_features,
    decode_track,
    load_cached,
    window_features,
)
from genretag.training.items import Item

log = get_logger(__name__)
#: The (features, index) files of one cached feature set.
CachePaths = tuple[Path, Path]
#: Samples per frontend call: windows of several clips are batched up to this (32 of
#: musicnn's 3 s windows at 16 kHz, 2 of a 30 s MFCC window at 22.05 kHz). One clip's 7
#: training windows per call cost musicnn 2.3x more per window than 32 (0.150 vs 0.064 s at
#: load ~10, docs/reports/training.md): a batch of a few windows cannot fill the cores.
BATCH_SAMPLES = 32 * 48_000


@dataclass(frozen=True)
class PlanRequest:
    """The features wanted: these items, cut by this plan."""

    items: Sequence[Item]
    plan: WindowPlan


def cut(wave: np.ndarray, starts: np.ndarray, clip: int) -> np.ndarray:
    """``(len(starts), clip)`` float32 windows of ``wave`` (zero-padded past its end)."""
    out = np.zeros((len(starts), clip), np.float32)
    for row, start in enumerate(starts):
        piece = wave[start:start + clip]
        out[row, :len(piece)] = piece
    return out


def compute_feature_pool(
    requests: Mapping[str, PlanRequest], frontend: torch.nn.Module, sample_rate: int,
    min_seconds: float = 1.0, workers: int = 4, cache_dir: Path | None = None, cache_key: str = "",
    desc: str = "features", progress: bool = False, decoder: DecoderName = DEFAULT_DECODER,
) -> dict[str, FeatureSet]:
    """The features of every request, as ``compute_features`` would give each one (same
    windows, same values, same cache files), decoding each clip once and running each distinct
    window once. Requests whose plans decode different lengths are computed one by one."""
    paths = {name: cache_paths(cache_dir, r.items, r.plan, sample_rate, min_seconds, cache_key)
             for name, r in requests.items()}
    out = {name: load_cached(p, requests[name].items) for name, p in paths.items()
           if p and p[0].exists() and p[1].exists()}
    missing = {name: r for name, r in requests.items() if name not in out}
    clips = {r.plan.clip_samples for r in missing.values()}
    lengths = {r.plan.decode_seconds for r in missing.values()}
    if len(missing) <= 1 or len(clips) > 1 or len(lengths) > 1:
        for name, r in missing.items():
            out[name] = compute_features(r.items, frontend, r.plan, sample_rate, min_seconds,
                                         workers, cache_dir, cache_key, desc=f"{desc} {name}",
                                         progress=progress, decoder=decoder)
        return {name: out[name] for name in requests}
    out.update(_shared(missing, {n: paths[n] for n in missing}, frontend, sample_rate,
                       min_seconds, workers, lengths.pop(), clips.pop(), desc, progress, decoder))
    return {name: out[name] for name in requests}


def _shared(requests: Mapping[str, PlanRequest], paths: Mapping[str, CachePaths | None],
            frontend: torch.nn.Module, sample_rate: int, min_seconds: float, workers: int,
            seconds: float, clip: int, desc: str, progress: bool, decoder: DecoderName
            ) -> dict[str, FeatureSet]:
    """One decode per clip, each distinct window through the frontend once (windows of
    consecutive clips batched, ``BATCH_SAMPLES``), one writer per request (items in the order
    of the largest request; a smaller one keeps its order when it is a subsequence of it, as a
    split's items are of the whole set's)."""
    wanted: dict[str, list[str]] = {}  # item id -> the requests that want it
    items: dict[str, Item] = {}
    # the largest request's order first, so its features are stored in its own item order
    for name, r in sorted(requests.items(), key=lambda kv: -len(kv[1].items)):
        for item in r.items:
            items.setdefault(item.item_id, item)
            wanted.setdefault(item.item_id, []).append(name)
    writers = {name: FeatureWriter(p[0].with_suffix(f".tmp{os.getpid()}") if p else None)
               for name, p in paths.items()}
    kept: dict[str, list[Item]] = {name: [] for name in requests}
    owners: dict[str, list[int]] = {name: [] for name in requests}
    skipped: dict[str, list[dict[str, str]]] = {name: [] for name in requests}
    dec = open_decoder(decoder, max(1, workers))
    batch = max(1, BATCH_SAMPLES // clip)
    pending: list[tuple[Item, dict[str, np.ndarray], np.ndarray]] = []  # (item, starts, union)
    buffered: list[np.ndarray] = []

    def work(item: Item) -> np.ndarray | str:
        try:
            return decode_track(item.path, sample_rate, seconds, min_seconds, decoder=dec)
        except PermanentError as exc:
            return f"{getattr(exc.reason, 'value', exc.reason)}: {exc}"

    def flush() -> None:
        """Run the buffered clips' windows in full batches, hand each clip its rows."""
        if not pending:
            return
        feats = window_features(frontend, np.concatenate(buffered), batch)
        at = 0
        for item, starts, union in pending:
            own, at = feats[at:at + len(union)], at + len(union)
            for name, chosen in starts.items():
                writers[name].add(own[np.searchsorted(union, chosen)])
                owners[name] += [len(kept[name])] * len(chosen)
                kept[name].append(item)
        pending.clear()
        buffered.clear()

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for item, wave in tqdm(zip(items.values(), pool.map(work, items.values())),
                                   total=len(items), desc=desc, unit="clip", leave=False,
                                   disable=not progress):
                names = wanted[item.item_id]
                if isinstance(wave, str):
                    row = {"item_id": item.item_id, "path": str(item.path), "reason": wave}
                    log.warning("decode.skipped", extra=row)
                    for name in names:
                        skipped[name].append(row)
                    continue
                starts = {name: requests[name].plan.starts(len(wave)) for name in names}
                union = np.unique(np.concatenate(list(starts.values())))
                pending.append((item, starts, union))
                buffered.append(cut(wave, union, clip))
                if sum(len(w) for w in buffered) >= batch:
                    flush()
            flush()
    finally:
        dec.close()
    return {name: writers[name].store(paths[name], r.items, kept[name], owners[name],
                                      skipped[name])
            for name, r in requests.items()}
