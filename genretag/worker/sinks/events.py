"""Tag events on Kafka: one per track whose tags a settled write made new or changed (or every
write, ``--events all``), keyed by track id, acknowledged by the broker before the commit.

Whether a write changed the tags is decided atomically by the tag store's Lua write and handed
over by the tags sink in ``Outcome.previous``. A redelivered message whose write finds the tags
unchanged but set by its own earlier delivery (``previous.redelivered``) publishes the event
again: that first attempt may have died before publishing. Every copy of an event carries the
same id (:func:`genretag.schemas.tag_event_id`), so consumers drop duplicates. Why this design
and not an outbox: docs/events.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genretag.core.kafka import ensure_topics, event_max_bytes, make_producer, topic_max_bytes
from genretag.core.logs import get_logger
from genretag.core.settings import KafkaSection
from genretag.schemas import TagChange, TagEvent, tag_event_id
from genretag.worker.job import Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.settings import WorkerSettings
from genretag.worker.sinks.base import SinkContext

log = get_logger(__name__)

#: How long a batch's events may wait for the broker's acknowledgement (then retried).
ACK_TIMEOUT_S = 30.0
#: The same while a rebalance waits (``urgent``): a revocation cannot wait long.
URGENT_ACK_TIMEOUT_S = 5.0
#: How long ``send`` may block on metadata (broker down): the retry policy takes over after.
MAX_BLOCK_MS = 5000


def tag_event(outcome: Outcome, mode: str, top_k: int) -> TagEvent | None:
    """The event a settled outcome announces, or None (a dead letter, or unchanged tags in
    ``changed`` mode)."""
    record, previous = outcome.record, outcome.previous
    if record is None or previous is None:  # no tags, or the tag store did not write them
        return None
    if previous.changed:
        before, change = previous, None
    elif previous.redelivered is not None:  # our own earlier change: maybe never announced
        before, change = previous.redelivered, None
    elif mode == "all":
        before, change = previous, TagChange.UNCHANGED
    else:
        return None
    if change is None:
        change = TagChange.CHANGED if before.existed else TagChange.NEW
    ranked = sorted(record.probabilities.items(), key=lambda kv: (-kv[1], kv[0]))
    return TagEvent(
        event_id=tag_event_id(record.track_id, record.model_version, record.labels,
                              record.primary_genre),
        change=change, track_id=record.track_id, uri=record.uri,
        model_version=record.model_version, labels=list(record.labels),
        primary_genre=record.primary_genre, top_probabilities=dict(ranked[:top_k]),
        previous_model_version=before.model_version,
        previous_labels=None if before.labels is None else list(before.labels),
        previous_primary_genre=before.primary_genre, time=record.processed_at,
    )


class EventSink:
    """Publishes the batch's tag events, in message order, and waits for every ack."""

    name = "events"
    operation = "events_publish"

    def __init__(self, kafka: KafkaSection, mode: str, top_k: int, metrics: WorkerMetrics,
                 producer: Any) -> None:
        self.kafka = kafka
        self.topic = kafka.events_topic
        self.mode = mode
        self.top_k = top_k
        self.metrics = metrics
        self.producer = producer
        self.max_bytes = event_max_bytes(kafka)
        self.topic_ready = False

    def ensure_topic(self) -> None:
        """Create the compacted events topic if missing (once, and again after a failure:
        a broker that restarted without its data has lost it)."""
        if not self.topic_ready:
            ensure_topics(self.kafka, [self.topic])
            self.topic_ready = True

    def write(self, outcomes: Sequence[Outcome], *, urgent: bool = False) -> dict[str, str]:
        """Publish the events of ``outcomes``; an event too large for the topic refuses its
        track (the settle dead-letters it). Raises on a failed or late acknowledgement."""
        chosen = [(o, e) for o in outcomes if (e := tag_event(o, self.mode, self.top_k))]
        if not chosen:
            return {}
        events = [e for _, e in chosen]
        refused: dict[str, str] = {}
        timeout = URGENT_ACK_TIMEOUT_S if urgent else ACK_TIMEOUT_S
        try:
            self.ensure_topic()
            sent = []
            for event in events:
                value = event.model_dump_json().encode()
                if len(value) > self.max_bytes:
                    refused[event.track_id] = (
                        f"its tag event is {len(value)} bytes, over the {self.max_bytes} bytes "
                        f"{self.topic} takes (raise max_message_bytes)")
                    continue
                sent.append((event, self.producer.send(self.topic, key=event.track_id.encode(),
                                                       value=value)))
            self.producer.flush(timeout=timeout)
            for _, future in sent:
                future.get(timeout=timeout)
        except Exception:
            self.topic_ready = False  # check the topic again on the retry
            raise
        for event, _ in sent:
            self.metrics.tag_events.labels(change=event.change.value).inc()
        again = [o.record.track_id for o, _ in chosen
                 if not o.previous.changed and o.previous.redelivered is not None]
        if again:  # a worker died between the Redis write and the publish: recovered here
            log.info("worker.events_reannounced", extra={"count": len(again), "track_ids": again})
        return refused

    def close(self) -> None:
        self.producer.close(timeout=10)


def build(settings: WorkerSettings, context: SinkContext) -> EventSink:
    """The events sink of ``settings``; creates the events topic now when the broker answers
    (otherwise the first write does, under the retry policy)."""
    kafka = settings.kafka
    # No auto-creation: a topic made by the broker on first use would not be compacted; a
    # missing topic fails the send instead, and the retry creates it (ensure_topic).
    producer = make_producer(kafka, max_request_size=topic_max_bytes(kafka, kafka.events_topic),
                             max_block_ms=MAX_BLOCK_MS, allow_auto_create_topics=False)
    sink = EventSink(kafka, settings.events.mode, settings.events.top_k, context.metrics,
                     producer)
    try:
        sink.ensure_topic()
    except Exception as exc:  # noqa: BLE001 - retried by the first write
        log.warning("worker.events_topic_pending", extra={
            "topic": sink.topic, "error": f"{type(exc).__name__}: {exc}"})
    return sink
