"""The Redis key layout and the typed client that reads and writes it (one module owns it).

Layout (``P`` = key prefix, default ``genretag:``):

* ``P track:<id>``        hash: track_id, model_version, probabilities (JSON), labels (JSON),
                           kinds (JSON: kind of each label that is not a genre), processed_at,
                           duration_s, uri, and timeline (the per-window timeline, compact JSON
                           of :mod:`genretag.core.timeline`; absent if none)
* ``P genre:<label>``     sorted set: track ids tagged with that genre, score = probability
* ``P genres``            set: every genre that has a sorted set
* ``P tag:<label>``       sorted set: the same for a label of another kind (mood, era, …)
* ``P kind:<kind>``       set: every such label of that kind (``kind:mood`` → happy, sad…)
* ``P model:<version>``   set: track ids whose current tags come from that model version
* ``P models``            set: every model version seen
* ``P dlq``               hash: track id → DeadLetter JSON, for messages that parsed (the id is
                           contract-valid; tagging the track later removes its entry)
* ``P dlq:msg``           hash: ``topic:partition:offset`` → DeadLetter JSON, for messages that
                           did not parse (their id, if any, is never trusted as a key)

A label is a genre unless the store was given another kind for it (``label_kinds``, from the
model's manifest): genres keep the layout older models wrote, other kinds sit beside them.
A write is one Lua script per track: it removes the track from the label sets and model set
of its previous tags (found through its stored labels and kinds), then writes the new ones,
so a redelivery or a re-tag leaves exactly the state of one clean run. Only standard commands
(HSET, ZADD, EVALSHA...) are used. A track whose own key cannot be rewritten (not a hash,
unreadable labels or kinds) is refused with a ``TRACKKEY`` error reply before anything is
changed, and :meth:`TagStore.write` names it so the caller can dead-letter that one track;
every other error reply is raised for the retry policy to classify.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import redis
from pydantic import ValidationError

from genretag.core.errors import REDIS_TRACK_CODES, redis_error_code
from genretag.core.settings import RedisSettings
from genretag.core.timeline import decode_timeline, encode_timeline
from genretag.schemas import DeadLetter, TagRecord

WRITE_TAGS_LUA = """
local hkey, prefix, tid, version = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local scores = cjson.decode(ARGV[4])
local labels = cjson.decode(ARGV[5])
local kinds = cjson.decode(ARGV[6])
local kind = redis.call('TYPE', hkey)['ok']
if kind ~= 'hash' and kind ~= 'none' then
  return redis.error_reply('TRACKKEY ' .. hkey .. ' holds a ' .. kind .. ', not a hash')
end
local function stored(field, default)  -- a JSON field of the old hash, nil if unreadable
  local ok, value = pcall(cjson.decode, redis.call('HGET', hkey, field) or default)
  if ok and type(value) == 'table' then return value end
  return nil
end
local old_labels = redis.call('HGET', hkey, 'labels')
local old_kinds = stored('kinds', '{}')
local old_version = redis.call('HGET', hkey, 'model_version')
if old_labels then
  local old = stored('labels', '[]')
  if not old or not old_kinds then
    return redis.error_reply('TRACKKEY ' .. hkey .. ' holds unreadable labels or kinds')
  end
  for _, g in ipairs(old) do
    if old_kinds[g] then redis.call('ZREM', prefix .. 'tag:' .. tostring(g), tid)
    else redis.call('ZREM', prefix .. 'genre:' .. tostring(g), tid) end
  end
end
if old_version then redis.call('SREM', prefix .. 'model:' .. old_version, tid) end
for _, g in ipairs(labels) do
  if kinds[g] then
    redis.call('ZADD', prefix .. 'tag:' .. g, scores[g], tid)
    redis.call('SADD', prefix .. 'kind:' .. kinds[g], g)
  else
    redis.call('ZADD', prefix .. 'genre:' .. g, scores[g], tid)
    redis.call('SADD', prefix .. 'genres', g)
  end
end
redis.call('SADD', prefix .. 'model:' .. version, tid)
redis.call('SADD', prefix .. 'models', version)
redis.call('DEL', hkey)
redis.call('HSET', hkey, unpack(ARGV, 7))
redis.call('HDEL', prefix .. 'dlq', tid)
return 1
"""

#: Delete a dead letter only if it is still the one that was read (a worker may have replaced it).
REMOVE_DEAD_LETTER_IF_UNCHANGED_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class StoredDeadLetter:
    """One dlq hash entry: key, stored JSON, and the parsed letter (None if unreadable)."""

    key: str
    raw: str
    letter: DeadLetter | None
    namespace: str = "track"  # "track" (P dlq) or "msg" (P dlq:msg)

    @property
    def reason(self) -> str:
        return self.letter.reason.value if self.letter else "unreadable"


@dataclass
class StoreStats:
    """Counts for `genretag stats`: tracks per genre and model version, dead letters by reason."""

    tracks: int = 0
    genres: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "tracks": self.tracks, "genres": self.genres, "models": self.models,
            "dead_letters": {"total": self.dead_letters, "by_reason": self.dead_letters_by_reason},
        }


def connect(settings: RedisSettings, encoding_errors: str = "strict") -> redis.Redis:
    """A Redis client from settings (ACL user/password, TLS via rediss://).

    Readers pass ``encoding_errors="backslashreplace"`` so a value that is not UTF-8 is shown
    escaped instead of crashing the command.
    """
    kwargs: dict[str, object] = {
        "encoding_errors": encoding_errors,
        "username": settings.redis_username,
        "password": settings.redis_password.get_secret_value() if settings.redis_password else None,
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_socket_timeout_s,
        "decode_responses": True,
    }
    if settings.redis_url.startswith("rediss://") and settings.redis_ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def dead_letter_key(letter: DeadLetter) -> tuple[str, str]:
    """(namespace, key): the parsed track's id, else the message's coordinates.

    Both are stable across redelivery. Only a letter carrying its parsed TrackRef is keyed by
    id: the id of a message that failed validation is untrusted and could replace a real
    track's replayable letter, so it is keyed by ``topic:partition:offset`` in its own hash.
    """
    if letter.track is not None:
        return "track", letter.track.track_id
    return "msg", f"{letter.source_topic}:{letter.source_partition}:{letter.source_offset}"


class TagStore:
    """Typed access to tags in Redis; used by the worker (writes) and the CLI (reads)."""

    def __init__(self, client: redis.Redis, prefix: str = "genretag:",
                 label_kinds: Mapping[str, str] | None = None) -> None:
        """``label_kinds``: kind of each label that is not a genre (the manifest's ``kinds``)."""
        self.client = client
        self.prefix = prefix
        self.label_kinds = {k: v for k, v in (label_kinds or {}).items() if v != "genre"}
        self._write = client.register_script(WRITE_TAGS_LUA)
        self._remove_if_unchanged = client.register_script(REMOVE_DEAD_LETTER_IF_UNCHANGED_LUA)

    # -- keys ----------------------------------------------------------------------------
    def track_key(self, track_id: str) -> str:
        return f"{self.prefix}track:{track_id}"

    def genre_key(self, label: str) -> str:
        return f"{self.prefix}genre:{label}"

    def tag_key(self, label: str) -> str:
        """Sorted set of a label that is not a genre (mood, era, instrument, voice, other)."""
        return f"{self.prefix}tag:{label}"

    def kind_key(self, kind: str) -> str:
        return f"{self.prefix}kind:{kind}"

    def model_key(self, version: str) -> str:
        return f"{self.prefix}model:{version}"

    @property
    def dlq_key(self) -> str:
        """Hash of dead letters of parsed messages, by track id."""
        return f"{self.prefix}dlq"

    @property
    def dlq_msg_key(self) -> str:
        """Hash of dead letters of messages that did not parse, by topic:partition:offset."""
        return f"{self.prefix}dlq:msg"

    def _dlq_hash(self, namespace: str) -> str:
        return self.dlq_msg_key if namespace == "msg" else self.dlq_key

    # -- writes --------------------------------------------------------------------------
    def write(self, records: Iterable[TagRecord],
              dead_letters: Iterable[DeadLetter] = ()) -> dict[str, str]:
        """Write a batch of tag records and dead letters in one pipeline round trip.

        Returns the tracks refused for their own key (track id → why; their other writes are
        done). Any other error reply is raised, after every command of the batch has run (each
        is idempotent, so the caller retries the whole batch).
        """
        records = list(records)
        pipe = self.client.pipeline(transaction=False)
        for rec in records:
            kinds = {g: self.label_kinds[g] for g in rec.labels if g in self.label_kinds}
            fields = {
                "track_id": rec.track_id,
                "model_version": rec.model_version,
                "probabilities": json.dumps(rec.probabilities, sort_keys=True),
                "labels": json.dumps(rec.labels),
                "kinds": json.dumps(kinds),
                "processed_at": rec.processed_at.isoformat(),
                "duration_s": "" if rec.duration_s is None else f"{rec.duration_s:.3f}",
                "uri": rec.uri or "",
            }
            if rec.timeline is not None:  # same HSET of the same script: written or removed with the tags
                fields["timeline"] = encode_timeline(rec.timeline)
            flat = [x for kv in fields.items() for x in kv]
            self._write(
                keys=[self.track_key(rec.track_id)],
                args=[self.prefix, rec.track_id, rec.model_version,
                      json.dumps({k: rec.probabilities[k] for k in rec.labels}) if rec.labels else "{}",
                      json.dumps(rec.labels), json.dumps(kinds), *flat],
                client=pipe,
            )
        for letter in dead_letters:
            namespace, key = dead_letter_key(letter)
            pipe.hset(self._dlq_hash(namespace), key, letter.model_dump_json())
        results = pipe.execute(raise_on_error=False)
        refused: dict[str, str] = {}
        for k, result in enumerate(results):
            if not isinstance(result, Exception):
                continue
            if k < len(records) and redis_error_code(result) in REDIS_TRACK_CODES:
                refused[records[k].track_id] = str(result)
            else:
                raise result
        return refused

    # -- reads ---------------------------------------------------------------------------
    def get(self, track_id: str) -> TagRecord | None:
        data = self.client.hgetall(self.track_key(track_id))
        return _record_from_hash(data) if data else None

    def get_many(self, track_ids: list[str]) -> dict[str, TagRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            pipe.hgetall(self.track_key(tid))
        return {
            tid: (_record_from_hash(data) if data else None)
            for tid, data in zip(track_ids, pipe.execute(), strict=True)
        }

    def top(self, label: str, min_score: float = 0.0, limit: int = 20,
            genre: bool = True) -> list[tuple[str, float]]:
        """Tracks tagged ``label`` (a genre, or with ``genre=False`` another kind), best first."""
        key = self.genre_key(label) if genre else self.tag_key(label)
        rows = self.client.zrevrangebyscore(
            key, "+inf", min_score, start=0, num=limit, withscores=True
        )
        return [(member, float(score)) for member, score in rows]

    def genres(self) -> list[str]:
        return sorted(self.client.smembers(f"{self.prefix}genres"))

    def labels_of_kind(self, kind: str) -> dict[str, int]:
        """Labels of ``kind`` that tag at least one track stored so far, with their track counts."""
        labels = (self.genres() if kind == "genre"
                  else sorted(self.client.smembers(self.kind_key(kind))))
        pipe = self.client.pipeline(transaction=False)
        for label in labels:
            pipe.zcard(self.genre_key(label) if kind == "genre" else self.tag_key(label))
        return {label: int(n) for label, n in zip(labels, pipe.execute(), strict=True) if n}

    def models(self) -> list[str]:
        return sorted(self.client.smembers(f"{self.prefix}models"))

    def count_genre(self, label: str) -> int:
        return int(self.client.zcard(self.genre_key(label)))

    def count_model(self, version: str) -> int:
        return int(self.client.scard(self.model_key(version)))

    def dead_letters(self) -> Iterator[tuple[str, DeadLetter]]:
        """(key, letter) of every readable dead letter, both namespaces."""
        for entry in self.scan_dead_letters():
            if entry.letter is not None:
                yield entry.key, entry.letter

    def remove_dead_letter(self, key: str, namespace: str = "track") -> None:
        self.client.hdel(self._dlq_hash(namespace), key)

    def scan_track_ids(self, count: int = 500) -> Iterator[str]:
        """Every tagged track id, by SCAN (never KEYS)."""
        start = len(self.track_key(""))
        for key in self.client.scan_iter(match=self.track_key("*"), count=count):
            yield key[start:]

    def scan_model_track_ids(self, version: str, count: int = 500) -> Iterator[str]:
        """Track ids whose current tags come from ``version``, by SSCAN (a set of any size)."""
        yield from self.client.sscan_iter(self.model_key(version), count=count)

    def track_fields(
        self, track_ids: Sequence[str], fields: Sequence[str]
    ) -> dict[str, dict[str, str | None] | None]:
        """Some fields of each track's hash in one round trip; None for a track with no tags."""
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            pipe.hmget(self.track_key(tid), ["track_id", *fields])
        out: dict[str, dict[str, str | None] | None] = {}
        for tid, values in zip(track_ids, pipe.execute(), strict=True):
            out[tid] = None if values[0] is None else dict(zip(fields, values[1:], strict=True))
        return out

    def stored_versions(self, track_ids: Sequence[str]) -> dict[str, str | None]:
        """Model version of each track's stored tags (None: not tagged), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for tid in track_ids:
            pipe.hget(self.track_key(tid), "model_version")
        return dict(zip(track_ids, pipe.execute(), strict=True))

    # -- dead letters ----------------------------------------------------------------------
    def scan_dead_letters(
        self, reason: str | None = None, count: int = 200
    ) -> Iterator[StoredDeadLetter]:
        """Entries of both dlq hashes by HSCAN, optionally of one reason (``unreadable``: bad JSON)."""
        for namespace in ("track", "msg"):
            for key, raw in self.client.hscan_iter(self._dlq_hash(namespace), count=count):
                try:
                    letter: DeadLetter | None = DeadLetter.model_validate_json(raw)
                except ValidationError:
                    letter = None
                entry = StoredDeadLetter(key, raw, letter, namespace)
                if reason is None or entry.reason == reason:
                    yield entry

    def count_dead_letters(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.hlen(self.dlq_key)
        pipe.hlen(self.dlq_msg_key)
        return sum(int(n) for n in pipe.execute())

    def remove_dead_letter_if_unchanged(self, key: str, raw: str, namespace: str = "track") -> bool:
        """Delete a dead letter only if it is still ``raw``: a newer failure of the track stays."""
        return bool(self._remove_if_unchanged(keys=[self._dlq_hash(namespace)], args=[key, raw]))

    # -- stats -----------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        """Tracks per genre and per model version (set sizes), dead letters by reason (HSCAN)."""
        genres, models = self.genres(), self.models()
        pipe = self.client.pipeline(transaction=False)
        for label in genres:
            pipe.zcard(self.genre_key(label))
        for version in models:
            pipe.scard(self.model_key(version))
        counts = pipe.execute()
        per_genre = dict(zip(genres, counts[: len(genres)], strict=True))
        per_model = dict(zip(models, counts[len(genres):], strict=True))
        reasons = Counter(entry.reason for entry in self.scan_dead_letters())
        return StoreStats(
            tracks=sum(per_model.values()),
            genres=dict(sorted(per_genre.items(), key=lambda kv: (-kv[1], kv[0]))),
            models=dict(sorted(per_model.items(), key=lambda kv: (-kv[1], kv[0]))),
            dead_letters=sum(reasons.values()),
            dead_letters_by_reason=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        )


def _record_from_hash(data: dict[str, str]) -> TagRecord:
    return TagRecord(
        track_id=data["track_id"],
        model_version=data["model_version"],
        probabilities=json.loads(data["probabilities"]),
        labels=json.loads(data["labels"]),
        processed_at=data["processed_at"],
        duration_s=float(data["duration_s"]) if data.get("duration_s") else None,
        uri=data.get("uri") or None,
        timeline=decode_timeline(data["timeline"]) if data.get("timeline") else None,
    )
