"""The rebalance listener: settle finished work before partitions move, drop the rest.

kafka-python 3 runs listeners on the consumer's IO thread while the loop thread is blocked in
``poll()``/``close()``, so the loop's state is quiescent here. A synchronous listener may not
call blocking consumer APIs, hence the async variant: it awaits ``commit_async`` on the IO
loop. A listener must never raise (kafka-python would re-raise from ``poll()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka import TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from core.logs import get_logger

if TYPE_CHECKING:
    from worker.loop import Worker

log = get_logger(__name__)


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Delegates to the worker: write+commit what is done on revoke; drop everything on loss."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            offsets = self.worker.settle_revoked(set(revoked))
        except Exception:  # noqa: BLE001 - see module docstring
            log.exception("worker.revoke_failed", extra={"partitions": _names(revoked)})
            return
        if not offsets or self.worker.consumer is None:
            return
        try:
            await self.worker.consumer.commit_async(offsets)
            self.worker.note_committed(offsets, during="revoke")
        except Exception as exc:  # noqa: BLE001 - the next owner redoes them; never crash here
            self.worker.note_commit_failed(exc, during="revoke")

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            self.worker.on_assigned(set(assigned))
        except Exception:  # noqa: BLE001
            log.exception("worker.assign_hook_failed", extra={"partitions": _names(assigned)})

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        try:
            self.worker.on_lost(set(lost))
        except Exception:  # noqa: BLE001
            log.exception("worker.lost_hook_failed", extra={"partitions": _names(lost)})


def _names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)
