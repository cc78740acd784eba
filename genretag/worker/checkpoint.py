"""The consumer's checkpoint: which offsets are committed, committing them, and the lag.

Offsets go to Kafka as ``last processed offset + 1`` per partition. A commit that would move a
partition's offset backwards is a bug (it would make the group redo work or, worse, hide a
lost batch): :class:`OffsetRegression` is raised and nothing is sent. The lag gauge is the
highwater (from fetch responses) minus the committed offset of each assigned partition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from kafka import TopicPartition
from kafka import errors as kafka_errors
from kafka.structs import OffsetAndMetadata

from genretag.core.errors import FatalError
from genretag.core.logs import get_logger
from genretag.worker.job import Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.stats import WorkerStats

log = get_logger(__name__)

Offsets = dict[TopicPartition, OffsetAndMetadata]

#: Commit errors that mean "the group moved on without us": logged and survived.
COMMIT_REFUSED: tuple[type[BaseException], ...] = (
    kafka_errors.CommitFailedError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.RebalanceInProgressError,
)
LAG_EVERY_S = 1.0


class OffsetRegression(FatalError):
    """A commit would move a partition's committed offset backwards (a bug: stop, say where)."""


def next_offsets(outcomes: Iterable[Outcome]) -> Offsets:
    """Offset + 1 of the last processed message of each partition (what Kafka expects)."""
    last: dict[TopicPartition, int] = {}
    for o in outcomes:
        tp = TopicPartition(o.topic, o.partition)
        last[tp] = max(last.get(tp, -1), o.offset)
    return {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()}


class Checkpoint:
    """Committed offsets of the assigned partitions; commits (sync or from the listener) and lag."""

    def __init__(self, consumer, stats: WorkerStats, metrics: WorkerMetrics) -> None:
        self.consumer = consumer
        self.stats = stats
        self.metrics = metrics
        self.assigned: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self._lag_checked: set[TopicPartition] = set()  # the group's committed offset fetched once
        self._lag_at = 0.0
        self._lock = threading.Lock()  # the loop thread and the consumer's IO thread

    # -- commits ---------------------------------------------------------------------------------
    def check(self, offsets: Offsets) -> None:
        """Raise :class:`OffsetRegression` if any offset is below the one already committed."""
        with self._lock:
            for tp, meta in offsets.items():
                known = self.committed.get(tp)
                if known is not None and meta.offset < known:
                    raise OffsetRegression(
                        f"commit of {tp.topic}:{tp.partition} at {meta.offset} would move it "
                        f"back from {known}")

    def commit(self, offsets: Offsets, during: str = "batch") -> None:
        """Check, commit synchronously, record. Raises kafka errors (see ``COMMIT_REFUSED``)."""
        self.check(offsets)
        self.consumer.commit(offsets)
        self.note_committed(offsets, during)

    async def commit_async(self, offsets: Offsets, during: str = "revoke") -> None:
        """From the rebalance listener (IO thread): commit and record; never raises."""
        try:
            self.check(offsets)
            await self.consumer.commit_async(offsets)
            self.note_committed(offsets, during)
        except OffsetRegression:
            log.exception("worker.offset_regression", extra={"during": during})
            self.note_commit_failed(RuntimeError("offset regression"), during)
        except Exception as exc:  # noqa: BLE001 - the next owner redoes them; never crash here
            self.note_commit_failed(exc, during)

    def note_committed(self, offsets: Offsets, during: str) -> None:
        with self._lock:
            for tp, meta in offsets.items():
                if tp in self.assigned:  # after a revoke the next owner's commits count
                    self.committed[tp] = meta.offset
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

    # -- assignment ------------------------------------------------------------------------------
    def assign(self, assigned: set[TopicPartition]) -> None:
        """After a rebalance: these partitions are ours (too)."""
        with self._lock:
            self.assigned |= assigned

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions that are no longer ours: their offsets and lag are the next owner's."""
        with self._lock:
            self.assigned -= partitions
            self._lag_checked -= partitions
            for tp in partitions:
                self.committed.pop(tp, None)
                try:
                    self.metrics.lag.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass

    # -- lag -------------------------------------------------------------------------------------
    def update_lag(self) -> None:
        """At most every ``LAG_EVERY_S``: highwater minus committed, per assigned partition."""
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
                    committed = self.committed.setdefault(tp, committed)
            if highwater is not None:
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, highwater - committed))
