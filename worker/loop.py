"""The worker loop: poll → process → write → commit, visible in one place.

At-least-once: offsets are committed only after Redis (tags) and the dead-letter topic have
accepted every outcome of the batch. Writes are idempotent, so a redelivery after a crash
leaves the same state. Transient failures (Redis/broker down) are retried with capped
exponential backoff and nothing is committed meanwhile.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from kafka import TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from genretag.kafka import ensure_topics, make_consumer, make_producer
from genretag.logs import get_logger
from genretag.settings import WorkerSettings
from genretag.tagstore import TagStore, connect
from worker.errors import TRANSIENT_ERRORS
from worker.infer import Tagger
from worker.process import Outcome, Processor

log = get_logger(__name__)
T = TypeVar("T")


@dataclass
class WorkerStats:
    tagged: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits: int = 0
    commit_failures: int = 0
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its batch and exits. A second signal exits now."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            log.warning("worker.forced_exit", extra={"signal": signum})
            os._exit(128 + signum)
        log.info("worker.stopping", extra={"signal": signum})
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def retry(action: Callable[[], T], settings: WorkerSettings, stop: StopFlag, stats: WorkerStats,
          what: str) -> T:
    """Run ``action`` until it succeeds, backing off on transient errors (1, 2, 4… ≤ cap s)."""
    delay = 0.5
    while True:
        try:
            return action()
        except TRANSIENT_ERRORS as exc:
            stats.retries += 1
            log.warning("worker.transient_error",
                        extra={"what": what, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay})
            if stop.is_set() and delay >= settings.retry_max_backoff_s:
                raise
            time.sleep(delay)
            delay = min(delay * 2, settings.retry_max_backoff_s)


def next_offsets(outcomes: list[Outcome]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Offset + 1 of the last processed message of each partition (what Kafka expects)."""
    last: dict[TopicPartition, int] = {}
    for o in outcomes:
        tp = TopicPartition(o.topic, o.partition)
        last[tp] = max(last.get(tp, -1), o.offset)
    return {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()}


def collect_batch(consumer, settings: WorkerSettings, stop: StopFlag) -> list:
    """Poll until ``batch_size`` messages or ``batch_max_wait_ms`` since the first one arrived."""
    batch: list = []
    deadline: float | None = None
    while len(batch) < settings.batch_size and not stop.is_set():
        timeout_ms = 500 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        polled = consumer.poll(timeout_ms=timeout_ms, max_records=settings.batch_size - len(batch))
        for records in polled.values():
            batch.extend(records)
        if batch and deadline is None:
            deadline = time.monotonic() + settings.batch_max_wait_ms / 1000
        if not batch or time.monotonic() >= (deadline or 0):
            break
    return batch


def run(settings: WorkerSettings, until_idle: bool = False, stop: StopFlag | None = None) -> WorkerStats:
    """Consume until stopped (or, with ``until_idle``, until no message came for idle_exit_s)."""
    stop = stop or StopFlag()
    stop.install()
    log.info("worker.starting", extra={"settings": settings.masked()})
    tagger = Tagger.load(settings.model_path, settings.device, settings.torch_threads)
    store = TagStore(connect(settings), settings.redis_key_prefix)
    stats = WorkerStats()
    retry(lambda: store.client.ping(), settings, stop, stats, "redis_ping")
    retry(lambda: ensure_topics(settings), settings, stop, stats, "ensure_topics")
    dlq = make_producer(settings)
    consumer = make_consumer(settings, settings.group_id,
                             max_poll_interval_ms=settings.max_poll_interval_ms)
    consumer.subscribe([settings.kafka_topic])
    pool = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="decode")
    processor = Processor(settings, tagger, pool)
    idle_since = time.monotonic()
    try:
        while not stop.is_set():
            messages = collect_batch(consumer, settings, stop)
            if not messages:
                if until_idle and consumer.assignment() and \
                        time.monotonic() - idle_since > settings.idle_exit_s:
                    log.info("worker.idle_exit", extra={"idle_s": settings.idle_exit_s})
                    break
                continue
            outcomes = processor.process(messages)
            records = [o.record for o in outcomes if o.record]
            dead = [o.dead for o in outcomes if o.dead]
            if dead:
                retry(lambda: send_dead_letters(dlq, settings, dead), settings, stop, stats, "dlq")
            retry(lambda: store.write(records, dead), settings, stop, stats, "redis_write")
            try:
                consumer.commit(next_offsets(outcomes))
                stats.commits += 1
            except CommitFailedError as exc:  # rebalanced meanwhile: the new owner redoes it
                stats.commit_failures += 1
                log.warning("worker.commit_failed", extra={"error": str(exc)})
            stats.batches += 1
            stats.tagged += len(records)
            stats.dead_lettered += len(dead)
            for d in dead:
                stats.reasons[d.reason.value] = stats.reasons.get(d.reason.value, 0) + 1
                log.warning("worker.dead_letter", extra={
                    "track_id": d.track_id, "reason": d.reason.value, "detail": d.detail,
                    "partition": d.source_partition, "offset": d.source_offset})
            log.info("worker.batch", extra={"batch": stats.batches, "size": len(messages),
                                            "tagged": len(records), "dead": len(dead)})
            idle_since = time.monotonic()
    finally:
        consumer.close()  # leaves the group so partitions move at once
        dlq.close()
        pool.shutdown(wait=True, cancel_futures=True)
        log.info("worker.stopped", extra={"stats": stats.__dict__})
    return stats


def send_dead_letters(producer, settings: WorkerSettings, dead: list) -> None:
    """Publish dead letters and wait for the broker's acknowledgement of each."""
    futures = [
        producer.send(settings.kafka_dlq_topic, key=d.track_id.encode() if d.track_id else None,
                      value=d.model_dump_json().encode())
        for d in dead
    ]
    producer.flush()
    for fut in futures:
        fut.get(timeout=30)
