"""Naive baseline: one message at a time in one process: poll 1 → decode → model → Redis → commit.

The same components as the worker (URI vetting, the whole-track window decode of
:mod:`genretag.worker.tracks`, the TorchScript tagger, the Redis tag store, manual commits), without
batching, pools or pipelining. Run as
``python -m bench.naive`` with the worker's ``GENRETAG_*`` settings; SIGTERM stops it.
"""

from __future__ import annotations

import signal
import threading

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from genretag.core.kafka import make_consumer
from genretag.core.logs import configure_logging, get_logger
from genretag.core.settings import load_settings
from genretag.worker.settings import WorkerSettings
from genretag.core.store import KeyLayout, TagWriter, connect
from genretag.schemas import DeadLetter, TagRecord, TrackRef
from genretag.core.errors import PermanentError
from genretag.worker.infer import Tagger
from genretag.core.audio.decoders import open_decoder
from genretag.worker.tracks import make_record, prepare_tracks
from genretag.core.audio.uri import resolve_source

log = get_logger(__name__)
#: The naive worker's decoder: the FFmpeg command line (it holds no process).
FFMPEG = open_decoder("ffmpeg")


def tag_one(value: bytes, settings: WorkerSettings, tagger: Tagger) -> TagRecord:
    """One message → its tag record (raises PermanentError for bad input)."""
    ref = TrackRef.model_validate_json(value)
    access = settings.access
    source = resolve_source(ref.uri, access.allowed_roots, allow_http=access.allow_http,
                            max_file_bytes=access.max_file_bytes, track_id=ref.track_id)
    [prepared] = prepare_tracks([ref], [source], tagger.manifest, settings.windows,
                                settings.decode, FFMPEG)
    if isinstance(prepared, Exception):
        raise prepared
    rows = tagger.predict_windows([prepared.windows])[0]
    return make_record(prepared, rows, tagger, settings.windows.aggregation)


def dead_letter(msg, exc: PermanentError, settings: WorkerSettings) -> DeadLetter:
    """The dead letter of a message that failed (kept in Redis only: no DLQ topic here)."""
    return DeadLetter(
        reason=exc.reason, detail=str(exc)[:4000], stage=exc.stage, track_id=exc.track_id,
        original=(msg.value or b"").decode("utf-8", "replace")[: settings.kafka.max_message_bytes],
        source_topic=msg.topic, source_partition=msg.partition, source_offset=msg.offset,
        worker_id=f"naive-{settings.worker_id}",
    )


def run(settings: WorkerSettings, stop: threading.Event) -> int:
    """Consume until ``stop`` is set; returns the number of messages handled."""
    tagger = Tagger.load(settings.model)
    writer = TagWriter(connect(settings.redis), KeyLayout(settings.redis.key_prefix))
    consumer = make_consumer(settings.kafka, settings.consumer.group_id, max_poll_records=1)
    consumer.subscribe([settings.kafka.topic])
    handled = 0
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=500, max_records=1).values():
                for msg in records:
                    try:
                        writer.write([tag_one(msg.value, settings, tagger)])
                    except PermanentError as exc:  # parked in Redis like the worker does
                        log.warning("naive.failed", extra={"reason": exc.reason.value, "detail": str(exc)})
                        writer.write([], [dead_letter(msg, exc, settings)])
                    consumer.commit({TopicPartition(msg.topic, msg.partition):
                                     OffsetAndMetadata(msg.offset + 1, "", -1)})
                    handled += 1
                    log.info("naive.message", extra={"handled": handled})
    finally:
        consumer.close()
    return handled


def main() -> int:
    configure_logging("INFO")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    handled = run(load_settings(WorkerSettings), stop)
    log.info("naive.stopped", extra={"handled": handled})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
