"""Message size limits on the real broker: topics created with them, fetches sized from them."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from genretag.core.kafka import ensure_topics, fetch_limits, make_consumer, make_producer, topic_max_bytes

pytestmark = pytest.mark.integration


def test_limits_follow_the_message_cap(worker_settings) -> None:
    s = worker_settings(max_message_bytes=8192)
    assert topic_max_bytes(s.kafka, s.kafka.topic) == 8192 + 16384
    assert topic_max_bytes(s.kafka, s.kafka.dlq_topic) > 3 * 8192  # a letter carries the original
    limits = fetch_limits(s.kafka)
    assert limits["max_partition_fetch_bytes"] == topic_max_bytes(s.kafka, s.kafka.topic)
    assert limits["fetch_max_bytes"] == 4 * limits["max_partition_fetch_bytes"]
    consumer = make_consumer(s.kafka, None)
    try:
        assert consumer.config["max_partition_fetch_bytes"] == limits["max_partition_fetch_bytes"]
        assert consumer.config["fetch_max_bytes"] == limits["fetch_max_bytes"]
    finally:
        consumer.close()


def test_topics_are_created_with_a_size_limit_and_big_batches_still_flow(worker_settings) -> None:
    """Tansu accepts the topic config; a batch over the fetch limit is still delivered whole."""
    s = worker_settings(max_message_bytes=4096, kafka_partitions=1)
    assert sorted(ensure_topics(s.kafka)) == sorted([s.kafka.topic, s.kafka.dlq_topic])
    producer = make_producer(s.kafka, compression_type="gzip", max_request_size=4 << 20)
    big = os.urandom(64 << 10)  # incompressible: 64 KiB on the wire, over the 20 KiB fetch limit
    for value in (big, b"{}"):
        producer.send(s.kafka.topic, value).get(timeout=30)
    producer.close()
    consumer = make_consumer(s.kafka, f"limits-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([s.kafka.topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += [r.value for r in records]
    finally:
        consumer.close()
    assert [len(v) for v in got] == [len(big), 2]  # never stuck behind an oversized batch
