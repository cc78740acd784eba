"""The worker loop: poll → collect a batch → process → settle (DLQ → sinks → commit).

At-least-once: offsets are committed only after the dead-letter topic and every sink (the
Redis tag store first) have accepted every outcome of the batch (:mod:`genretag.worker.settle`,
the one write path). Writes are idempotent,
so a redelivery after a crash leaves the same state. Transient failures are retried under
:class:`genretag.worker.retry.RetryPolicy` and nothing is committed meanwhile; the consumer keeps
polling with its partitions paused (:mod:`genretag.worker.poller`), so the group never evicts us.
Offsets and lag live in :class:`genretag.worker.checkpoint.Checkpoint`; partition moves reach this
class through :class:`genretag.worker.rebalance.RebalanceListener`'s three hooks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

import redis.exceptions

from genretag.core.errors import FATAL_ERRORS, RedisUnusable
from genretag.core.kafka import ensure_topics, make_consumer, make_producer
from genretag.core.logs import get_logger
from genretag.core.reach import HINT
from genretag.core.store import connect
from genretag.core.store.eviction import check_eviction_policy
from genretag.worker.deadletter import letter_bound
from genretag.worker.checkpoint import COMMIT_REFUSED, Checkpoint, Offsets, next_offsets
from genretag.worker.health import HealthServer, HealthState
from genretag.worker.inflight import InFlight
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.modelset import ModelSet
from genretag.worker.poller import PAUSED_POLL_S, Poller
from genretag.worker.process import Processor
from genretag.worker.rebalance import RebalanceListener
from genretag.worker.retry import GaveUp, RetryPolicy
from genretag.worker.retrying import Retrier
from genretag.worker.settings import WorkerSettings
from genretag.worker.settle import Attempt, Settle
from genretag.worker.sinks import SinkContext, build_sinks
from genretag.worker.stats import WorkerStats
from genretag.worker.stop import StopFlag

__all__ = ["GaveUp", "StopFlag", "Worker", "WorkerStats", "next_offsets", "run"]

log = get_logger(__name__)
#: Socket timeout of the Redis client behind the probes (readiness answers fast).
PROBE_TIMEOUT_S = 1.0


class Worker:
    """One consumer-group member: the consume loop, its parts, and the rebalance hooks."""

    def __init__(self, settings: WorkerSettings, *, until_idle: bool = False,
                 stop: StopFlag | None = None) -> None:
        self.settings = settings
        self.until_idle = until_idle
        self.stop = stop or StopFlag()
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(settings.worker_id)
        self.health = HealthState(settings.health.max_loop_age_s)
        policy = RetryPolicy(settings.retry.initial_backoff_s, settings.retry.max_backoff_s)
        self.retrier = Retrier(policy, self.stop, self.stats, self.metrics, self.health)
        self.server: HealthServer | None = None
        self.consumer = None
        self.poller: Poller | None = None
        self.checkpoint: Checkpoint | None = None
        self.settle: Settle | None = None
        self.processor: Processor | None = None
        # Shared with the rebalance listener (IO thread); never held across a consumer call.
        self._lock = threading.RLock()
        self.inflight: InFlight | None = None  # the batches in flight; the listener's hooks
        self._batch_seq = 0

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> WorkerStats:
        """Consume until stopped (or, with ``until_idle``, until idle for ``idle_exit_s``)."""
        self.stop.install()
        s = self.settings
        log.info("worker.starting", extra={"worker_id": s.worker_id, "settings": s.masked()})
        if s.health.metrics_port:
            self.server = HealthServer(s.health.metrics_host, s.health.metrics_port,
                                       self.metrics, self.health).start()
        try:
            self._start()
            self._consume()
        except GaveUp as exc:  # stopped while a dependency was still down at startup
            log.warning("worker.stopped_before_ready", extra={"error": str(exc)})
        except redis.exceptions.ResponseError as exc:  # a reply no retry fixes (not auth/ACL)
            if isinstance(exc, FATAL_ERRORS):
                raise
            raise RedisUnusable(f"Redis at {s.redis.url} refused: {str(exc)[:300]}") from exc
        finally:
            try:
                self._shutdown()
            finally:
                self.stop.uninstall()
        return self.stats

    def _start(self) -> None:
        s = self.settings
        models = ModelSet.load(s.model)
        for member in models.members:
            self.metrics.model_info.labels(version=member.tagger.manifest.version,
                                           device=str(member.tagger.device)).set(1)
        probe = connect(s.redis, socket_timeout_s=min(PROBE_TIMEOUT_S, s.redis.socket_timeout_s))
        self.health.redis_ping = probe.ping
        self.health.model_loaded = True
        # A batch run (--until-idle) with Redis or the broker down or refusing must end, and say
        # why (exit 3); a service keeps retrying (its probes report it).
        deadline = time.monotonic() + s.health.startup_timeout_s if self.until_idle else None
        wait, brokers = f"{s.health.startup_timeout_s:g} s", ",".join(s.kafka.bootstrap_servers)
        self.retrier.run(probe.ping, "redis_ping", deadline=deadline,
                         unreachable=f"Redis at {s.redis.url} not usable within {wait}: {HINT}")
        self.retrier.run(lambda: check_eviction_policy(probe, s.redis) or True, "redis_policy",
                         deadline=deadline,
                         unreachable=f"Redis at {s.redis.url} not usable within {wait}: {HINT}")
        self.retrier.run(lambda: ensure_topics(s.kafka), "ensure_topics", deadline=deadline,
                         unreachable=f"Kafka broker at {brokers} not usable within {wait}: {HINT}")
        self.processor = Processor(s, models, self.metrics,
                                   letter_max_bytes=letter_bound(s.kafka))
        sinks = build_sinks(s, SinkContext(models.primary.manifest, self.metrics,
                                           tuple(models.namespaced())))
        self.settle = Settle(make_producer(s.kafka), s.kafka.dlq_topic, sinks, self.stats,
                             self.metrics, dead_letter=self.processor.dead_letter)
        c = s.consumer
        self.consumer = make_consumer(s.kafka, c.group_id,
                                      session_timeout_ms=c.session_timeout_ms,
                                      heartbeat_interval_ms=c.heartbeat_interval_ms,
                                      max_poll_interval_ms=c.max_poll_interval_ms)
        self.poller = Poller(self.consumer, s.batching, stop=self.stop.event, health=self.health,
                             metrics=self.metrics, lock=self._lock)
        self.retrier.poller = self.poller
        self.checkpoint = Checkpoint(self.consumer, self.stats, self.metrics)
        self.inflight = InFlight(worker_id=s.worker_id, settle=self.settle, poller=self.poller,
                                 checkpoint=self.checkpoint, health=self.health,
                                 metrics=self.metrics, stats=self.stats, lock=self._lock)
        self.consumer.subscribe([s.kafka.topic],
                                listener=RebalanceListener(self.inflight, self.checkpoint))

    def _consume(self) -> None:
        """The loop: poll → collect a batch → process → settle (DLQ → sinks → commit).

        On stop it takes no new batch and finishes the ones in flight; if stopping gives up
        on one (a dependency stays down), the rest is left uncommitted and redelivered.
        """
        idle_since = time.monotonic()
        self.health.tick()
        self.health.loop_started = True
        while True:
            stopping = self.stop.is_set()
            if stopping:  # stopped mid-rebalance: what is moving away is not ours to finish
                self.inflight.drop_pending()
            # Poll and collect a batch (closed early when idle; shorter waits with work running).
            batch = [] if stopping else self.poller.collect(
                self.inflight.busy, idle_timeout_ms=50 if self.inflight else 500)
            if batch:  # process: decodes start now, the model pass queues behind earlier batches
                self._batch_seq += 1
                batch_id = f"{self.settings.worker_id}:{self._batch_seq}"
                self.inflight.add(self.processor.submit(batch, batch_id))
                self.metrics.batch_size.observe(len(batch))
                idle_since = time.monotonic()
            try:
                if self._drain(keep=0 if stopping or not batch else
                               self.settings.batching.pipeline_depth - 1):
                    idle_since = time.monotonic()
            except GaveUp:  # stopping, a dependency stays down: the rest is redelivered
                return
            if stopping:
                return
            self.checkpoint.update_lag()
            if self._idle_exit(bool(batch), time.monotonic() - idle_since):
                return

    def _drain(self, keep: int) -> bool:
        """Settle the oldest batches until ``keep`` are in flight (finished ones always);
        True if any was settled. Raises GaveUp when stopping gives up on a batch."""
        drained = False
        while self.inflight and (len(self.inflight) > keep or self.inflight.head().done()):
            job = self.inflight.head()
            try:
                while not job.wait(PAUSED_POLL_S):  # paused polls keep our group membership
                    self.poller.paused_poll()
                attempt = self.retrier.attempt(job)
                self.settle.run(job, attempt, lambda offsets: self._commit(offsets, attempt))
            except GaveUp as exc:  # a dependency stays down while stopping: redelivered
                log.warning("worker.batch_abandoned", extra={"batch_id": job.batch_id,
                                                             "error": str(exc)})
                raise
            finally:
                self.inflight.retire(job)
            drained = True
        return drained

    def _idle_exit(self, polled: bool, idle_s: float) -> bool:
        """With ``--until-idle``: nothing polled or running for ``idle_exit_s``, topic drained."""
        limit = self.settings.health.idle_exit_s
        if (polled or self.inflight or not self.until_idle or not self.health.joined
                or idle_s <= limit):
            return False
        drained = self.poller.drained()
        if drained or idle_s > 5 * limit:
            log.info("worker.idle_exit", extra={"idle_s": round(idle_s, 1), "drained": drained})
            return True
        return False

    def _shutdown(self) -> None:
        """Leave the group (the listener settles what it can), close everything, log stats."""
        self.health.stopping = True
        try:
            if self.inflight is not None:  # stopped mid-rebalance: moving away, not ours
                self.inflight.drop_pending()
        finally:
            if self.consumer is not None:
                self.consumer.close()  # revokes (listener settles) and leaves the group at once
            if self.settle is not None:
                self.settle.dlq.close(timeout=10)
                self.settle.close()
            if self.processor is not None:
                self.processor.close()
            if self.server is not None:
                self.server.close()
            if self.inflight is not None:
                self.stats.abandoned += self.inflight.unsettled_messages()
            log.info("worker.stopped", extra={"worker_id": self.settings.worker_id,
                                              "stats": asdict(self.stats)})

    def _commit(self, offsets: Offsets, attempt: Attempt) -> bool:
        """Commit under the retry policy; a refused commit (group moved on) is survived.

        False when the job was settled or dropped meanwhile (by the rebalance listener).
        """
        start = time.perf_counter()
        try:
            if attempt(lambda: self.checkpoint.commit(offsets) or True, "commit") is None:
                return False
            self.metrics.stage_seconds.labels(stage="commit").observe(time.perf_counter() - start)
        except COMMIT_REFUSED as exc:  # rebalanced meanwhile: the new owner redoes it
            self.checkpoint.note_commit_failed(exc, during="batch")
        return True


def run(settings: WorkerSettings, until_idle: bool = False, stop: StopFlag | None = None,
        **_: Any) -> WorkerStats:
    """Run one worker in this thread until stopped (or idle with ``until_idle``)."""
    return Worker(settings, until_idle=until_idle, stop=stop).run()
