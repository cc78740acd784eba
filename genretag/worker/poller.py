"""Everything the worker asks of ``poll()``: the record buffer, batches, pausing, group joins.

The consumer is never starved of ``poll()``: while a batch runs or a write is retried, every
assigned partition is paused and ``poll()`` keeps being called (it returns nothing while
paused), so neither a slow batch nor a long outage exceeds ``max_poll_interval_ms``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kafka import TopicPartition
from kafka.structs import MemberState

from genretag.worker.health import HealthState
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.settings import BatchingSection

PAUSED_POLL_S = 0.2  # poll cadence while partitions are paused (keeps the poll timer fresh)
REJOIN_POLL_MS = 1000  # poll() length while the member (re)joins the group
EARLY_CLOSE_CHECK_MS = 20  # with close_when_idle: how often a waiting batch looks again


class Poller:
    """Polls into a buffer and cuts it into batches; shares the buffer with the IO thread."""

    def __init__(self, consumer, batching: BatchingSection, *, stop: threading.Event,
                 health: HealthState, metrics: WorkerMetrics, lock: threading.RLock) -> None:
        self.consumer = consumer
        self.batch_size = batching.size
        self.max_wait_s = batching.max_wait_ms / 1000
        self.close_when_idle = batching.close_when_idle
        self.stop = stop
        self.health = health
        self.metrics = metrics
        self.lock = lock  # the worker's: the rebalance listener drops records from the buffer
        self.buffer: list = []  # polled records not yet in a batch
        self.rebalancing = False  # between a revoke and the next assignment (set by the worker)

    def poll(self, timeout_ms: int, max_records: int) -> int:
        """``poll()``; records go to the buffer (also while paused: newly assigned ones).

        While the member is (re)joining the group, poll back to back until it is stable:
        kafka-python 3.0 drops a JoinGroup/SyncGroup round whose response lands between two
        ``poll()`` calls and starts another one, so gaps between polls can stall a rebalance.
        """
        max_records = max(1, max_records)
        n = self._take(self.consumer.poll(timeout_ms=max(0, timeout_ms), max_records=max_records))
        while not self.stop.is_set() and self.joining():
            n += self._take(self.consumer.poll(timeout_ms=REJOIN_POLL_MS, max_records=max_records))
        return n

    def _take(self, polled: dict) -> int:
        self.health.tick()
        n = 0
        with self.lock:
            for records in polled.values():
                self.buffer.extend(records)
                n += len(records)
        if n:
            self.metrics.consumed.inc(n)
        return n

    def joining(self) -> bool:
        """A rebalance is under way (our listener saw it start, or the member is not stable)."""
        return self.rebalancing or self.consumer.group_metadata().state != MemberState.STABLE

    def pause(self) -> None:
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)

    def resume(self) -> None:
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)

    def paused_poll(self, seconds: float = 0.0) -> None:
        """Pause every partition and poll for ``seconds`` (at least once): the group keeps us."""
        deadline = time.monotonic() + seconds
        while True:
            self.pause()
            remaining = deadline - time.monotonic()
            self.poll(int(min(PAUSED_POLL_S, max(0.0, remaining)) * 1000), self.batch_size)
            if deadline - time.monotonic() <= 0:
                return

    def drained(self) -> bool:
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

    def collect(self, busy: Callable[[], bool], idle_timeout_ms: int = 500) -> list:
        """Up to ``batch_size`` records, waiting at most ``batch_max_wait_ms`` after the first.

        With ``close_when_idle`` a partial batch closes early once nothing is ``busy()`` and
        every partition is :meth:`drained`: at light load the wait would only add latency,
        under a backlog batches still fill.
        """
        self.resume()
        with self.lock:
            have = len(self.buffer)
        deadline = time.monotonic() + self.max_wait_s if have else None
        while have < self.batch_size and not self.stop.is_set():
            if have and self.close_when_idle and not busy() and self.drained():
                break
            if deadline is None:
                timeout_ms = idle_timeout_ms
            else:
                timeout_ms = int((deadline - time.monotonic()) * 1000)
                if self.close_when_idle:  # look again soon: the in-flight work may finish
                    timeout_ms = min(timeout_ms, EARLY_CLOSE_CHECK_MS)
            self.poll(timeout_ms, self.batch_size - have)
            with self.lock:
                have = len(self.buffer)
            if have and deadline is None:
                deadline = time.monotonic() + self.max_wait_s
            if not have or time.monotonic() >= deadline:
                break
        with self.lock:
            batch, self.buffer = self.buffer[: self.batch_size], self.buffer[self.batch_size :]
        return batch

    def drop(self, partitions: set[TopicPartition]) -> int:
        """Forget buffered records of ``partitions`` (caller holds the lock); how many."""
        kept = [r for r in self.buffer if TopicPartition(r.topic, r.partition) not in partitions]
        dropped = len(self.buffer) - len(kept)
        self.buffer = kept
        return dropped
