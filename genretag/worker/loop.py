"""The worker loop: poll → collect a batch → process → settle (DLQ + Redis) → commit.

At-least-once: offsets are committed only after the dead-letter topic and Redis have accepted
every outcome of the batch (:mod:`genretag.worker.settle`, the one write path). Writes are idempotent,
so a redelivery after a crash leaves the same state. Transient failures are retried under
:class:`genretag.worker.retry.RetryPolicy` and nothing is committed meanwhile; the consumer keeps
polling with its partitions paused (:mod:`genretag.worker.poller`), so the group never evicts us.
Offsets and lag live in :class:`genretag.worker.checkpoint.Checkpoint`; partition moves reach this
class through :class:`genretag.worker.rebalance.RebalanceListener`'s three hooks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import redis.exceptions

from genretag.core.errors import FATAL_ERRORS, RedisUnusable, is_redis_refusal, redis_error_code
from genretag.core.kafka import ensure_topics, make_consumer, make_producer
from genretag.core.logs import get_logger
from genretag.core.reach import HINT
from genretag.core.tagstore import TagStore, connect
from genretag.worker.checkpoint import COMMIT_REFUSED, Checkpoint, Offsets, next_offsets
from genretag.worker.health import HealthServer, HealthState
from genretag.worker.infer import Tagger
from genretag.worker.inflight import InFlight
from genretag.worker.job import Job
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.poller import PAUSED_POLL_S, Poller
from genretag.worker.process import ProcessOptions, Processor
from genretag.worker.rebalance import RebalanceListener
from genretag.worker.retry import GaveUp, RetryPolicy, retry
from genretag.worker.settings import WorkerSettings
from genretag.worker.settle import Settler
from genretag.worker.stats import WorkerStats
from genretag.worker.stop import StopFlag

__all__ = ["GaveUp", "StopFlag", "Worker", "WorkerStats", "next_offsets", "run"]

log = get_logger(__name__)
T = TypeVar("T")


class Worker:
    """One consumer-group member: the consume loop, its parts, and the rebalance hooks."""

    def __init__(self, settings: WorkerSettings, *, until_idle: bool = False,
                 stop: StopFlag | None = None) -> None:
        self.settings = settings
        self.until_idle = until_idle
        self.stop = stop or StopFlag()
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(settings.worker_id)
        self.health = HealthState(settings.health_max_loop_age_s)
        self.policy = RetryPolicy(settings.retry_initial_backoff_s, settings.retry_max_backoff_s)
        self.server: HealthServer | None = None
        self.consumer = None
        self.poller: Poller | None = None
        self.checkpoint: Checkpoint | None = None
        self.settler: Settler | None = None
        self.processor: Processor | None = None
        self.store: TagStore | None = None
        self.quick_store: TagStore | None = None  # short timeouts: probes and the listener
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
        if s.metrics_port:
            self.server = HealthServer(s.metrics_host, s.metrics_port, self.metrics,
                                       self.health).start()
        try:
            self._start()
            self._consume()
        except GaveUp as exc:  # stopped while a dependency was still down at startup
            log.warning("worker.stopped_before_ready", extra={"error": str(exc)})
        except redis.exceptions.ResponseError as exc:  # a reply no retry fixes (not auth/ACL)
            if isinstance(exc, FATAL_ERRORS):
                raise
            raise RedisUnusable(f"Redis at {s.redis_url} refused: {str(exc)[:300]}") from exc
        finally:
            try:
                self._shutdown()
            finally:
                self.stop.uninstall()
        return self.stats

    def _start(self) -> None:
        s = self.settings
        tagger = Tagger.load(s.model_path, s.device, s.torch_threads, half=s.half_precision,
                             max_windows_per_call=s.inference_max_windows,
                             optimize=s.optimize_model)
        self.metrics.model_info.labels(version=tagger.manifest.version,
                                       device=str(tagger.device)).set(1)
        kinds = tagger.manifest.kinds  # genre tags go to genre sets, other kinds to tag sets
        self.store = TagStore(connect(s), s.redis_key_prefix, kinds)
        quick = s.model_copy(update={"redis_socket_timeout_s": min(1.0, s.redis_socket_timeout_s)})
        self.quick_store = TagStore(connect(quick), s.redis_key_prefix, kinds)
        self.health.redis_ping = self.quick_store.client.ping
        self.health.model_loaded = True
        # A batch run (--until-idle) with Redis or the broker down or refusing must end, and say
        # why (exit 3); a service keeps retrying (its probes report it).
        deadline = time.monotonic() + s.startup_timeout_s if self.until_idle else None
        wait, brokers = f"{s.startup_timeout_s:g} s", ",".join(s.kafka_bootstrap_servers)
        self._retry(lambda: self.store.client.ping(), "redis_ping", deadline=deadline,
                    unreachable=f"Redis at {s.redis_url} not usable within {wait}: {HINT}")
        self._retry(lambda: ensure_topics(s), "ensure_topics", deadline=deadline,
                    unreachable=f"Kafka broker at {brokers} not usable within {wait}: {HINT}")
        self.processor = Processor(ProcessOptions.from_settings(s), tagger, self.metrics)
        self.settler = Settler(make_producer(s), s.kafka_dlq_topic, self.stats, self.metrics,
                               dead_letter=self.processor.dead_letter)
        self.consumer = make_consumer(
            s, s.group_id, session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
        )
        self.poller = Poller(self.consumer, batch_size=s.batch_size,
                             batch_max_wait_ms=s.batch_max_wait_ms,
                             close_when_idle=s.batch_close_when_idle, stop=self.stop.event,
                             health=self.health, metrics=self.metrics, lock=self._lock)
        self.checkpoint = Checkpoint(self.consumer, self.stats, self.metrics)
        self.inflight = InFlight(worker_id=s.worker_id, settler=self.settler,
                                 quick_store=self.quick_store, poller=self.poller,
                                 checkpoint=self.checkpoint, health=self.health,
                                 metrics=self.metrics, stats=self.stats, lock=self._lock)
        self.consumer.subscribe([s.kafka_topic],
                                listener=RebalanceListener(self.inflight, self.checkpoint))

    def _consume(self) -> None:
        """The loop: poll → collect a batch → process → settle (DLQ + Redis) → commit.

        On stop it takes no new batch and finishes the ones in flight; if stopping gives up
        on one (a dependency stays down), the rest is left uncommitted and redelivered.
        """
        s, idle_since = self.settings, time.monotonic()
        depth = s.pipeline_depth
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
                self.inflight.add(self.processor.submit(batch, f"{s.worker_id}:{self._batch_seq}"))
                self.metrics.batch_size.observe(len(batch))
                idle_since = time.monotonic()
            # Keep up to depth-1 batches in flight while messages flow; drain when idle/stopping.
            while self.inflight and (len(self.inflight) >= depth or not batch
                                     or self.inflight.head().done()):
                job = self.inflight.head()
                try:
                    while not job.wait(PAUSED_POLL_S):  # paused polls keep our group membership
                        self.poller.paused_poll()
                    attempt = self._attempt(job)
                    if not job.finished() and self.settler.settle(job, self.store, attempt):
                        offsets = next_offsets(job.kept())  # dropped partitions excluded
                        if not offsets or self._commit(offsets, attempt):
                            job.mark_settled()
                except GaveUp as exc:  # a dependency stays down while stopping: redelivered
                    log.warning("worker.batch_abandoned", extra={"batch_id": job.batch_id,
                                                                 "error": str(exc)})
                    return
                finally:
                    self.inflight.retire(job)
                idle_since = time.monotonic()
            if stopping:
                return
            self.checkpoint.update_lag()
            if self._idle_exit(bool(batch), time.monotonic() - idle_since):
                return

    def _idle_exit(self, polled: bool, idle_s: float) -> bool:
        """With ``--until-idle``: nothing polled or running for ``idle_exit_s``, topic drained."""
        s = self.settings
        if (polled or self.inflight or not self.until_idle or not self.health.joined
                or idle_s <= s.idle_exit_s):
            return False
        drained = self.poller.drained()
        if drained or idle_s > 5 * s.idle_exit_s:
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
            if self.settler is not None:
                self.settler.dlq.close(timeout=10)
            if self.processor is not None:
                self.processor.close()
            if self.server is not None:
                self.server.close()
            if self.inflight is not None:
                self.stats.abandoned += self.inflight.unsettled_messages()
            log.info("worker.stopped", extra={"worker_id": self.settings.worker_id,
                                              "stats": asdict(self.stats)})

    # -- commit and retries ----------------------------------------------------------------
    def _commit(self, offsets: Offsets, attempt: Callable) -> bool:
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

    def _attempt(self, job: Job) -> Callable[[Callable[[], T], str], T | None]:
        """Run a step of ``job`` under the retry policy; None once it is settled or dropped."""
        return lambda step, what: self._retry(step, what, job)

    def _retry(self, action: Callable[[], T], what: str, job: Job | None = None, *,
               deadline: float | None = None, unreachable: str = "") -> T | None:
        result = retry(action, self.policy, what=what, wait=self._keep_polling,
                       stopping=self.stop.is_set,
                       abandon=job.finished if job else lambda: False,
                       on_retry=lambda what, exc, delay: self._note_retry(what, exc, delay, job),
                       deadline=deadline, unreachable=unreachable)
        if result is not None and what.startswith("redis") and self.health.redis_refusing:
            self.health.redis_refusing = None  # writes are accepted again: ready
            self.metrics.redis_refusing.set(0)
            log.info("worker.redis_accepting", extra={"what": what})
        return result

    def _note_retry(self, what: str, exc: BaseException, delay: float, job: Job | None) -> None:
        self.stats.retries += 1
        self.metrics.retries.labels(what=what).inc()
        if is_redis_refusal(exc):  # up but refusing (OOM, READONLY...): not ready meanwhile
            code, text = redis_error_code(exc), str(exc)[:300]
            self.health.redis_refusing = text if text.startswith(code) else f"{code} {text}"
            self.metrics.redis_refusing.set(1)
            self.metrics.redis_refusals.labels(code=code).inc()
        log.warning("worker.transient_error", extra={
            "what": what, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": round(delay, 3),
            "batch_id": job.batch_id if job else None})

    def _keep_polling(self, seconds: float) -> None:
        """Wait between retries: paused polls once consuming, plain sleep before (startup)."""
        if self.poller is not None:
            self.poller.paused_poll(seconds)
            return
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(PAUSED_POLL_S, remaining))


def run(settings: WorkerSettings, until_idle: bool = False, stop: StopFlag | None = None,
        **_: Any) -> WorkerStats:
    """Run one worker in this thread until stopped (or idle with ``until_idle``)."""
    return Worker(settings, until_idle=until_idle, stop=stop).run()
