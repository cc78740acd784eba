"""The rebalance listener: settle finished work before partitions move, drop the rest.

kafka-python 3 runs listeners on the consumer's IO thread while the loop thread is blocked in
``poll()``/``close()``, so the loop's state is quiescent here. A synchronous listener may not
call blocking consumer APIs, hence the async variant: it awaits ``commit_async`` on the IO
loop (through the checkpoint). A listener must never raise (kafka-python would re-raise from
``poll()``).
"""

from __future__ import annotations

from typing import Protocol

from kafka import TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from genretag.core.logs import get_logger
from genretag.worker.checkpoint import Checkpoint, Offsets

log = get_logger(__name__)


class PartitionOwner(Protocol):
    """What the listener needs of the worker: three hooks, nothing else."""

    def settle_revoked(self, revoked: set[TopicPartition]) -> Offsets:
        """Settle finished work of the revoked partitions; return the offsets to commit."""
        ...

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """The rebalance is done: drop the work of partitions that moved away."""
        ...

    def on_lost(self, lost: set[TopicPartition]) -> None:
        """Evicted: drop all work of the lost partitions (nothing can be committed)."""
        ...


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Delegates to the owner; commits what the owner settled on revoke via the checkpoint."""

    def __init__(self, owner: PartitionOwner, checkpoint: Checkpoint) -> None:
        self.owner = owner
        self.checkpoint = checkpoint

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            offsets = self.owner.settle_revoked(set(revoked))
        except Exception:  # noqa: BLE001 - see module docstring
            log.exception("worker.revoke_failed", extra={"partitions": _names(revoked)})
            return
        if offsets:
            await self.checkpoint.commit_async(offsets, during="revoke")  # never raises

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            self.owner.on_assigned(set(assigned))
        except Exception:  # noqa: BLE001
            log.exception("worker.assign_hook_failed", extra={"partitions": _names(assigned)})

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        try:
            self.owner.on_lost(set(lost))
        except Exception:  # noqa: BLE001
            log.exception("worker.lost_hook_failed", extra={"partitions": _names(lost)})


def _names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)
