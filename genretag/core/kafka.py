"""Kafka client construction from settings, plus idempotent topic creation.

Only the standard Kafka protocol through kafka-python, so the same code runs on Apache Kafka
and on the local Tansu broker.

Memory stays bounded before decompression: new topics get ``max.message.bytes`` sized from
``max_message_bytes`` (the broker refuses bigger record batches), and consumers fetch at most
:func:`fetch_limits` bytes, so a compressed batch is never more than a few times the message
cap before the client inflates it (see README, "Message size limits").
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError

from genretag.core.batches import install_batch_guard
from genretag.core.logs import get_logger
from genretag.core.settings import KafkaSection

log = get_logger(__name__)


def make_admin(kafka: KafkaSection) -> KafkaAdminClient:
    return KafkaAdminClient(**kafka.client_config())


#: Record-batch framing beyond the records themselves (header, per-record overhead, slack).
BATCH_OVERHEAD_BYTES = 16 * 1024


def topic_max_bytes(kafka: KafkaSection, topic: str) -> int:
    """``max.message.bytes`` for ``topic``: one track message, or one dead letter (which
    carries the original message, its parsed reference and a detail of up to 4000 chars), or
    one tag event (labels before and after, top probabilities: :func:`event_max_bytes`)."""
    cap = kafka.max_message_bytes
    if topic in (kafka.dlq_topic, kafka.events_topic):
        return 3 * cap + 2 * BATCH_OVERHEAD_BYTES
    return cap + BATCH_OVERHEAD_BYTES


def event_max_bytes(kafka: KafkaSection) -> int:
    """Largest tag event the events topic takes (its limit less the batch framing)."""
    return topic_max_bytes(kafka, kafka.events_topic) - BATCH_OVERHEAD_BYTES


def topic_configs(kafka: KafkaSection, topic: str) -> dict[str, str]:
    """Configs of a new topic: its size limit; the events topic is also compacted (the last
    event per track id is kept forever, so a new consumer bootstraps the current tags)."""
    configs = {"max.message.bytes": str(topic_max_bytes(kafka, topic))}
    if topic == kafka.events_topic:
        configs["cleanup.policy"] = "compact"
    return configs


#: Framing of a one-record batch around a dead letter (header, record fields, key), generously.
LETTER_FRAMING_BYTES = 1024


def dead_letter_max_bytes(kafka: KafkaSection, topic_limit: int | None = None) -> int:
    """Most bytes of one dead letter's JSON: what the dead-letter topic accepts (its
    ``max.message.bytes`` as read from the broker, at most the limit :func:`ensure_topics`
    gives it) less one record's framing. The producer's request limit is set above it."""
    ours = topic_max_bytes(kafka, kafka.dlq_topic)
    limit = ours if topic_limit is None else min(topic_limit, ours)
    return limit - LETTER_FRAMING_BYTES


@contextlib.contextmanager
def _client_logs_quiet() -> Iterator[None]:
    """kafka-python's connection loggers silenced for one call whose failure we handle (it logs
    a dropped connection as ERROR, which a user would read as a fault of ours)."""
    loggers = [logging.getLogger(name) for name in ("kafka.net", "kafka.conn", "kafka.client")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def topic_limit(kafka: KafkaSection, topic: str) -> int | None:
    """``topic``'s ``max.message.bytes`` as the broker reports it; None when the broker cannot
    say (Tansu does not answer DescribeConfigs) or the topic has no such entry."""
    admin = make_admin(kafka)
    try:
        with _client_logs_quiet():  # a broker that hangs up on the request is an answer too
            result = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic,
                                configs={"max.message.bytes": None})],
                config_filter="all")  # the default counts too: Apache Kafka's is 1 MiB
    finally:
        admin.close()
    entry = result.get("topic", {}).get(topic, {}).get("max.message.bytes") or {}
    value = entry.get("value")
    return int(value) if value not in (None, "") else None


def fetch_limits(kafka: KafkaSection) -> dict[str, int]:
    """Consumer fetch sizes from the message cap: per partition, one track batch at the topic's
    limit (the broker still returns a larger first batch whole, so progress never stops); per
    fetch, four partitions' worth. Bounds compressed bytes held before the client inflates them."""
    per_partition = topic_max_bytes(kafka, kafka.topic)
    return {"max_partition_fetch_bytes": per_partition, "fetch_max_bytes": 4 * per_partition}


def ensure_topics(kafka: KafkaSection, topics: list[str] | None = None) -> list[str]:
    """Create the track and dead-letter topics (or ``topics``) when missing, with their
    configs (:func:`topic_configs`); returns those created."""
    wanted = topics or [kafka.topic, kafka.dlq_topic]
    admin = make_admin(kafka)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics([
                    NewTopic(t, kafka.partitions, kafka.replication_factor,
                             topic_configs=topic_configs(kafka, t))
                    for t in missing
                ])
            except TopicAlreadyExistsError:
                pass  # another process won the race; fine
            log.info("kafka.topics_created", extra={"topics": missing,
                                                    "partitions": kafka.partitions})
        return missing
    finally:
        admin.close()


def make_producer(kafka: KafkaSection, **overrides: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and retries transient failures."""
    conf: dict[str, Any] = {
        **kafka.client_config(),
        "acks": "all",
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,  # keeps per-key order across retries
        # Idempotent producers break for good when the broker forgets producer ids (a restarted
        # broker: UnknownProducerIdError forever). Order holds with one request in flight and
        # duplicates are harmless: every consumer of these topics writes idempotently.
        "enable_idempotence": False,
        # Dead letters reach the dead-letter topic's limit (bounded by dead_letter_max_bytes);
        # the client must not refuse them first (its default is 1 MiB).
        "max_request_size": max(topic_max_bytes(kafka, kafka.dlq_topic), 1024 * 1024),
    }
    conf.update(overrides)
    return KafkaProducer(**conf)


def make_consumer(kafka: KafkaSection, group_id: str, **overrides: Any) -> KafkaConsumer:
    """A group member with manual commits; fast group joins (session 6 s, heartbeat 1 s);
    fetches sized from the message cap (:func:`fetch_limits`); batches it cannot read, or that
    inflate beyond ``max_batch_bytes``, arrive as one parked record (:mod:`genretag.core.batches`)."""
    install_batch_guard(kafka.max_batch_bytes)
    conf: dict[str, Any] = {
        **kafka.client_config(),
        **fetch_limits(kafka),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    conf.update(overrides)
    return KafkaConsumer(**conf)
