"""Dead letters kept in Redis: scanning both hashes, counting by reason, removing an entry.

Every entry read carries where it is stored (:class:`DeadLetterSlot`), and removal takes the
entry itself: a letter of a message that did not parse (``P dlq:msg``) is removed from that
hash, never looked for under a track id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from pydantic import ValidationError

from genretag.core.store.keys import DeadLetterSlot, KeyLayout
from genretag.schemas import DeadLetter

#: Delete a dead letter only if it is still the one that was read (a worker may have replaced it).
REMOVE_IF_UNCHANGED_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class StoredDeadLetter:
    """One stored dead letter: where it is, its stored JSON, the parsed letter (None if
    unreadable)."""

    slot: DeadLetterSlot
    raw: str
    letter: DeadLetter | None

    @property
    def key(self) -> str:
        """The field it is stored under: a track id, or ``topic:partition:offset``."""
        return self.slot.field

    @property
    def reason(self) -> str:
        return self.letter.reason.value if self.letter else "unreadable"


class DeadLetterStore:
    """The two dead-letter hashes (``P dlq`` and ``P dlq:msg``) for the admin commands."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys
        self._remove_if_unchanged = client.register_script(REMOVE_IF_UNCHANGED_LUA)

    def scan(self, reason: str | None = None, count: int = 200) -> Iterator[StoredDeadLetter]:
        """Entries of both hashes by HSCAN, optionally of one reason (``unreadable``: bad JSON)."""
        for hash_key in (self.keys.dlq, self.keys.dlq_msg):
            for field, raw in self.client.hscan_iter(hash_key, count=count):
                try:
                    letter: DeadLetter | None = DeadLetter.model_validate_json(raw)
                except ValidationError:
                    letter = None
                entry = StoredDeadLetter(DeadLetterSlot(hash_key, field), raw, letter)
                if reason is None or entry.reason == reason:
                    yield entry

    def letters(self) -> Iterator[DeadLetter]:
        """Every readable dead letter."""
        for entry in self.scan():
            if entry.letter is not None:
                yield entry.letter

    def count(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.hlen(self.keys.dlq)
        pipe.hlen(self.keys.dlq_msg)
        return sum(int(n) for n in pipe.execute())

    def count_by_reason(self) -> dict[str, int]:
        return dict(Counter(entry.reason for entry in self.scan()))

    def remove(self, entry: StoredDeadLetter) -> None:
        self.client.hdel(entry.slot.hash_key, entry.slot.field)

    def remove_if_unchanged(self, entry: StoredDeadLetter) -> bool:
        """Delete ``entry`` only if it is still stored as read: a newer failure stays."""
        return bool(self._remove_if_unchanged(keys=[entry.slot.hash_key],
                                              args=[entry.slot.field, entry.raw]))
