"""The first output: tags and dead letters into the Redis tag store (the one Lua write)."""

from __future__ import annotations

from collections.abc import Sequence

from genretag.core.logs import get_logger
from genretag.core.store import KeyLayout, TagWriter, connect
from genretag.core.store.eviction import EvictionWatch
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.job import Outcome
from genretag.worker.settings import WorkerSettings
from genretag.worker.sinks.base import SinkContext

log = get_logger(__name__)

#: Socket timeout of the writes made while a rebalance waits (``urgent``).
URGENT_TIMEOUT_S = 1.0


def source_of(outcome: Outcome) -> str:
    """The coordinates of the message an outcome answers: the same on every redelivery."""
    return f"{outcome.topic}:{outcome.partition}:{outcome.offset}"


class TagSink:
    """Writes records (tags, timeline) and dead letters; records what each track held before
    and whether the write changed it (``Outcome.previous``)."""

    name = "tags"
    operation = "redis_write"

    def __init__(self, writer: TagWriter, urgent_writer: TagWriter,
                 watch: EvictionWatch | None = None, metrics: WorkerMetrics | None = None) -> None:
        self.writer = writer
        self.urgent_writer = urgent_writer
        self.watch = watch  # keys Redis evicted since we last looked: an error, not silence
        self.metrics = metrics

    def write(self, outcomes: Sequence[Outcome], *, urgent: bool = False) -> dict[str, str]:
        writer = self.urgent_writer if urgent else self.writer
        tagged = [o for o in outcomes if o.record]
        result = writer.write([o.record for o in tagged], [o.dead for o in outcomes if o.dead],
                              sources=[source_of(o) for o in tagged])
        for o, previous in zip(tagged, result.by_record, strict=True):
            if previous is not None:  # each write's own answer (a track may come twice)
                o.previous = previous
        if self.watch is not None and not urgent:
            self._report_evictions(self.watch.new_evictions())
        return result.refused

    def _report_evictions(self, evicted: int) -> None:
        if not evicted:
            return
        if self.metrics is not None:
            self.metrics.redis_evicted_keys.inc(evicted)
        log.error("worker.redis_evicted_keys", extra={
            "evicted": evicted, "why": "Redis evicted keys (server-wide count): committed tags "
            "may be gone; set maxmemory-policy noeviction on the server"})

    def close(self) -> None:
        self.writer.client.close()
        self.urgent_writer.client.close()


def build(settings: WorkerSettings, context: SinkContext) -> TagSink:
    """The tag sink of ``settings``' Redis; genre tags to genre sets, other kinds to tag sets."""
    keys = KeyLayout(settings.redis.key_prefix)
    kinds = context.manifest.kinds
    urgent = min(URGENT_TIMEOUT_S, settings.redis.socket_timeout_s)
    client = connect(settings.redis)
    return TagSink(TagWriter(client, keys, kinds),
                   TagWriter(connect(settings.redis, socket_timeout_s=urgent), keys, kinds),
                   watch=EvictionWatch(client), metrics=context.metrics)
