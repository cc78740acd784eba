"""The first output: tags and dead letters into the Redis tag store (the one Lua write).

With a model set, each further model's records are written by the same Lua script (one per
track and model) under that model's namespace (``KeyLayout.for_model``); dead letters and the
"what the track held before" annotation belong to the first model, whose keys are the root.
"""

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
                 watch: EvictionWatch | None = None, metrics: WorkerMetrics | None = None,
                 namespaced: dict[str, tuple[TagWriter, TagWriter]] | None = None) -> None:
        """``namespaced``: a model set's further models → their (writer, urgent writer)."""
        self.writer = writer
        self.urgent_writer = urgent_writer
        self.watch = watch  # keys Redis evicted since we last looked: an error, not silence
        self.metrics = metrics
        self.namespaced = namespaced or {}

    def write(self, outcomes: Sequence[Outcome], *, urgent: bool = False) -> dict[str, str]:
        writer = self.urgent_writer if urgent else self.writer
        tagged = [o for o in outcomes if o.record]
        result = writer.write([o.record for o in tagged], [o.dead for o in outcomes if o.dead],
                              sources=[source_of(o) for o in tagged])
        for o, previous in zip(tagged, result.by_record, strict=True):
            if previous is not None:  # each write's own answer (a track may come twice)
                o.previous = previous
        refused = dict(result.refused)
        for namespace, writers in self.namespaced.items():
            answered = [o for o in tagged if namespace in o.model_records]
            if answered:
                more = writers[urgent].write([o.model_records[namespace] for o in answered],
                                             sources=[source_of(o) for o in answered])
                refused.update({tid: f"{namespace}: {why}" for tid, why in more.refused.items()
                                if tid not in refused})
        if self.watch is not None and not urgent:
            self._report_evictions(self.watch.new_evictions())
        return refused

    def _report_evictions(self, evicted: int) -> None:
        if not evicted:
            return
        if self.metrics is not None:
            self.metrics.redis_evicted_keys.inc(evicted)
        log.error("worker.redis_evicted_keys", extra={
            "evicted": evicted, "why": "Redis evicted keys (server-wide count): committed tags "
            "may be gone; set maxmemory-policy noeviction on the server"})

    def close(self) -> None:
        writers = (self.writer, self.urgent_writer,
                   *(w for pair in self.namespaced.values() for w in pair))
        for client in {id(w.client): w.client for w in writers}.values():  # shared: once each
            client.close()


def build(settings: WorkerSettings, context: SinkContext) -> TagSink:
    """The tag sink of ``settings``' Redis; genre tags to genre sets, other kinds to tag sets."""
    keys = KeyLayout(settings.redis.key_prefix)
    urgent = min(URGENT_TIMEOUT_S, settings.redis.socket_timeout_s)
    client = connect(settings.redis)
    urgent_client = connect(settings.redis, socket_timeout_s=urgent)

    def writers(layout: KeyLayout, kinds: dict[str, str]) -> tuple[TagWriter, TagWriter]:
        return TagWriter(client, layout, kinds), TagWriter(urgent_client, layout, kinds)

    first, first_urgent = writers(keys, context.manifest.kinds)
    return TagSink(first, first_urgent, watch=EvictionWatch(client), metrics=context.metrics,
                   namespaced={namespace: writers(keys.for_model(namespace), manifest.kinds)
                               for namespace, manifest in context.namespaced})
