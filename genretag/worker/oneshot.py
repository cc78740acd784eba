"""Tag local files without Kafka or Redis, through the worker's own Processor.

``genretag tag FILE...`` wraps each file in the message the producer would send and runs the
worker's exact path (parse, URI vetting, whole-track windows, model, record), so what it prints
for a file is what the worker would store for it. One model is loaded for all files; each
batch of ``batch_size`` files is one model pass (its windows in calls of the measured size),
and the next batch decodes while the model runs on this one (``pipeline_depth``), as in the
worker loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genretag.schemas import TrackRef
from genretag.worker.infer import Tagger
from genretag.worker.job import Outcome
from genretag.worker.process import Processor
from genretag.worker.settings import WorkerSettings

ONESHOT_TOPIC = "genretag-tag"


@dataclass(frozen=True)
class LocalMessage:
    """What :class:`Processor` reads of a Kafka message, for a file given on the command line."""

    value: bytes
    offset: int
    topic: str = ONESHOT_TOPIC
    partition: int = 0


def tag_files(files: Sequence[tuple[str, Path]], settings: WorkerSettings,
              tagger: Tagger | None = None) -> list[Outcome]:
    """``(track_id, path)`` pairs → one Outcome each (record or dead letter), in order."""
    tagger = tagger or Tagger.load(settings.model)
    messages = [
        LocalMessage(TrackRef(track_id=tid, uri=str(Path(path).resolve())).model_dump_json().encode(),
                     offset=k)
        for k, (tid, path) in enumerate(files)
    ]
    processor = Processor(settings, tagger)
    try:
        outcomes: list[Outcome] = []
        step, depth = settings.batching.size, settings.batching.pipeline_depth
        in_flight: deque = deque()
        for start in range(0, len(messages), step):
            in_flight.append(processor.submit(messages[start:start + step]))
            if len(in_flight) >= depth:
                outcomes += in_flight.popleft().result()
        while in_flight:
            outcomes += in_flight.popleft().result()
        return outcomes
    finally:
        processor.close()
