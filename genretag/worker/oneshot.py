"""Tag local files without Kafka or Redis, through the worker's own Processor.

``genretag tag FILE...`` wraps each file in the message the producer would send and runs the
worker's exact path (parse, URI vetting, whole-track windows, model, record), so what it prints
for a file is what the worker would store for it. :func:`tag_stream` yields each batch's
outcomes as soon as its model pass is done, with the next batch already decoding (two in
flight, as the worker's loop), so a person sees results while the rest are tagged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from genretag.schemas import TrackRef
from genretag.worker.infer import Tagger
from genretag.worker.job import Job, Outcome
from genretag.worker.process import Processor
from genretag.worker.settings import WorkerSettings

ONESHOT_TOPIC = "genretag-tag"
#: Batches in flight: one in the model while the next decodes.
IN_FLIGHT = 2


@dataclass(frozen=True)
class LocalMessage:
    """What :class:`Processor` reads of a Kafka message, for a file given on the command line."""

    value: bytes
    offset: int
    topic: str = ONESHOT_TOPIC
    partition: int = 0


def tag_stream(files: Sequence[tuple[str, Path]], settings: WorkerSettings,
               tagger: Tagger | None = None, batch: int | None = None
               ) -> Iterator[tuple[int, Outcome]]:
    """``(track_id, path)`` pairs → ``(index, Outcome)`` (record or dead letter), in order,
    batch by batch (``batch`` files, default the ``batching`` size) as each is done.

    Closing the iterator early (or an interrupt while it waits) stops the decoders; the
    batches not yet yielded are dropped.
    """
    tagger = tagger or Tagger.load(settings.model)
    messages = [
        LocalMessage(TrackRef(track_id=tid, uri=str(Path(path).resolve())).model_dump_json().encode(),
                     offset=k)
        for k, (tid, path) in enumerate(files)
    ]
    step = max(1, batch or settings.batching.size)
    starts = iter(range(0, len(messages), step))
    processor = Processor(settings, tagger)
    pending: deque[tuple[int, Job]] = deque()

    def submit_next() -> None:
        start = next(starts, None)
        if start is not None:
            pending.append((start, processor.submit(messages[start:start + step])))

    try:
        for _ in range(IN_FLIGHT):
            submit_next()
        while pending:
            start, job = pending.popleft()
            outcomes = job.result()
            submit_next()
            for k, outcome in enumerate(outcomes):
                yield start + k, outcome
    finally:
        processor.close()


def tag_files(files: Sequence[tuple[str, Path]], settings: WorkerSettings,
              tagger: Tagger | None = None) -> list[Outcome]:
    """``(track_id, path)`` pairs → one Outcome each (record or dead letter), in order."""
    return [outcome for _, outcome in tag_stream(files, settings, tagger)]
