"""The tag store's parts for one prefix, as the tests use them together (writer, reader,
dead-letter admin, key layout, raw client)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis

from genretag.core.store import DeadLetterStore, KeyLayout, TagReader, TagWriter


@dataclass(frozen=True)
class StoreParts:
    client: redis.Redis
    keys: KeyLayout
    writer: TagWriter
    reader: TagReader
    dead: DeadLetterStore


def store_parts(client: redis.Redis, prefix: str,
                kinds: Mapping[str, str] | None = None) -> StoreParts:
    keys = KeyLayout(prefix)
    return StoreParts(client, keys, TagWriter(client, keys, kinds), TagReader(client, keys),
                      DeadLetterStore(client, keys))
