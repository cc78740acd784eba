"""Settling a finished batch: dead letters to the DLQ topic (acked), then Redis, then counting.

This is the one write path. The consume loop runs each step under the retry policy (backing
off while polling paused); the rebalance listener runs each step once, with a short-timeout
Redis client, because a revoke cannot wait. Each step is idempotent per job (the Job remembers
what was done), so a step the listener finished is skipped by the loop and the reverse.
The commit that follows is the caller's (:class:`genretag.worker.checkpoint.Checkpoint`).

A track whose own Redis key refuses its tags (a stale key of another type, unreadable old
labels: ``TRACKKEY`` from :meth:`genretag.core.tagstore.TagStore.write`) is dead-lettered on its own,
within the write step: its letter is published (acked), its outcome becomes that letter, and
the letter is written to the dlq hash; the rest of the batch is written as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.core.tagstore import TagStore
from genretag.schemas import DeadLetter, ReasonCode, TrackRef
from genretag.worker.job import Job, Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.stats import WorkerStats

log = get_logger(__name__)


class Attempt(Protocol):
    """How a step is run: ``attempt(step, what)`` returns the step's result, or None if the
    caller gave up on it meanwhile (the job was settled or dropped by someone else)."""

    def __call__(self, step: Callable[[], bool], what: str) -> bool | None: ...


def once(step: Callable[[], bool], what: str) -> bool | None:  # noqa: ARG001 - Attempt shape
    """Run the step a single time; its exception propagates (the revocation variant)."""
    return step()


def send_dead_letters(producer: Any, topic: str, dead: list[DeadLetter],
                      timeout_s: float = 30) -> None:
    """Publish dead letters and wait for the broker's acknowledgement of each."""
    futures = [
        producer.send(topic, key=d.track_id.encode() if d.track_id else None,
                      value=d.model_dump_json().encode())
        for d in dead
    ]
    producer.flush(timeout=timeout_s)
    for fut in futures:
        fut.get(timeout=timeout_s)


#: Builds a message's dead letter: (message, error, its TrackRef or None, stage) → DeadLetter.
DeadLetterBuilder = Callable[[Any, Exception, TrackRef | None, str], DeadLetter]


class Settler:
    """DLQ publish + Redis write + accounting of one job, each step at most once per job."""

    def __init__(self, dlq: Any, dlq_topic: str, stats: WorkerStats,
                 metrics: WorkerMetrics, dead_letter: DeadLetterBuilder | None = None) -> None:
        self.dlq = dlq
        self.dlq_topic = dlq_topic
        self.stats = stats
        self.metrics = metrics
        self.dead_letter = dead_letter  # for tracks Redis refuses (Processor.dead_letter)

    def settle(self, job: Job, store: TagStore, attempt: Attempt) -> bool:
        """DLQ (acked) then Redis then count; False if ``attempt`` gave up on a step."""
        kept = job.result()
        dead = [o.dead for o in kept if o.dead]
        if dead and not job.dlq_acked:
            if attempt(lambda: self._publish(job, dead), "dlq") is None:
                return False
        if not job.written:
            start = time.perf_counter()
            if attempt(lambda: self._write(job, kept, store), "redis_write") is None:
                return False
            self.metrics.stage_seconds.labels(stage="write").observe(time.perf_counter() - start)
        return True

    def _publish(self, job: Job, dead: list[DeadLetter]) -> bool:
        send_dead_letters(self.dlq, self.dlq_topic, dead)
        job.mark_dlq_acked()
        return True

    def _write(self, job: Job, kept: list[Outcome], store: TagStore) -> bool:
        if job.written:
            return True
        refused = store.write([o.record for o in kept if o.record],
                              [o.dead for o in kept if o.dead])
        if refused:
            self._dead_letter_refused(job, kept, refused, store)
        if job.mark_written():
            self._account(job, kept)
        return True

    def _dead_letter_refused(self, job: Job, kept: list[Outcome], refused: dict[str, str],
                             store: TagStore) -> None:
        """Dead-letter the tracks whose own key refused their tags: DLQ (acked), then Redis."""
        if self.dead_letter is None:
            raise RuntimeError(f"Redis refused tracks and no dead-letter builder: {refused}")
        mine = {id(o) for o in kept}
        letters: dict[int, DeadLetter] = {}
        for i, o in enumerate(job.outcomes):
            if id(o) in mine and o.record is not None and o.record.track_id in refused:
                why = refused[o.record.track_id]
                exc = PermanentError(ReasonCode.INTERNAL, f"Redis refused the tags: {why}",
                                     track_id=o.record.track_id, stage="store")
                letters[i] = self.dead_letter(job.messages[i], exc, o.ref, "store")
                log.error("worker.track_refused", extra={
                    "track_id": o.record.track_id, "batch_id": job.batch_id, "error": why})
        send_dead_letters(self.dlq, self.dlq_topic, list(letters.values()))
        job.mark_refused(letters)
        if again := store.write([], list(letters.values())):  # their dlq entries only
            raise RuntimeError(f"dead letters refused by Redis: {again}")

    def _account(self, job: Job, kept: list[Outcome]) -> None:
        """Counters, end-to-end latency and logs of a written batch (exactly once per job)."""
        now = datetime.now(UTC)
        records = [o for o in kept if o.record]
        dead = [o.dead for o in kept if o.dead]
        s, m = self.stats, self.metrics
        s.batches += 1
        s.tagged += len(records)
        s.dead_lettered += len(dead)
        m.tagged.inc(len(records))
        for o in records:
            if o.enqueued_at is not None:
                m.end_to_end.observe(max(0.0, (now - o.enqueued_at).total_seconds()))
            log.debug("worker.track_tagged", extra={
                "track_id": o.record.track_id, "batch_id": job.batch_id,
                "model_version": o.record.model_version, "labels": o.record.labels})
        for d in dead:
            s.reasons[d.reason.value] = s.reasons.get(d.reason.value, 0) + 1
            m.dead_letters.labels(reason=d.reason.value).inc()
            log.warning("worker.dead_letter", extra={
                "track_id": d.track_id, "batch_id": job.batch_id, "reason": d.reason.value,
                "detail": d.detail, "partition": d.source_partition, "offset": d.source_offset})
        seconds = time.monotonic() - job.created
        s.longest_batch_s = max(s.longest_batch_s, round(seconds, 3))
        log.info("core.audio.windows", extra={
            "batch_id": job.batch_id, "size": len(job.messages), "tagged": len(records),
            "dead": len(dead), "dropped": len(job.messages) - len(kept),
            "track_ids": [o.record.track_id for o in records], "seconds": round(seconds, 3)})
