"""Writing tags and dead letters: one Lua script per track, one pipeline round trip per batch.

The script removes the track from the label sets and model set of its previous tags (found
through its stored labels and kinds), writes the new ones and clears the track's dead letter,
so a redelivery or a re-tag leaves exactly the state of one clean run; it returns what the
track held before (model version, labels), so a later output can tell what changed. It also
says whether the write changed the tags (model version, label set or primary genre) and keeps,
in the hash, which message made the last change (``changed_by``: its ``topic:partition:offset``)
and what the track held before it (``changed_from``): a redelivery of that message finds the
tags unchanged yet learns that the change was its own, so the change feed can still announce
it (see docs/events.md). A track
whose own key cannot be rewritten (not a hash, unreadable labels or kinds) is refused with a
``TRACKKEY`` error reply before anything is changed, and :meth:`TagWriter.write` names it so
the caller can dead-letter that one track; every other error reply is raised for the retry
policy to classify. Only standard commands (HSET, ZADD, EVALSHA...) are used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
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
local source = ARGV[7]  -- the writing message's topic:partition:offset ('' when none)
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
local old = nil
if old_labels then
  old = stored('labels', '[]')
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
local new_primary = ''
for i = 8, #ARGV, 2 do
  if ARGV[i] == 'primary_genre' then new_primary = ARGV[i + 1] end
end
local function label_set(list)  -- labels as a set, and how many distinct
  local set, n = {}, 0
  for _, g in ipairs(list) do
    if not set[tostring(g)] then set[tostring(g)], n = true, n + 1 end
  end
  return set, n
end
local changed = not old_version or not old or old_version ~= version
  or (old_primary or '') ~= new_primary
if not changed then
  local before, n_before = label_set(old)
  local after, n_after = label_set(labels)
  changed = n_before ~= n_after
  for g in pairs(after) do if not before[g] then changed = true end end
end
local by = redis.call('HGET', hkey, 'changed_by')
local from = redis.call('HGET', hkey, 'changed_from')
local mine = (not changed) and source ~= '' and by == source
if changed then
  local function text(v) if v then return cjson.encode(v) end return 'null' end
  by = source
  from = '[' .. text(old_version) .. ',' .. (old_labels or 'null') .. ','
    .. text(old_primary) .. ']'
end
local fields = {unpack(ARGV, 8)}
if by and by ~= '' then  -- in the same HSET: one write (one keyspace event) per track
  table.insert(fields, 'changed_by'); table.insert(fields, by)
  table.insert(fields, 'changed_from'); table.insert(fields, from)
end
redis.call('DEL', hkey)
redis.call('HSET', hkey, unpack(fields))
redis.call('HDEL', prefix .. 'dlq', tid)
return {old_version, old_labels, old_primary, changed and 1 or 0, mine and from or false}
"""


@dataclass(frozen=True)
class PreviousTags:
    """What a track held before a write: None fields when it had no tags (``primary_genre``
    also None when it was written before that field existed).

    ``changed``: the write changed the tags (model version, label set or primary genre; a new
    track too). ``redelivered``: the write changed nothing, but the current tags were set by
    an earlier write of the same message (a redelivery whose first attempt may not have been
    announced): what the track held before that change.
    """

    model_version: str | None = None
    labels: tuple[str, ...] | None = None
    primary_genre: str | None = None
    changed: bool = True
    redelivered: PreviousTags | None = None

    @property
    def existed(self) -> bool:
        return self.model_version is not None


@dataclass
class WriteResult:
    """Per track of a batch: what it held before (written ones), or why its key refused.

    ``by_record`` has one entry per record written, in order (None: refused), so a track
    written twice in one batch gets each write's own answer; ``previous`` keeps the last one
    per track id.
    """

    previous: dict[str, PreviousTags] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    by_record: list[PreviousTags | None] = field(default_factory=list)


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


def _labels(value: object) -> tuple[str, ...] | None:
    """A stored labels value (JSON text, or already parsed) as a tuple; None if unreadable."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except (ValueError, TypeError):
        return None
    return tuple(str(g) for g in parsed) if isinstance(parsed, list) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _redelivered(change: object) -> PreviousTags | None:
    """``changed_from`` (``[version, labels, primary]`` JSON) of a change made by the same
    message, or None (no such change, or unreadable)."""
    if not isinstance(change, str):
        return None
    try:
        version, labels, primary = json.loads(change)
    except (ValueError, TypeError):
        return None
    return PreviousTags(_text(version), _labels(labels), _text(primary))


def _previous(reply: object) -> PreviousTags:
    parts = list(reply) if isinstance(reply, list) else []
    version, labels, primary, changed, change = (parts + [None] * 5)[:5]
    return PreviousTags(_text(version), _labels(labels), _text(primary),
                        changed=changed != 0, redelivered=_redelivered(change))


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
              dead_letters: Iterable[DeadLetter] = (),
              sources: Sequence[str] | None = None) -> WriteResult:
        """Write a batch of tag records and dead letters in one pipeline round trip.

        ``sources``: per record, the coordinates (``topic:partition:offset``) of the message it
        answers, so a redelivery of the message that last changed a track is recognised.
        Tracks refused for their own key are in ``refused`` (their other writes are done). Any
        other error reply is raised after every command of the batch has run (each is
        idempotent, so the caller retries the whole batch).
        """
        records = list(records)
        sources = list(sources) if sources is not None else [""] * len(records)
        if len(sources) != len(records):
            raise ValueError(f"{len(sources)} sources for {len(records)} records")
        pipe = self.client.pipeline(transaction=False)
        for rec, source in zip(records, sources, strict=True):
            kinds = {g: self.label_kinds[g] for g in rec.labels if g in self.label_kinds}
            flat = [x for kv in record_fields(rec, kinds).items() for x in kv]
            scores = {k: rec.probabilities[k] for k in rec.labels}
            self._script(
                keys=[self.keys.track(rec.track_id)],
                args=[self.keys.prefix, rec.track_id, rec.model_version,
                      json.dumps(scores) if scores else "{}", json.dumps(rec.labels),
                      json.dumps(kinds), source, *flat],
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
                    result.by_record.append(None)
                    continue
                raise reply
            if k < len(records):
                result.previous[records[k].track_id] = _previous(reply)
                result.by_record.append(result.previous[records[k].track_id])
        return result
