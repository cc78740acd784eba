"""Keep the vector index in step with the tag store, which stays the source of truth.

Every embedding write gets a sequence number in ``P emb-log`` (atomically with the vector); the
index remembers the highest number it holds (its mark). :meth:`IndexSync.sync` upserts the
tracks written after the mark, in batches, moving the mark after each batch (a crash re-upserts
at most one batch: upserts are idempotent); :meth:`IndexSync.rebuild` drops the index and
syncs from zero (``genretag index rebuild``). A store whose sequence is behind the mark (it was
emptied) is rebuilt. Each track's genres come from its tags (labels of kind genre over their
thresholds, and its primary genre), read in the same round.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

from genretag.core.logs import get_logger
from genretag.core.similarity.engine import IndexedTrack, VectorIndex
from genretag.core.store import EmbeddingReader, TagReader

log = get_logger(__name__)


@dataclass
class SyncReport:
    """What one sync did."""

    upserted: int = 0
    moved: int = 0
    rebuilt: bool = False
    mark: int = 0
    seconds: float = 0.0
    spaces: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        spaces = ", ".join(f"{s} {n}" for s, n in sorted(self.spaces.items())) or "none"
        return (f"{'rebuilt' if self.rebuilt else 'synced'}: {self.upserted} vector(s) upserted"
                f" ({spaces}), {self.moved} moved between spaces, mark {self.mark}, "
                f"{self.seconds:.2f} s")


def track_genres(fields: dict[str, str | None] | None) -> tuple[str, ...]:
    """Genre labels of a stored track: its labels that are not another kind, then its primary
    genre; () for a track without tags or with unreadable fields."""
    if not fields:
        return ()
    try:
        labels = json.loads(fields.get("labels") or "[]")
        kinds = json.loads(fields.get("kinds") or "{}")
    except ValueError:
        return ()
    genres = [str(g) for g in labels if g not in kinds]
    primary = fields.get("primary_genre")
    if primary and primary not in genres:
        genres.append(primary)
    return tuple(genres)


class IndexSync:
    """Upserts the store's changed vectors into the index (``batch`` per round)."""

    def __init__(self, index: VectorIndex, vectors: EmbeddingReader, tags: TagReader,
                 batch: int = 1000, store: str = "") -> None:
        """``store`` names the tag store (Redis URL and key prefix): an index that mirrors
        another store is rebuilt rather than mixed with this one."""
        self.index = index
        self.vectors = vectors
        self.tags = tags
        self.batch = batch
        self.store = store

    def rebuild(self) -> SyncReport:
        """Drop the index and fill it again from every stored vector."""
        self.index.drop_all()
        report = self.sync()
        report.rebuilt = True
        return report

    def sync(self) -> SyncReport:
        """Upsert every vector written since the index's mark; returns what was done."""
        started = time.perf_counter()
        mark = self.index.mark()
        report = SyncReport(mark=mark)
        owner = self.index.owner()
        if owner and owner != self.store:  # it mirrors another store: never mix the two
            log.warning("index.other_store", extra={"index_store": owner, "store": self.store})
            self.index.drop_all()
            mark, report.rebuilt = 0, True
        if self.vectors.last_seq() < mark:  # the store was emptied or replaced: start over
            log.warning("index.store_behind", extra={"mark": mark,
                                                     "store_seq": self.vectors.last_seq()})
            self.index.drop_all()
            mark, report.rebuilt = 0, True
        if self.index.owner() != self.store:
            self.index.set_owner(self.store)
        while rows := self.vectors.changed_since(mark, self.batch):
            self._apply([tid for tid, _ in rows], report)
            mark = rows[-1][1]
            self.index.set_mark(mark)
            report.mark = mark
        self.index.flush()
        report.seconds = time.perf_counter() - started
        log.info("index.synced", extra={"upserted": report.upserted, "mark": report.mark,
                                        "seconds": round(report.seconds, 3)})
        return report

    def _apply(self, track_ids: list[str], report: SyncReport) -> None:
        stored = self.vectors.get_many(track_ids)
        fields = self.tags.track_fields(track_ids, ["labels", "kinds", "primary_genre"])
        by_space: dict[str, list[IndexedTrack]] = defaultdict(list)
        for tid, emb in stored.items():
            if emb is not None:
                by_space[emb.space].append(IndexedTrack(tid, emb.vector,
                                                        track_genres(fields.get(tid)),
                                                        emb.model_version))
        existing = self.index.spaces()
        for space, rows in by_space.items():
            self.index.upsert(space, rows)
            report.upserted += len(rows)
            report.spaces[space] = report.spaces.get(space, 0) + len(rows)
            ids = [r.track_id for r in rows]
            for other in existing:  # a track re-embedded in a new space leaves the old one
                if other != self.index.collection(space):
                    report.moved += self.index.delete(other, ids)
