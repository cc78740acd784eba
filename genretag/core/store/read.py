"""Reading tags: one track, many tracks, a label's best tracks, labels by kind, counts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import redis

from genretag.core.store.keys import KeyLayout
from genretag.core.timeline import decode_timeline
from genretag.schemas import TagRecord


@dataclass(frozen=True)
class StoreStats:
    """Counts for `genretag stats`: tracks per genre and per model version (labels and versions
    no track has any more are left out), dead letters by reason; each count largest first."""

    tracks: int = 0
    genres: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of `genretag stats --json`."""
        return {
            "tracks": self.tracks, "genres": self.genres, "models": self.models,
            "dead_letters": {"total": self.dead_letters, "by_reason": self.dead_letters_by_reason},
        }


def record_from_hash(data: dict[str, str]) -> TagRecord:
    """A stored track hash → its :class:`TagRecord`."""
    return TagRecord(
        track_id=data["track_id"],
        model_version=data["model_version"],
        probabilities=json.loads(data["probabilities"]),
        labels=json.loads(data["labels"]),
        primary_genre=data.get("primary_genre") or None,
        processed_at=data["processed_at"],
        duration_s=float(data["duration_s"]) if data.get("duration_s") else None,
        uri=data.get("uri") or None,
        timeline=decode_timeline(data["timeline"]) if data.get("timeline") else None,
    )


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class TagReader:
    """Typed reads of the tag store (what the CLI's read commands and the producer ask)."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys

    def get(self, track_id: str) -> TagRecord | None:
        data = self.client.hgetall(self.keys.track(track_id))
        return record_from_hash(data) if data else None

    def get_many(self, track_ids: Sequence[str]) -> dict[str, TagRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            pipe.hgetall(self.keys.track(tid))
        return {tid: (record_from_hash(data) if data else None)
                for tid, data in zip(track_ids, pipe.execute(), strict=True)}

    def namespaces(self) -> list[str]:
        """The further models of model sets that wrote tags here (sorted)."""
        return sorted(self.client.smembers(self.keys.namespaces))

    def get_every_model(self, track_ids: Sequence[str]
                        ) -> dict[str, dict[str, TagRecord | None]]:
        """Each track's records by model namespace: ``""`` (the first model's, the root keys)
        and every further model's, in one round trip."""
        spaces = [""] + self.namespaces()
        layouts = [self.keys if not ns else self.keys.for_model(ns) for ns in spaces]
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            for keys in layouts:
                pipe.hgetall(keys.track(tid))
        replies = iter(pipe.execute())
        return {tid: {ns: (record_from_hash(data) if (data := next(replies)) else None)
                      for ns in spaces} for tid in track_ids}

    def top(self, label: str, min_score: float = 0.0, limit: int = 20,
            genre: bool = True, offset: int = 0) -> list[tuple[str, float]]:
        """Tracks tagged ``label`` (a genre, or with ``genre=False`` another kind), best first,
        ``limit`` of them after skipping ``offset``."""
        key = self.keys.genre(label) if genre else self.keys.tag(label)
        rows = self.client.zrevrangebyscore(key, "+inf", min_score, start=offset, num=limit,
                                            withscores=True)
        return [(member, float(score)) for member, score in rows]

    def genres(self) -> list[str]:
        return sorted(self.client.smembers(self.keys.genres))

    def labels_of_kind(self, kind: str) -> dict[str, int]:
        """Labels of ``kind`` that tag at least one track stored so far, with their track counts."""
        labels = self.genres() if kind == "genre" else sorted(self.client.smembers(
            self.keys.kind(kind)))
        pipe = self.client.pipeline(transaction=False)
        for label in labels:
            pipe.zcard(self.keys.label(label, kind))
        return {label: int(n) for label, n in zip(labels, pipe.execute(), strict=True) if n}

    def models(self) -> list[str]:
        return sorted(self.client.smembers(self.keys.models))

    def scan_track_ids(self, count: int = 500) -> Iterator[str]:
        """Every tagged track id, by SCAN (never KEYS)."""
        start = len(self.keys.track(""))
        for key in self.client.scan_iter(match=self.keys.track("*"), count=count):
            yield key[start:]

    def scan_model_track_ids(self, version: str, count: int = 500) -> Iterator[str]:
        """Track ids whose current tags come from ``version``, by SSCAN (a set of any size)."""
        yield from self.client.sscan_iter(self.keys.model(version), count=count)

    def track_fields(self, track_ids: Sequence[str], fields: Sequence[str]
                     ) -> dict[str, dict[str, str | None] | None]:
        """Some fields of each track's hash in one round trip; None for a track with no tags."""
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            pipe.hmget(self.keys.track(tid), ["track_id", *fields])
        out: dict[str, dict[str, str | None] | None] = {}
        for tid, values in zip(track_ids, pipe.execute(), strict=True):
            out[tid] = None if values[0] is None else dict(zip(fields, values[1:], strict=True))
        return out

    def stored_versions(self, track_ids: Sequence[str]) -> dict[str, str | None]:
        """Model version of each track's stored tags (None: not tagged), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            pipe.hget(self.keys.track(tid), "model_version")
        return dict(zip(track_ids, pipe.execute(), strict=True))

    def stats(self, dead_letters_by_reason: dict[str, int]) -> StoreStats:
        """Tracks per genre and per model version (set sizes), with the dead letters' counts; a
        genre or version whose last track moved on keeps an empty set, which is left out."""
        genres, models = self.genres(), self.models()
        pipe = self.client.pipeline(transaction=False)
        for label in genres:
            pipe.zcard(self.keys.genre(label))
        for version in models:
            pipe.scard(self.keys.model(version))
        counts = pipe.execute()
        per_model = dict(zip(models, counts[len(genres):], strict=True))
        return StoreStats(
            tracks=sum(per_model.values()),
            genres=_by_count({g: n for g, n in zip(genres, counts, strict=False) if n > 0}),
            models=_by_count({v: n for v, n in per_model.items() if n > 0}),
            dead_letters=sum(dead_letters_by_reason.values()),
            dead_letters_by_reason=_by_count(dead_letters_by_reason),
        )
