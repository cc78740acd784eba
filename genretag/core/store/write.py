"""Writing tags and dead letters: one Lua script per track, one pipeline round trip per batch.

The script removes the track from the label sets and model set of its previous tags (found
through its stored labels and kinds), writes the new ones and clears the track's dead letter,
so a redelivery or a re-tag leaves exactly the state of one clean run; it returns what the
track held before (model version, labels), so a later output can tell what changed. A track
whose own key cannot be rewritten (not a hash, unreadable labels or kinds) is refused with a
``TRACKKEY`` error reply before anything is changed, and :meth:`TagWriter.write` names it so
the caller can dead-letter that one track; every other error reply is raised for the retry
policy to classify. Only standard commands (HSET, ZADD, EVALSHA...) are used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis

from genretag.core.errors import REDIS_TRACK_CODES, redis_error_code
from genretag.core.store.keys import KeyLayout
from genretag.core.timeline import encode_timeline
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
local old_primary = redis.call('HGET', hkey, 'primary_genre')
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
return {old_version, old_labels, old_primary}
"""


@dataclass(frozen=True)
class PreviousTags:
    """What a track held before a write: None fields when it had no tags (``primary_genre``
    also None when it was written before that field existed)."""

    model_version: str | None = None
    labels: tuple[str, ...] | None = None
    primary_genre: str | None = None

    @property
    def existed(self) -> bool:
        return self.model_version is not None


@dataclass
class WriteResult:
    """Per track of a batch: what it held before (written ones), or why its key refused."""

    previous: dict[str, PreviousTags] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def record_fields(rec: TagRecord, kinds: Mapping[str, str]) -> dict[str, str]:
    """The track hash of ``rec`` (``kinds``: label → kind for its non-genre labels)."""
    fields = {
        "track_id": rec.track_id,
        "model_version": rec.model_version,
        "probabilities": json.dumps(rec.probabilities, sort_keys=True),
        "labels": json.dumps(rec.labels),
        "primary_genre": rec.primary_genre or "",
        "kinds": json.dumps(dict(kinds)),
        "processed_at": rec.processed_at.isoformat(),
        "duration_s": "" if rec.duration_s is None else f"{rec.duration_s:.3f}",
        "uri": rec.uri or "",
    }
    if rec.timeline is not None:  # same HSET of the same script: written or removed with the tags
        fields["timeline"] = encode_timeline(rec.timeline)
    return fields


def _previous(reply: object) -> PreviousTags:
    version, labels, primary = (reply if isinstance(reply, list) and len(reply) == 3
                                else (None, None, None))
    try:
        parsed = tuple(json.loads(labels)) if isinstance(labels, str) else None
    except (ValueError, TypeError):
        parsed = None
    text = [v if isinstance(v, str) and v else None for v in (version, primary)]
    return PreviousTags(text[0], parsed, text[1])


class TagWriter:
    """Idempotent writes of tag records and dead letters (the worker's one write path)."""

    def __init__(self, client: redis.Redis, keys: KeyLayout,
                 label_kinds: Mapping[str, str] | None = None) -> None:
        """``label_kinds``: kind of each label that is not a genre (the manifest's ``kinds``)."""
        self.client = client
        self.keys = keys
        self.label_kinds = {k: v for k, v in (label_kinds or {}).items() if v != "genre"}
        self._script = client.register_script(WRITE_TAGS_LUA)

    def write(self, records: Iterable[TagRecord],
              dead_letters: Iterable[DeadLetter] = ()) -> WriteResult:
        """Write a batch of tag records and dead letters in one pipeline round trip.

        Tracks refused for their own key are in ``refused`` (their other writes are done). Any
        other error reply is raised after every command of the batch has run (each is
        idempotent, so the caller retries the whole batch).
        """
        records = list(records)
        pipe = self.client.pipeline(transaction=False)
        for rec in records:
            kinds = {g: self.label_kinds[g] for g in rec.labels if g in self.label_kinds}
            flat = [x for kv in record_fields(rec, kinds).items() for x in kv]
            scores = {k: rec.probabilities[k] for k in rec.labels}
            self._script(
                keys=[self.keys.track(rec.track_id)],
                args=[self.keys.prefix, rec.track_id, rec.model_version,
                      json.dumps(scores) if scores else "{}", json.dumps(rec.labels),
                      json.dumps(kinds), *flat],
                client=pipe,
            )
        for letter in dead_letters:
            slot = self.keys.dead_letter_slot(letter)
            pipe.hset(slot.hash_key, slot.field, letter.model_dump_json())
        if records and self.keys.namespace:  # a further model's: make it findable
            pipe.sadd(self.keys.namespaces, self.keys.namespace)
        replies = pipe.execute(raise_on_error=False)
        result = WriteResult()
        for k, reply in enumerate(replies):
            if isinstance(reply, Exception):
                if k < len(records) and redis_error_code(reply) in REDIS_TRACK_CODES:
                    result.refused[records[k].track_id] = str(reply)
                    continue
                raise reply
            if k < len(records):
                result.previous[records[k].track_id] = _previous(reply)
        return result
