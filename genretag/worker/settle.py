"""Settling a finished batch, in one order: dead letters (acked) → sinks in order → commit.

This is the one write path, used by the consume loop (each step under the retry policy,
polling paused meanwhile) and by the rebalance listener (each step once, ``urgent``: short
timeouts, because a revoke cannot wait). Each step is done at most once per job (the Job
remembers it), so a step the listener finished is skipped by the loop and the reverse; the
batch is counted once, after its last sink.

A track an output refuses for good (e.g. its own Redis key holds another type: ``TRACKKEY``)
is dead-lettered on its own within that sink's step: its letter is published (acked), its
outcome becomes that letter, and that sink and the ones before it write the letter (the tag
store keeps it in its dead-letter hash, so `genretag dlq list` shows it); the rest of the
batch is written as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import DeadLetter, ReasonCode, TrackRef
from genretag.worker.checkpoint import Offsets, next_offsets
from genretag.worker.job import Job, Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.sinks import Sink
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
#: Commits a settled batch's offsets; False when the job was settled or dropped meanwhile.
Commit = Callable[[Offsets], bool]


class Settle:
    """The ordered settle of one job: DLQ publish, each sink, counting, commit."""

    def __init__(self, dlq: Any, dlq_topic: str, sinks: Sequence[Sink], stats: WorkerStats,
                 metrics: WorkerMetrics, dead_letter: DeadLetterBuilder) -> None:
        self.dlq = dlq
        self.dlq_topic = dlq_topic
        self.sinks = list(sinks)
        self.stats = stats
        self.metrics = metrics
        self.dead_letter = dead_letter  # for tracks a sink refuses (Processor.dead_letter)

    def run(self, job: Job, attempt: Attempt, commit: Commit, *, urgent: bool = False) -> bool:
        """Settle ``job``; False if ``attempt`` gave up on a step or ``commit`` did (a job
        already settled, by the other path, is True: nothing is left to do)."""
        if job.settled:
            return True
        kept = job.result()
        dead = [o.dead for o in kept if o.dead]
        if dead and not self._step(job, "dlq", "dlq", lambda: self._publish(dead), attempt):
            return False
        started = time.perf_counter()
        for sink in self.sinks if kept else ():
            if not self._step(job, f"sink:{sink.name}", sink.operation,
                              lambda sink=sink: self._write(job, sink, urgent), attempt):
                return False
        self.metrics.stage_seconds.labels(stage="write").observe(time.perf_counter() - started)
        if job.mark_step("counted"):
            self._account(job, job.kept())
        offsets = next_offsets(job.kept())  # dropped partitions excluded
        if offsets and not commit(offsets):
            return False
        job.mark_settled()
        return True

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    # -- steps -------------------------------------------------------------------------------
    @staticmethod
    def _step(job: Job, step: str, what: str, action: Callable[[], bool],
              attempt: Attempt) -> bool:
        """Run ``action`` unless ``step`` is done; True once it is, False if abandoned."""
        if job.step_done(step):
            return True
        if attempt(action, what) is None:
            return False
        job.mark_step(step)
        return True

    def _publish(self, dead: list[DeadLetter]) -> bool:
        send_dead_letters(self.dlq, self.dlq_topic, dead)
        return True

    def _write(self, job: Job, sink: Sink, urgent: bool) -> bool:
        refused = sink.write(job.kept(), urgent=urgent)
        if refused:
            letters = self._dead_letter_refused(job, refused)
            dead = [job.outcomes[i] for i in letters]
            for written in self.sinks[: self.sinks.index(sink) + 1]:
                if again := written.write(dead, urgent=urgent):
                    raise RuntimeError(f"{written.name} refused dead letters too: {again}")
        return True

    def _dead_letter_refused(self, job: Job, refused: dict[str, str]) -> dict[int, DeadLetter]:
        """The kept outcomes of refused tracks become dead letters, published (acked)."""
        mine = {id(o) for o in job.kept()}
        letters: dict[int, DeadLetter] = {}
        for i, o in enumerate(job.outcomes):
            if id(o) in mine and o.record is not None and o.record.track_id in refused:
                why = refused[o.record.track_id]
                exc = PermanentError(ReasonCode.INTERNAL, f"output refused the tags: {why}",
                                     track_id=o.record.track_id, stage="store")
                letters[i] = self.dead_letter(job.messages[i], exc, o.ref, "store")
                log.error("worker.track_refused", extra={
                    "track_id": o.record.track_id, "batch_id": job.batch_id, "error": why})
        send_dead_letters(self.dlq, self.dlq_topic, list(letters.values()))
        job.mark_refused(letters)
        return letters

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
