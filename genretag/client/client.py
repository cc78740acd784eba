"""`TagClient`: read what the workers stored in Redis, typed with the contracts.

Every query is one or a few round trips of standard commands (HGETALL, ZREVRANGEBYSCORE, SSCAN,
HSCAN…), so the same calls work against any Redis the workers write to. Values that are not
UTF-8 are returned escaped (``\\xff``) instead of failing the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from genretag.client.pages import Page, PurgeResult, ScoredTrack, Stats
from genretag.core.settings import RedisSection, RedisSettings, expand_path, load_settings
from genretag.core.store import DeadLetterStore, KeyLayout, StoredDeadLetter, TagReader, connect
from genretag.core.trackids import uri_track_id
from genretag.schemas import TAG_KINDS, TagRecord, Timeline


class TagClient:
    """Tags, label rankings, timelines, dead letters and counts of one genretag key prefix.

    Build it with :meth:`connect` (an address), :meth:`from_env` (the same settings as the
    ``genretag`` command: ``GENRETAG_REDIS_*``, ``.env``, the local stack file) or directly
    from a ``redis.Redis`` opened with ``decode_responses=True``. Close it with :meth:`close`
    or use it as a context manager. Connection failures raise redis-py's ``ConnectionError``.
    """

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self.redis = client
        self.keys = KeyLayout(key_prefix)
        self.reader = TagReader(client, self.keys)
        self.dead_letter_store = DeadLetterStore(client, self.keys)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def connect(cls, url: str | None = None, *, key_prefix: str | None = None,
                username: str | None = None, password: str | None = None) -> TagClient:
        """A client of the Redis at ``url`` (``redis://`` or ``rediss://``; no credentials in
        the URL); arguments left out take the ``genretag`` settings' defaults, not the
        environment."""
        given = {"url": url, "key_prefix": key_prefix, "username": username,
                 "password": password}
        return cls.from_section(RedisSection(**{k: v for k, v in given.items()
                                                if v is not None}))

    @classmethod
    def from_env(cls, **public_settings: Any) -> TagClient:
        """A client configured like the ``genretag`` command line: ``GENRETAG_REDIS_URL`` and
        the other ``GENRETAG_REDIS_*`` variables, ``.env``, then the stack file of
        ``genretag stack up``; keywords by public name (``redis_key_prefix="msd:"``) win."""
        return cls.from_section(load_settings(RedisSettings, **public_settings).redis)

    @classmethod
    def from_section(cls, section: RedisSection) -> TagClient:
        """A client from a settings section (what the CLI's read commands use)."""
        return cls(connect(section, encoding_errors="backslashreplace"), section.key_prefix)

    def close(self) -> None:
        """Close the connection pool."""
        self.redis.close()

    def __enter__(self) -> TagClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tracks ---------------------------------------------------------------------------------
    def tags(self, track_id: str) -> TagRecord | None:
        """The stored tags of one track (None: never tagged, or only dead-lettered)."""
        return self.reader.get(track_id)

    def tags_many(self, track_ids: Sequence[str]) -> dict[str, TagRecord | None]:
        """Tags of several tracks in one round trip, in the order asked (None: no tags)."""
        return self.reader.get_many(list(track_ids))

    def tags_every_model(self, track_ids: Sequence[str]
                         ) -> dict[str, dict[str, TagRecord | None]]:
        """Each track's tags from every model of a model set (``GENRETAG_MODELS``), by
        namespace: ``""`` is the first model's (what :meth:`tags_many` gives), then each
        further model's name; one round trip after listing the namespaces."""
        return self.reader.get_every_model(list(track_ids))

    def model_namespaces(self) -> list[str]:
        """The further models of model sets that wrote tags under this prefix."""
        return self.reader.namespaces()

    @staticmethod
    def track_id_of(uri: str | Path) -> str:
        """The id the producer gives a catalog row of ``uri`` that has no id of its own: a local
        path (``~`` and ``$VARS`` expanded, resolved from the current folder) or ``file://`` by its path,
        another URI by its text. The same file on the producer's machine, the same id."""
        text = str(uri)
        if "://" not in text:
            text = expand_path(text)
        return uri_track_id(text)

    def tags_of_uri(self, uri: str | Path) -> TagRecord | None:
        """The tags of the track enqueued from ``uri`` without an explicit id
        (:meth:`track_id_of`)."""
        return self.tags(self.track_id_of(uri))

    def timeline(self, track_id: str) -> Timeline | None:
        """The track's per-window timeline (None: no tags, or tagged before timelines)."""
        record = self.tags(track_id)
        return record.timeline if record else None

    # -- labels -----------------------------------------------------------------------------
    def tracks(self, label: str, *, kind: str = "genre", min_score: float = 0.0,
               limit: int = 20, offset: int = 0) -> Page[ScoredTrack]:
        """Tracks tagged ``label``, most probable first, ``limit`` per page from ``offset``.

        ``kind="genre"`` reads the genre rankings; any other kind (mood, era, instrument, voice,
        other) the rankings of labels a model's manifest does not call genres. Only tracks
        whose current tags carry the label (over its threshold) are listed.
        """
        if kind not in TAG_KINDS:
            raise ValueError(f"kind must be one of {', '.join(TAG_KINDS)}, got {kind!r}")
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be >= 1 and offset >= 0, got {limit} and {offset}")
        rows = self.reader.top(label, min_score, limit + 1, genre=kind == "genre", offset=offset)
        items = [ScoredTrack(tid, score) for tid, score in rows[:limit]]
        return Page(items, offset, offset + limit if len(rows) > limit else None)

    def labels(self, kind: str = "genre") -> dict[str, int]:
        """The stored labels of ``kind`` that tag at least one track, with their track counts,
        largest first."""
        counts = self.reader.labels_of_kind(kind)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def genres(self) -> list[str]:
        """Every genre that has a ranking (sorted)."""
        return self.reader.genres()

    def kind_of_label(self, label: str) -> str | None:
        """The kind under which ``label`` tags tracks (``genre`` first), None if it tags none."""
        return next((kind for kind in TAG_KINDS if label in self.reader.labels_of_kind(kind)),
                    None)

    def models(self) -> list[str]:
        """Every model version that ever wrote tags here (sorted)."""
        return self.reader.models()

    # -- dead letters -----------------------------------------------------------------------
    def dead_letters(self, reason: str | None = None,
                     limit: int | None = None) -> list[StoredDeadLetter]:
        """Stored dead letters (of one ``reason``; ``unreadable`` for entries that are not a
        dead letter), newest first, unreadable ones last; at most ``limit``."""
        entries = sorted(self.dead_letter_store.scan(reason), key=_newest_first)
        return entries if limit is None else entries[:limit]

    def purge_dead_letters(self, reason: str | None = None,
                           dry_run: bool = False) -> PurgeResult:
        """Delete the stored dead letters (of ``reason``); one replaced by a newer failure while
        purging is kept. ``dry_run``: count only."""
        entries = list(self.dead_letter_store.scan(reason))
        if dry_run:
            return PurgeResult(len(entries), 0, dry_run=True)
        purged = sum(self.dead_letter_store.remove_if_unchanged(e) for e in entries)
        return PurgeResult(len(entries), purged)

    # -- counts ----------------------------------------------------------------------------
    def stats(self) -> Stats:
        """Tagged tracks, tracks per genre and model version, dead letters by reason."""
        return self.reader.stats(self.dead_letter_store.count_by_reason())

    # -- similarity ----------------------------------------------------------------------------
    # Nearest tracks by embedding come here once the workers store embeddings (issue 29): a
    # `genretag/client/similarity.py` module with the query, exposed as `similar(...)` methods
    # returning `Page[ScoredTrack]`, like `tracks`.


def _newest_first(entry: StoredDeadLetter) -> tuple[int, float, str]:
    """Sort key: most recent failure first, unreadable entries last, then by key."""
    if entry.letter is None:
        return (1, 0.0, entry.key)
    return (0, -entry.letter.failed_at.timestamp(), entry.key)
