"""One micro-batch in flight (:class:`Job`) and what became of each of its messages (:class:`Outcome`).

A Job owns its own state: which partitions were dropped, which settle steps are done (its dead
letters acknowledged, each output written, the batch counted) and whether it is settled. Other
code reads that state and moves it forward only through the ``mark_*`` methods, each of which
says whether it was the first to do so (the loop and the rebalance listener may race for the
same job).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from kafka.structs import TopicPartition

from genretag.core.store import PreviousTags
from genretag.schemas import DeadLetter, TagRecord, TrackRef


@dataclass
class Outcome:
    """What became of one message: a tag record or a dead letter (exactly one is set)."""

    topic: str
    partition: int
    offset: int
    record: TagRecord | None = None
    dead: DeadLetter | None = None
    enqueued_at: datetime | None = None
    ref: TrackRef | None = None  # the parsed message, once it parsed
    previous: PreviousTags | None = None  # what the track held before (set by the tags output)
    embedding: np.ndarray | None = None  # the track's vector (float32), with a v2 artifact
    #: The further models' records of a model set, by namespace (the first model's is ``record``).
    model_records: dict[str, TagRecord] = field(default_factory=dict)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class Job:
    """One micro-batch in flight: decodes in the pool, then one model pass; droppable by partition.

    ``drop`` (called by the rebalance listener) gives up the messages of revoked partitions:
    queued decodes are cancelled, the model skips them, and they are neither written nor
    committed, so the partition's next owner redoes them from the committed offset.
    """

    def __init__(self, batch_id: str, messages: list) -> None:
        self.batch_id = batch_id
        self.messages = messages
        self.outcomes = [Outcome(m.topic, m.partition, m.offset) for m in messages]
        self.decodes: list[tuple[int, TrackRef, Future]] = []
        self.future: Future | None = None
        self.created = time.monotonic()
        self._steps: set[str] = set()  # settle steps done ("dlq", "sink:tags", "counted", ...)
        self._settled = False  # written and committed, by the loop or the rebalance listener
        self._dropped: set[TopicPartition] = set()
        self._lock = threading.Lock()

    # -- state: read here, moved forward only by mark_* -----------------------------------------
    def step_done(self, step: str) -> bool:
        """Whether the settle step ``step`` was done for this job (by anyone)."""
        with self._lock:
            return step in self._steps

    @property
    def settled(self) -> bool:
        return self._settled

    def mark_step(self, step: str) -> bool:
        """Settle step ``step`` is done; True only for the first caller (who counts it)."""
        with self._lock:
            first = step not in self._steps
            self._steps.add(step)
            return first

    def mark_refused(self, letters: dict[int, DeadLetter]) -> None:
        """Outcomes whose tags an output refused (e.g. the track's own Redis key) become these
        dead letters (already acknowledged by the DLQ topic: the job's dlq step is unchanged)."""
        with self._lock:
            for i, letter in letters.items():
                self.outcomes[i].record, self.outcomes[i].dead = None, letter

    def mark_settled(self) -> None:
        """Written and its offsets committed (or handed to the rebalance commit): nothing left."""
        with self._lock:
            self._settled = True

    def finished(self) -> bool:
        """Nothing is left to do for this job here: settled, or every partition dropped."""
        return self._settled or self.all_dropped()

    # -- progress ---------------------------------------------------------------------------------
    def partitions(self) -> set[TopicPartition]:
        return {o.tp for o in self.outcomes}

    def done(self) -> bool:
        """Every kept outcome is set (the model pass finished, or everything was dropped)."""
        return self.future is None or self.future.done() or self.all_dropped()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for :meth:`done` (a failed model pass counts as done)."""
        if self.future is not None and not self.all_dropped():
            wait_futures([self.future], timeout=timeout_s)
        return self.done()

    def is_dropped(self, tp: TopicPartition) -> bool:
        with self._lock:
            return tp in self._dropped

    def all_dropped(self) -> bool:
        with self._lock:
            return self.partitions() <= self._dropped

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Give up the messages of ``partitions``; returns how many messages that was."""
        revoked = set(partitions) & self.partitions()
        if not revoked:
            return 0
        with self._lock:
            new = revoked - self._dropped
            self._dropped |= new
        for i, _ref, future in self.decodes:
            if self.outcomes[i].tp in new:
                future.cancel()  # only queued decodes stop; a running FFmpeg just finishes
        return sum(1 for o in self.outcomes if o.tp in new)

    def kept(self) -> list[Outcome]:
        """Outcomes of partitions not dropped, in message order."""
        with self._lock:
            dropped = set(self._dropped)
        return [o for o in self.outcomes if o.tp not in dropped]

    def result(self) -> list[Outcome]:
        """Kept outcomes once done; re-raises a failure of the model pass."""
        if self.future is not None and not self.all_dropped():
            self.future.result()
        return self.kept()
