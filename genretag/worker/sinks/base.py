"""The output seam: a :class:`Sink` receives every settled batch, in a configured order.

A sink writes a batch of outcomes idempotently (a redelivered batch is written again and must
leave the same state) and names the tracks it refused for good (e.g. a stale Redis key of the
track's own): those become dead letters instead. It may annotate the outcomes for the sinks
after it (the tag store records what each track held before, so a change feed can tell what
changed). ``urgent`` is set when a rebalance is waiting: a sink then uses short timeouts and
may fail (the batch is redelivered to the partition's next owner).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from genretag.schemas import ModelManifest

if TYPE_CHECKING:
    from genretag.worker.job import Outcome
    from genretag.worker.metrics import WorkerMetrics
    from genretag.worker.settings import WorkerSettings


class Sink(Protocol):
    """One output of settled batches (written before the batch's offsets are committed)."""

    #: The name settings use (``GENRETAG_SINKS=tags,...``); also the settle step's name.
    name: str
    #: What a retry of this sink's write is called in logs and metrics (``what`` label).
    operation: str

    def write(self, outcomes: Sequence[Outcome], *, urgent: bool = False) -> dict[str, str]:
        """Write the batch's outcomes idempotently; returns refused track ids → why.

        Transient failures raise (the settle retries the whole write under the retry policy).
        """
        ...

    def close(self) -> None:
        """Release clients (flush what is buffered)."""
        ...


@dataclass(frozen=True)
class SinkContext:
    """What a sink factory may use besides the settings."""

    manifest: ModelManifest
    metrics: WorkerMetrics
    #: A model set's further models: (namespace, manifest), their tags under the namespace.
    namespaced: tuple[tuple[str, ModelManifest], ...] = ()


class SinkFactory(Protocol):
    def __call__(self, settings: WorkerSettings, context: SinkContext) -> Sink: ...
