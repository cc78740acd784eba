"""Kafka client construction from settings, plus idempotent topic creation.

Only the standard Kafka protocol through kafka-python, so the same code runs on Apache Kafka
and on the local Tansu broker.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from core.logs import get_logger
from core.settings import KafkaSettings

log = get_logger(__name__)


def make_admin(settings: KafkaSettings) -> KafkaAdminClient:
    return KafkaAdminClient(**settings.kafka_common())


def ensure_topics(settings: KafkaSettings, topics: list[str] | None = None) -> list[str]:
    """Create the track and dead-letter topics when missing; returns those created."""
    wanted = topics or [settings.kafka_topic, settings.kafka_dlq_topic]
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics([
                    NewTopic(t, settings.kafka_partitions, settings.kafka_replication_factor)
                    for t in missing
                ])
            except TopicAlreadyExistsError:
                pass  # another process won the race; fine
            log.info("kafka.topics_created", extra={"topics": missing,
                                                    "partitions": settings.kafka_partitions})
        return missing
    finally:
        admin.close()


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and retries transient failures."""
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        "acks": "all",
        "retries": 10,
        "max_in_flight_requests_per_connection": 1,  # keeps per-key order across retries
        # Idempotent producers break for good when the broker forgets producer ids (a restarted
        # broker: UnknownProducerIdError forever). Order holds with one request in flight and
        # duplicates are harmless: every consumer of these topics writes idempotently.
        "enable_idempotence": False,
    }
    conf.update(overrides)
    return KafkaProducer(**conf)


def make_consumer(settings: KafkaSettings, group_id: str, **overrides: Any) -> KafkaConsumer:
    """A group member with manual commits; fast group joins (session 6 s, heartbeat 1 s)."""
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    conf.update(overrides)
    return KafkaConsumer(**conf)
