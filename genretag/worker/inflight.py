"""The batches in flight, in order, and what a rebalance does to them.

Implements :class:`genretag.worker.rebalance.PartitionOwner`: on revoke, finished batches are
settled through the one settle path (one attempt, ``urgent``: short timeouts) and their offsets
handed to the listener's commit; unfinished work waits for the new assignment, which drops the work of
partitions that moved away (kafka-python keeps the position of a partition that comes back, so
its in-flight messages must still be finished by us). On loss, everything of the lost
partitions is dropped. The listener runs on the consumer's IO thread while the loop thread is
blocked in ``poll()``/``close()``; the shared lock guards the queue and the poll buffer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

from kafka import TopicPartition

from genretag.core.logs import get_logger
from genretag.worker.checkpoint import Checkpoint, Offsets
from genretag.worker.health import HealthState
from genretag.worker.job import Job
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.poller import Poller
from genretag.worker.settle import Settle, once
from genretag.worker.stats import WorkerStats

log = get_logger(__name__)


class InFlight:
    """The worker's queue of jobs (oldest first) and its three rebalance hooks."""

    def __init__(self, *, worker_id: str, settle: Settle, poller: Poller,
                 checkpoint: Checkpoint, health: HealthState, metrics: WorkerMetrics,
                 stats: WorkerStats, lock: threading.RLock) -> None:
        self.worker_id = worker_id
        self.settle = settle
        self.poller = poller
        self.checkpoint = checkpoint
        self.health = health
        self.metrics = metrics
        self.stats = stats
        self.lock = lock
        self.jobs: deque[Job] = deque()
        self.pending_revoke: set[TopicPartition] = set()

    # -- the queue -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self.jobs))

    def head(self) -> Job:
        return self.jobs[0]

    def add(self, job: Job) -> None:
        with self.lock:
            self.jobs.append(job)
        self.metrics.inflight_batches.set(len(self.jobs))
        self.stats.max_inflight = max(self.stats.max_inflight, len(self.jobs))

    def busy(self) -> bool:
        """A batch is still decoding or in the model."""
        with self.lock:
            return any(not job.done() for job in self.jobs)

    def retire(self, job: Job) -> None:
        """Take a settled (or wholly dropped) job out of the queue."""
        with self.lock:
            if job.finished():
                try:
                    self.jobs.remove(job)
                except ValueError:
                    pass
        self.metrics.inflight_batches.set(len(self.jobs))

    def unsettled_messages(self) -> int:
        with self.lock:
            return sum(len(j.kept()) for j in self.jobs if not j.settled)

    # -- rebalance hooks (IO thread) -----------------------------------------------------------
    def settle_revoked(self, revoked: set[TopicPartition]) -> Offsets:
        """A rebalance starts: settle finished batches (once, same path); offsets to commit."""
        offsets: Offsets = {}
        with self.lock:
            self.poller.rebalancing = True
            self.health.joined = False
            self.pending_revoke |= revoked
            if not revoked:  # kafka-python calls this with nothing on a first join
                return offsets
            for job in list(self.jobs):  # in order: stop at the first unfinished batch,
                if job.settled:          # later offsets can't be committed before it
                    continue
                if not (job.done() and self._settle_once(job, offsets)):
                    break
        self.metrics.rebalances.labels(kind="revoked").inc()
        log.info("worker.revoked", extra={
            "worker_id": self.worker_id, "partitions": sorted(tp.partition for tp in revoked),
            "settled_partitions": sorted(tp.partition for tp in offsets)})
        return offsets

    def _settle_once(self, job: Job, offsets: Offsets) -> bool:
        """The settle path with one attempt and short timeouts, its offsets added to
        ``offsets`` (the listener commits them); False leaves the job to be dropped."""
        def hand_over(settled: Offsets) -> bool:
            offsets.update(settled)
            return True

        try:
            return self.settle.run(job, once, hand_over, urgent=True)
        except Exception as exc:  # noqa: BLE001 - can't settle now: drop, it is redelivered
            log.warning("worker.revoke_write_failed", extra={
                "batch_id": job.batch_id, "error": f"{type(exc).__name__}: {exc}"})
            return False

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """The rebalance is done: drop the work of partitions that moved away, note the new set."""
        with self.lock:
            gone = self.pending_revoke - assigned
            self.pending_revoke = set()
            dropped = self.drop(gone)
            self.checkpoint.assign(assigned)
            self.poller.rebalancing = False
            self.health.joined = True
            self.health.assigned = len(self.checkpoint.assigned)
        self.metrics.assigned_partitions.set(len(self.checkpoint.assigned))
        self.metrics.rebalances.labels(kind="assigned").inc()
        log.info("worker.assigned", extra={
            "worker_id": self.worker_id, "dropped": dropped,
            "partitions": sorted(tp.partition for tp in self.checkpoint.assigned)})

    def on_lost(self, lost: set[TopicPartition]) -> None:
        """Evicted: nothing can be committed; drop all work of the lost partitions."""
        with self.lock:
            self.poller.rebalancing = True
            self.health.joined = False
            self.pending_revoke -= lost
            dropped = self.drop(lost)
            self.health.assigned = len(self.checkpoint.assigned)
        self.metrics.assigned_partitions.set(len(self.checkpoint.assigned))
        self.metrics.rebalances.labels(kind="lost").inc()
        log.warning("worker.partitions_lost", extra={
            "worker_id": self.worker_id, "partitions": sorted(tp.partition for tp in lost),
            "dropped": dropped})

    def drop_pending(self) -> None:
        """Stopped mid-rebalance: what is moving away is not ours to finish."""
        with self.lock:
            self.drop(self.pending_revoke)

    def drop(self, partitions: set[TopicPartition]) -> int:
        """Give up polled, unsettled messages of ``partitions`` (their next owner redoes them)."""
        if not partitions:
            return 0
        with self.lock:
            dropped = sum(job.drop(partitions) for job in self.jobs if not job.settled)
            dropped += self.poller.drop(partitions)
            self.checkpoint.forget(partitions)
        if dropped:
            self.stats.dropped += dropped
            self.metrics.dropped.inc(dropped)
        return dropped
