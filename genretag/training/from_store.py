"""``train --labels CSV --from-store --backbone ARTIFACT``: a head fit on the embeddings the
fleet already stored for the labelled tracks, without decoding a file.

A row's track is its ``id`` (the catalog's id), else the id its path was enqueued under
(:func:`genretag.core.trackids.path_track_id`). Only vectors in the backbone's space count (stored
by the backbone itself or by a frozen head on it); the rows without one are reported as
skipped (``no stored embedding`` / ``stored in another space``) and left out. The stored
vector is the track's (its windows' mean), so each track is one row; the head, its report and
its artifact are those of ``--backbone`` (frozen back end only: the stored vectors are already
past it). On a large catalog ``C`` is chosen on a sample (``CHOOSE_C_ON`` tracks) and the
chosen head refit on all of them from there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genretag.core.trackids import path_track_id
from genretag.core.logs import get_logger
from genretag.core.settings import RedisSection
from genretag.core.store import EmbeddingReader, KeyLayout, connect
from genretag.training.config import TrainConfig
from genretag.training.features import FeatureSet
from genretag.training.fit import track_probs
from genretag.training.head_export import HeadRun, embedding_spec, finish_head
from genretag.training.items import Item
from genretag.training.registry import get_spec
from genretag.training.run_report import RunReport
from genretag.training.run_steps import decoded_splits, fit_targets, seed_everything
from genretag.training.splits import by_split
from genretag.training.transfer import (
    BackboneError, TransferModel, backbone_windows, fit_head_on_embeddings, load_backbone,
)

log = get_logger(__name__)
#: Tracks looked up per Redis round trip.
LOOKUP_BATCH = 5000
#: Training tracks the head's C is chosen on (then refit on all, warm): bounds the grid's cost.
CHOOSE_C_ON = 10_000


def stored_vectors(items: Sequence[Item], reader: EmbeddingReader, space: str
                   ) -> tuple[dict[str, np.ndarray], list[dict[str, str]]]:
    """item id → its stored vector (in ``space``), and the items without one, with why."""
    found: dict[str, np.ndarray] = {}
    elsewhere: dict[str, str] = {}
    for by_path in (False, True):  # the row's id first; the id of its path for the rest
        todo = [i for i in items if i.item_id not in found]
        for start in range(0, len(todo), LOOKUP_BATCH):
            chunk = todo[start:start + LOOKUP_BATCH]
            ids = [path_track_id(i.path) if by_path else i.item_id for i in chunk]
            for item, hit in zip(chunk, reader.get_many(ids).values(), strict=True):
                if hit is not None and hit.space == space:
                    found[item.item_id] = hit.vector
                elif hit is not None:
                    elsewhere.setdefault(item.item_id, hit.space)
    skipped = [{"item_id": i.item_id, "path": str(i.path), "split": i.split,
                "reason": (f"stored in another space ({elsewhere[i.item_id]})"
                           if i.item_id in elsewhere else "no stored embedding")}
               for i in items if i.item_id not in found]
    return found, skipped


def _split_set(items: list[Item], vectors: dict[str, np.ndarray], dim: int) -> FeatureSet:
    feats = (np.stack([vectors[i.item_id] for i in items]).astype(np.float32) if items
             else np.zeros((0, dim), np.float32))
    return FeatureSet(feats, np.arange(len(items), dtype=np.int64), list(items))


def train_from_store(items: Sequence[Item], cfg: TrainConfig, out_path: Path,
                     redis: RedisSection, report_dir: Path | None = None,
                     allow_empty_split: bool = False) -> RunReport:
    """Fit ``cfg.model``'s head (a frozen ``transfer`` kind) on stored vectors; export and
    report like :func:`genretag.training.transfer.train_transfer`."""
    seed_everything(cfg.seed)
    started = time.monotonic()
    spec = get_spec(cfg.model)
    if cfg.backbone is None or not spec.needs_backbone:
        raise ValueError(f"--from-store trains a head on a backbone; {cfg.model} is not one")
    if spec.recipe != "backbone-head":
        raise BackboneError("--from-store fits a frozen head only: the stored embeddings are "
                            "past the back end --fine-tune would train")
    net, bb_manifest = load_backbone(cfg.backbone)
    cfg = backbone_windows(cfg, bb_manifest)
    space = embedding_spec(net, bb_manifest, None).space
    reader = EmbeddingReader(connect(redis, binary=True), KeyLayout(redis.key_prefix))
    try:
        vectors, missing = stored_vectors(list(items), reader, space)
    finally:
        reader.client.close()
    log.info("train.from_store", extra={"found": len(vectors), "missing": len(missing),
                                         "space": space})
    kept = [i for i in items if i.item_id in vectors]
    if not kept:
        raise BackboneError(f"none of the {len(items)} labelled tracks has an embedding stored "
                            f"in {space} (the backbone's space): tag them first with a worker "
                            "using this backbone and GENRETAG_SINKS=tags,embeddings")
    encoder = fit_targets(kept, cfg, allow_empty_split)
    model = TransferModel(net, len(encoder.labels))
    dim = int(model.mean.shape[0])
    splits = {name: _split_set(chosen, vectors, dim) for name, chosen in by_split(kept).items()}
    for name in ("training", "validation", "test"):
        splits.setdefault(name, _split_set([], vectors, dim))
    read_at = time.monotonic()
    counts, _ = decoded_splits(splits, allow_empty_split)
    train, val = splits["training"], splits["validation"]
    y_train, y_val = encoder.encode(train.items), encoder.encode(val.items)
    for p in model.net.parameters():
        p.requires_grad_(False)
    history = fit_head_on_embeddings(
        model, torch.from_numpy(train.feats), train, y_train, torch.from_numpy(val.feats), val,
        y_val, cfg.objective, cfg.c, cfg.seed, choose_on=CHOOSE_C_ON)
    fitted_at = time.monotonic()

    def predict(fs: FeatureSet) -> np.ndarray:
        with torch.inference_mode():
            logits = model.decide(torch.from_numpy(fs.feats))
        return track_probs(logits, fs.owner, len(fs.items), cfg.objective)

    return finish_head(HeadRun(
        model=model, bb_manifest=bb_manifest, cfg=cfg, encoder=encoder, splits=splits,
        counts=counts, skipped=missing, history=history, tune_history=[], fine_tuned=False,
        seconds=(started, read_at, fitted_at), predict=predict,
        extra={"from_store": {"space": space, "found": len(vectors), "missing": len(missing),
                              "redis_key_prefix": redis.key_prefix}}), out_path, report_dir)
