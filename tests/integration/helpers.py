"""Helpers for integration tests on the real stack: produce, run a worker, read offsets."""

from __future__ import annotations

from pathlib import Path

from genretag.core.kafka import make_admin
from genretag.core.settings import load_settings
from genretag.producer.settings import ProducerSettings
from genretag.worker.settings import WorkerSettings
from genretag.producer.publish import publish
from genretag.producer.sources import SourceRow


def produce_refs(settings: WorkerSettings, refs: list[dict]) -> int:
    """Send TrackRef-shaped dicts to the settings' topic; returns the number acknowledged."""
    shared = ProducerSettings.public_fields()
    ps = load_settings(ProducerSettings, **{k: v for k, v in settings.plain().items()
                                            if k in shared})
    report = publish([SourceRow(r, "test") for r in refs], ps, progress=False)
    assert report.failed == 0, report.errors
    return report.enqueued


def send_raw(settings: WorkerSettings, values: list[bytes]) -> None:
    """Send raw bytes (not validated) to the topic: for bad-message tests."""
    from genretag.core.kafka import ensure_topics, make_producer

    ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    for value in values:
        producer.send(settings.kafka.topic, key=b"raw", value=value)
    producer.flush()
    producer.close()


def committed(settings: WorkerSettings) -> dict[int, int]:
    """Committed offset per partition of the tracks topic for the settings' group."""
    admin = make_admin(settings.kafka)
    try:
        offsets = admin.list_group_offsets(settings.consumer.group_id)
    finally:
        admin.close()
    group = offsets.get(settings.consumer.group_id, offsets) if isinstance(offsets, dict) else offsets
    return {tp.partition: meta.offset for tp, meta in group.items()
            if tp.topic == settings.kafka.topic and meta.offset >= 0}


def refs_for(paths: list[Path]) -> list[dict]:
    from genretag.producer.ids import path_track_id

    return [{"track_id": path_track_id(p), "uri": str(p)} for p in paths]
