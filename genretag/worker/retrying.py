"""The worker's steps under its retry policy: waits keep the group membership, retries are seen.

:func:`genretag.worker.retry.retry` decides (policy as data); this class wires it to the worker:
between tries it keeps polling with partitions paused (before consuming starts, it sleeps),
it gives up on a step once its job is settled or dropped by someone else, and every retry is
counted, logged and, for a Redis that answers but refuses writes, reported as not ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from genretag.core.errors import is_redis_refusal, redis_error_code
from genretag.core.logs import get_logger
from genretag.worker.health import HealthState
from genretag.worker.job import Job
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.poller import PAUSED_POLL_S, Poller
from genretag.worker.retry import RetryPolicy, retry
from genretag.worker.stats import WorkerStats
from genretag.worker.stop import StopFlag

log = get_logger(__name__)
T = TypeVar("T")


class Retrier:
    """Runs actions under the policy for one worker; ``poller`` is set once consuming."""

    def __init__(self, policy: RetryPolicy, stop: StopFlag, stats: WorkerStats,
                 metrics: WorkerMetrics, health: HealthState) -> None:
        self.policy = policy
        self.stop = stop
        self.stats = stats
        self.metrics = metrics
        self.health = health
        self.poller: Poller | None = None

    def attempt(self, job: Job) -> Callable[[Callable[[], T], str], T | None]:
        """Run a step of ``job`` under the policy; None once it is settled or dropped."""
        return lambda step, what: self.run(step, what, job)

    def run(self, action: Callable[[], T], what: str, job: Job | None = None, *,
            deadline: float | None = None, unreachable: str = "") -> T | None:
        """``action`` until it succeeds (see :func:`genretag.worker.retry.retry`)."""
        result = retry(action, self.policy, what=what, wait=self._keep_polling,
                       stopping=self.stop.is_set,
                       abandon=job.finished if job else lambda: False,
                       on_retry=lambda what, exc, delay: self._note(what, exc, delay, job),
                       deadline=deadline, unreachable=unreachable)
        if result is not None and what.startswith("redis") and self.health.redis_refusing:
            self.health.redis_refusing = None  # writes are accepted again: ready
            self.metrics.redis_refusing.set(0)
            log.info("worker.redis_accepting", extra={"what": what})
        return result

    def _note(self, what: str, exc: BaseException, delay: float, job: Job | None) -> None:
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
