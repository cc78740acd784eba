"""The worker loop: poll → submit batch → (next batch decodes) → write → commit, in one place.

At-least-once: offsets are committed only after Redis (tags) and the dead-letter topic have
accepted every outcome of the batch. Writes are idempotent, so a redelivery after a crash
leaves the same state. Transient failures (Redis/broker down) are retried with capped
exponential backoff and nothing is committed meanwhile.

The consumer is never starved of ``poll()``: while a batch decodes/runs the model, and between
retries, every assigned partition is paused and ``poll()`` keeps being called (it returns
nothing while paused), so neither a slow batch nor a long outage exceeds
``max_poll_interval_ms`` and evicts the worker. Partition moves are handled by
:class:`worker.rebalance.RebalanceListener` through :meth:`Worker.settle_revoked`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from kafka import TopicPartition
from kafka import errors as kafka_errors
from kafka.structs import MemberState, OffsetAndMetadata

from core.kafka import ensure_topics, make_consumer, make_producer
from core.logs import get_logger
from worker.settings import WorkerSettings
from core.tagstore import TagStore, connect
from core.errors import FATAL_ERRORS, TRANSIENT_ERRORS, GenretagError
from worker.health import HealthServer, HealthState
from worker.infer import Tagger
from worker.metrics import WorkerMetrics
from worker.process import Job, Outcome, Processor
from worker.rebalance import RebalanceListener

log = get_logger(__name__)
T = TypeVar("T")

#: Commit errors that mean "the group moved on without us": logged and survived.
COMMIT_REFUSED: tuple[type[BaseException], ...] = (
    kafka_errors.CommitFailedError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.RebalanceInProgressError,
)
PAUSED_POLL_S = 0.2  # poll cadence while partitions are paused (keeps the poll timer fresh)
REJOIN_POLL_MS = 1000  # poll() length while the member (re)joins the group
LAG_EVERY_S = 1.0
EARLY_CLOSE_CHECK_MS = 20  # with batch_close_when_idle: how often a waiting batch looks again


@dataclass
class WorkerStats:
    """Counts of one run (also printed by ``genretag work`` when it exits)."""

    tagged: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits: int = 0
    commit_failures: int = 0
    retries: int = 0
    dropped: int = 0
    abandoned: int = 0
    max_inflight: int = 0
    longest_batch_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


class GaveUp(GenretagError):
    """Stopping, and a dependency stayed down: the batch is left uncommitted (redelivered)."""


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its batches and exits. A second signal exits now."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGTERM/SIGINT (main thread only; elsewhere the caller sets the flag)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            log.warning("worker.forced_exit", extra={"signal": signum})
            os._exit(128 + signum)
        log.info("worker.stopping", extra={"signal": signum})
        self.event.set()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def next_offsets(outcomes: list[Outcome]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Offset + 1 of the last processed message of each partition (what Kafka expects)."""
    last: dict[TopicPartition, int] = {}
    for o in outcomes:
        tp = TopicPartition(o.topic, o.partition)
        last[tp] = max(last.get(tp, -1), o.offset)
    return {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()}


def send_dead_letters(producer, settings: WorkerSettings, dead: list) -> None:
    """Publish dead letters and wait for the broker's acknowledgement of each."""
    futures = [
        producer.send(settings.kafka_dlq_topic, key=d.track_id.encode() if d.track_id else None,
                      value=d.model_dump_json().encode())
        for d in dead
    ]
    producer.flush(timeout=30)
    for fut in futures:
        fut.get(timeout=30)


class Worker:
    """One consumer-group member: the consume loop plus its metrics, health and rebalance hooks."""

    def __init__(self, settings: WorkerSettings, *, until_idle: bool = False,
                 stop: StopFlag | None = None) -> None:
        self.settings = settings
        self.until_idle = until_idle
        self.stop = stop or StopFlag()
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(settings.worker_id)
        self.health = HealthState(settings.health_max_loop_age_s)
        self.server: HealthServer | None = None
        self.consumer = None
        self.dlq = None
        self.processor: Processor | None = None
        self.tagger: Tagger | None = None
        self.store: TagStore | None = None
        self.quick_store: TagStore | None = None  # short timeouts: probes and the listener
        # Shared with the rebalance listener (IO thread); never held across a consumer call.
        self._lock = threading.RLock()
        self.inflight: deque[Job] = deque()
        self.buffer: list = []  # polled records not yet in a batch
        self.assigned: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self._batch_seq = 0
        self._lag_at = 0.0
        self._gave_up = False
        self._rebalancing = False  # between a revoke and the next assignment
        self._lag_checked: set[TopicPartition] = set()  # committed offset fetched once
        self._pending_revoke: set[TopicPartition] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> WorkerStats:
        """Consume until stopped (or, with ``until_idle``, until idle for ``idle_exit_s``)."""
        self.stop.install()
        s = self.settings
        log.info("worker.starting", extra={"worker_id": s.worker_id, "settings": s.masked()})
        if s.metrics_port:
            self.server = HealthServer(s.metrics_host, s.metrics_port, self.metrics,
                                       self.health).start()
        graceful = False
        try:
            self._start()
            self._consume()
            graceful = True
        except GaveUp as exc:  # stopped while a dependency was still down at startup
            log.warning("worker.stopped_before_ready", extra={"error": str(exc)})
        finally:
            try:
                self._shutdown(drain=graceful)
            finally:
                self.stop.uninstall()
        return self.stats

    def _start(self) -> None:
        s = self.settings
        self.tagger = Tagger.load(s.model_path, s.device, s.torch_threads, half=s.half_precision,
                                  max_windows_per_call=s.inference_max_windows,
                                  optimize=s.optimize_model)
        self.metrics.model_info.labels(version=self.tagger.manifest.version,
                                       device=str(self.tagger.device)).set(1)
        self.store = TagStore(connect(s), s.redis_key_prefix, self.tagger.manifest.kinds)
        quick = s.model_copy(update={"redis_socket_timeout_s": min(1.0, s.redis_socket_timeout_s)})
        self.quick_store = TagStore(connect(quick), s.redis_key_prefix, self.tagger.manifest.kinds)
        self.health.redis_ping = self.quick_store.client.ping
        self.health.model_loaded = True
        self._retry(lambda: self.store.client.ping(), "redis_ping")
        self._retry(lambda: ensure_topics(s), "ensure_topics")
        self.dlq = make_producer(s)
        self.processor = Processor(s, self.tagger, self.metrics)
        self.consumer = make_consumer(
            s, s.group_id, session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
        )
        self.consumer.subscribe([s.kafka_topic], listener=RebalanceListener(self))

    def _consume(self) -> None:
        depth = self.settings.pipeline_depth
        idle_since = time.monotonic()
        self.health.tick()
        self.health.loop_started = True
        while not self.stop.is_set():
            messages = self._collect()
            if messages:
                self._submit(messages)
                idle_since = time.monotonic()
            # Keep up to depth-1 batches in flight while messages flow; drain when idle.
            while self.inflight and (len(self.inflight) >= depth or not messages
                                     or self.inflight[0].done()):
                if not self._finish(self.inflight[0]):
                    return
                idle_since = time.monotonic()
            self._update_lag()
            idle_s = time.monotonic() - idle_since
            if (not messages and not self.inflight and self.until_idle and self.health.joined
                    and idle_s > self.settings.idle_exit_s
                    and (self._drained() or idle_s > 5 * self.settings.idle_exit_s)):
                log.info("worker.idle_exit", extra={"idle_s": round(idle_s, 1),
                                                    "drained": self._drained()})
                return

    def _drained(self) -> bool:
        """Every assigned partition read up to its highwater (known from fetch responses).

        ``--until-idle`` waits for this, not just for quiet: right after a join the first
        fetches can take longer than ``idle_exit_s`` on a loaded machine.
        """
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            if highwater is None or self.consumer.position(tp) < highwater:
                return False
        return True

    def _shutdown(self, drain: bool) -> None:
        self.health.stopping = True
        try:
            with self._lock:  # stopped mid-rebalance: what is moving away is not ours to finish
                self._drop(self._pending_revoke)
            if drain:  # finish the in-flight batches: write, commit
                while self.inflight and not self._gave_up:
                    if not self._finish(self.inflight[0]):
                        break
        finally:
            if self.consumer is not None:
                self.consumer.close()  # revokes (listener settles) and leaves the group at once
            if self.dlq is not None:
                self.dlq.close(timeout=10)
            if self.processor is not None:
                self.processor.close()
            if self.server is not None:
                self.server.close()
            with self._lock:
                self.stats.abandoned += sum(len(j.kept()) for j in self.inflight if not j.settled)
            log.info("worker.stopped", extra={"worker_id": self.settings.worker_id,
                                              "stats": asdict(self.stats)})

    # -- polling ---------------------------------------------------------------------------
    def _poll(self, timeout_ms: int, max_records: int) -> int:
        """``poll()``; records go to the buffer (also while paused: newly assigned ones).

        While the member is (re)joining the group, poll back to back until it is stable:
        kafka-python 3.0 drops a JoinGroup/SyncGroup round whose response lands between two
        ``poll()`` calls and starts another one, so gaps between polls can stall a rebalance.
        """
        max_records = max(1, max_records)
        n = self._take(self.consumer.poll(timeout_ms=max(0, timeout_ms), max_records=max_records))
        while not self.stop.is_set() and self._joining():
            n += self._take(self.consumer.poll(timeout_ms=REJOIN_POLL_MS, max_records=max_records))
        return n

    def _take(self, polled: dict) -> int:
        self.health.tick()
        n = 0
        with self._lock:
            for records in polled.values():
                self.buffer.extend(records)
                n += len(records)
        if n:
            self.metrics.consumed.inc(n)
        return n

    def _joining(self) -> bool:
        """A rebalance is under way (our listener saw it start, or the member is not stable)."""
        return self._rebalancing or self.consumer.group_metadata().state != MemberState.STABLE

    def _pause(self) -> None:
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)

    def _resume(self) -> None:
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)

    def _keep_polling(self, seconds: float) -> None:
        """Wait ``seconds`` with every partition paused, polling so the group keeps us."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.consumer is None:
                self.stop.event.wait(min(PAUSED_POLL_S, remaining))
                continue
            self._pause()
            self._poll(int(min(PAUSED_POLL_S, remaining) * 1000), self.settings.batch_size)

    def _collect(self) -> list:
        """Up to ``batch_size`` records, waiting at most ``batch_max_wait_ms`` after the first.

        With ``batch_close_when_idle`` a partial batch closes early once
        :meth:`_idle_and_caught_up`: at light load the wait would only add latency, under a
        backlog batches still fill.
        """
        s = self.settings
        self._resume()
        with self._lock:
            have = len(self.buffer)
        deadline = time.monotonic() + s.batch_max_wait_ms / 1000 if have else None
        idle_timeout_ms = 50 if self.inflight else 500  # don't sit on finished work when idle
        while have < s.batch_size and not self.stop.is_set():
            if have and s.batch_close_when_idle and self._idle_and_caught_up():
                break
            if deadline is None:
                timeout_ms = idle_timeout_ms
            else:
                timeout_ms = int((deadline - time.monotonic()) * 1000)
                if s.batch_close_when_idle:  # look again soon: the in-flight work may finish
                    timeout_ms = min(timeout_ms, EARLY_CLOSE_CHECK_MS)
            self._poll(timeout_ms, s.batch_size - have)
            with self._lock:
                have = len(self.buffer)
            if have and deadline is None:
                deadline = time.monotonic() + s.batch_max_wait_ms / 1000
            if not have or time.monotonic() >= deadline:
                break
        with self._lock:
            batch, self.buffer = self.buffer[: s.batch_size], self.buffer[s.batch_size :]
        return batch

    def _idle_and_caught_up(self) -> bool:
        """No batch still decoding or in the model, and every partition read to its highwater.

        Then nothing is known to be coming that a wait could add to the batch, and nothing is
        running that the batch would queue behind: waiting would only add latency.
        """
        with self._lock:
            busy = any(not job.done() for job in self.inflight)
        return not busy and self._drained()

    # -- batches ---------------------------------------------------------------------------
    def _submit(self, messages: list) -> None:
        self._batch_seq += 1
        job = self.processor.submit(messages, f"{self.settings.worker_id}:{self._batch_seq}")
        with self._lock:
            self.inflight.append(job)
        self.metrics.batch_size.observe(len(messages))
        self.metrics.inflight_batches.set(len(self.inflight))
        self.stats.max_inflight = max(self.stats.max_inflight, len(self.inflight))

    def _finish(self, job: Job) -> bool:
        """Wait for the job (polling, paused), write, commit. False if stopping gave up on it."""
        try:
            while not job.wait(PAUSED_POLL_S):
                self._pause()  # one paused poll between waits keeps the group's poll timer fresh
                self._poll(0, self.settings.batch_size)
            kept = job.result()
            if not job.settled:
                self._write_and_commit(job, kept)
            return True
        except GaveUp as exc:
            self._gave_up = True
            log.warning("worker.batch_abandoned", extra={"batch_id": job.batch_id,
                                                         "error": str(exc)})
            return False
        finally:
            with self._lock:
                if job.settled or job.all_dropped():
                    self._discard(job)
            self.metrics.inflight_batches.set(len(self.inflight))

    def _discard(self, job: Job) -> None:
        try:
            self.inflight.remove(job)
        except ValueError:
            pass

    def _write_and_commit(self, job: Job, kept: list[Outcome]) -> None:
        """DLQ then Redis (each retried while transient), then commit; survive refused commits."""
        dead = [o.dead for o in kept if o.dead]
        if dead and not job.written_dlq:
            if self._retry(lambda: self._send_dlq(job, dead), "dlq", job) is None:
                return  # the listener settled or dropped it while we were retrying
        if not job.written:
            start = time.perf_counter()
            if self._retry(lambda: self._write_tags(job, kept), "redis_write", job) is None:
                return
            self.metrics.stage_seconds.labels(stage="write").observe(time.perf_counter() - start)
        offsets = next_offsets([o for o in kept if not job.is_dropped(o.tp)])
        if offsets:
            start = time.perf_counter()
            try:
                if self._retry(lambda: self._commit(offsets), "commit", job) is None:
                    return
                self.metrics.stage_seconds.labels(stage="commit").observe(
                    time.perf_counter() - start)
            except COMMIT_REFUSED as exc:  # rebalanced meanwhile: the new owner redoes it
                self.note_commit_failed(exc, during="batch")
        job.settled = True

    def _send_dlq(self, job: Job, dead: list) -> bool:
        send_dead_letters(self.dlq, self.settings, dead)
        job.written_dlq = True
        return True

    def _write_tags(self, job: Job, kept: list[Outcome]) -> bool:
        with self._lock:
            if job.written:
                return True
        self.store.write([o.record for o in kept if o.record], [o.dead for o in kept if o.dead])
        self._account(job, kept)
        return True

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        self.consumer.commit(offsets)
        self.note_committed(offsets, during="batch")
        return True

    def _account(self, job: Job, kept: list[Outcome]) -> None:
        """Counters, end-to-end latency and logs of a written batch (exactly once per job)."""
        with self._lock:
            if job.written:
                return
            job.written = True
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

    # -- retries ---------------------------------------------------------------------------
    def _retry(self, action: Callable[[], T], what: str, job: Job | None = None) -> T | None:
        """Run ``action`` until it succeeds, backing off on transient errors (capped doubling).

        Between tries the partitions are paused and polled. Returns None when ``job`` got
        settled or dropped meanwhile (by the rebalance listener). Raises :class:`GaveUp` when
        stopping and the backoff has reached its cap.
        """
        s = self.settings
        delay = s.retry_initial_backoff_s
        while True:
            try:
                return action()
            except TRANSIENT_ERRORS as exc:
                if isinstance(exc, FATAL_ERRORS):
                    raise
                self.stats.retries += 1
                self.metrics.retries.labels(what=what).inc()
                log.warning("worker.transient_error", extra={
                    "what": what, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay,
                    "batch_id": job.batch_id if job else None})
                if self.stop.is_set() and delay >= s.retry_max_backoff_s:
                    raise GaveUp(f"{what}: {type(exc).__name__}: {exc}") from exc
                self._keep_polling(delay)
                if job is not None and (job.settled or job.all_dropped()):
                    return None
                delay = min(delay * 2, s.retry_max_backoff_s)

    # -- rebalance hooks (IO thread, loop thread blocked in poll/close) ------------------------
    def settle_revoked(
            self, revoked: set[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """A rebalance starts: write finished batches (once); returns the offsets to commit.

        Unfinished work is kept until the new assignment is known (:meth:`on_assigned`): kafka-
        python keeps the fetch position of a partition that comes back, so its in-flight
        messages must be finished by us, while those of a partition that moved are dropped.
        """
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        with self._lock:
            self._rebalancing = True
            self.health.joined = False
            self._pending_revoke |= revoked
            if not revoked:  # kafka-python calls this with nothing on a first join
                return offsets
            for job in list(self.inflight):  # in order: stop at the first unfinished batch,
                if job.settled:              # later offsets can't be committed before it
                    continue
                if not (job.done() and self._settle_now(job)):
                    break
                offsets.update(next_offsets(job.kept()))
        self.metrics.rebalances.labels(kind="revoked").inc()
        log.info("worker.revoked", extra={
            "worker_id": self.settings.worker_id,
            "partitions": sorted(tp.partition for tp in revoked),
            "settled_partitions": sorted(tp.partition for tp in offsets)})
        return offsets

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """The rebalance is done: drop the work of partitions that moved away, note the new set."""
        with self._lock:
            gone = self._pending_revoke - assigned
            self._pending_revoke = set()
            self._lag_checked -= gone
            dropped = self._drop(gone)
            self.assigned = (self.assigned - gone) | assigned
            self._rebalancing = False
            self.health.joined = True
            self.health.assigned = len(self.assigned)
        self.metrics.assigned_partitions.set(len(self.assigned))
        self.metrics.rebalances.labels(kind="assigned").inc()
        log.info("worker.assigned", extra={
            "worker_id": self.settings.worker_id, "dropped": dropped,
            "partitions": sorted(tp.partition for tp in self.assigned)})

    def on_lost(self, lost: set[TopicPartition]) -> None:
        """Evicted: nothing can be committed; drop all work of the lost partitions."""
        with self._lock:
            self._rebalancing = True
            self.health.joined = False
            self._pending_revoke -= lost
            dropped = self._drop(lost)
            self.assigned -= lost
            self.health.assigned = len(self.assigned)
        self.metrics.assigned_partitions.set(len(self.assigned))
        self.metrics.rebalances.labels(kind="lost").inc()
        log.warning("worker.partitions_lost", extra={
            "worker_id": self.settings.worker_id,
            "partitions": sorted(tp.partition for tp in lost), "dropped": dropped})

    def _drop(self, partitions: set[TopicPartition]) -> int:
        """Give up polled, unsettled messages of ``partitions`` (their next owner redoes them)."""
        if not partitions:
            return 0
        dropped = sum(job.drop(partitions) for job in self.inflight if not job.settled)
        kept = [r for r in self.buffer if TopicPartition(r.topic, r.partition) not in partitions]
        dropped += len(self.buffer) - len(kept)
        self.buffer = kept
        for tp in partitions:
            self.committed.pop(tp, None)
            try:
                self.metrics.lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        if dropped:
            self.stats.dropped += dropped
            self.metrics.dropped.inc(dropped)
        return dropped

    def _settle_now(self, job: Job) -> bool:
        """One write attempt (short timeouts) of a finished job; False leaves it to be dropped."""
        try:
            kept = job.result()
            if not job.written:
                dead = [o.dead for o in kept if o.dead]
                if dead and not job.written_dlq:
                    send_dead_letters(self.dlq, self.settings, dead)
                    job.written_dlq = True
                self.quick_store.write([o.record for o in kept if o.record], dead)
                self._account(job, kept)
        except Exception as exc:  # noqa: BLE001 - can't settle now: drop, it is redelivered
            log.warning("worker.revoke_write_failed", extra={
                "batch_id": job.batch_id, "error": f"{type(exc).__name__}: {exc}"})
            return False
        job.settled = True
        return True

    def note_committed(self, offsets: dict[TopicPartition, OffsetAndMetadata], during: str) -> None:
        with self._lock:
            for tp, meta in offsets.items():
                if tp in self.assigned:  # after a revoke the next owner's commits count
                    self.committed[tp] = max(self.committed.get(tp, 0), meta.offset)
        self.stats.commits += 1
        self.metrics.commits.inc()
        log.debug("worker.committed", extra={
            "during": during, "offsets": {f"{tp.topic}:{tp.partition}": m.offset
                                          for tp, m in offsets.items()}})

    def note_commit_failed(self, exc: BaseException, during: str) -> None:
        self.stats.commit_failures += 1
        self.metrics.commit_failures.inc()
        log.warning("worker.commit_failed", extra={
            "during": during, "error": f"{type(exc).__name__}: {exc}"})

    # -- lag -------------------------------------------------------------------------------
    def _update_lag(self) -> None:
        """Highwater (from fetch responses) minus committed offset, per assigned partition."""
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            with self._lock:
                committed = self.committed.get(tp)
            if committed is None:
                if tp in self._lag_checked:  # the group has no commit here yet: wait for ours
                    continue
                self._lag_checked.add(tp)
                try:
                    committed = self.consumer.committed(tp, timeout_ms=2000)
                except Exception:  # noqa: BLE001 - lag is best effort
                    committed = None
                if committed is None:
                    continue
                with self._lock:
                    self.committed.setdefault(tp, committed)
            if highwater is not None:
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, highwater - committed))


def run(settings: WorkerSettings, until_idle: bool = False, stop: StopFlag | None = None,
        **_: Any) -> WorkerStats:
    """Run one worker in this thread until stopped (or idle with ``until_idle``)."""
    return Worker(settings, until_idle=until_idle, stop=stop).run()
