"""The worker serves a pulled musicnn artifact unchanged: Kafka → FFmpeg → model → Redis."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from genretag.core.settings import load_settings
from genretag.core.store import connect
from tests.store_parts import store_parts
from tests.integration.helpers import produce_refs, refs_for
from genretag.training.pretrained.pull import CONVERTER_REVISION, pull
from genretag.worker.loop import Worker
from genretag.worker.settings import WorkerSettings

pytestmark = pytest.mark.integration


def test_worker_tags_with_pretrained_vocabulary_and_kinds(stack, musicnn_wheel,
                                                          tmp_path: Path) -> None:
    model = tmp_path / "msd.pt"
    pull("musicnn-msd", model, tmp_path, wheel=musicnn_wheel, threshold=0.0)  # every tag stored
    clips = []
    for i, src in enumerate(["sine=frequency=110:duration=8", "anoisesrc=d=8:c=pink:a=0.3"]):
        clips.append(tmp_path / f"clip{i}.mp3")
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
                        "-ac", "2", "-ar", "44100", str(clips[-1])], check=True)
    run = uuid.uuid4().hex[:8]
    settings = load_settings(
        WorkerSettings, kafka_bootstrap_servers=stack.bootstrap, redis_url=stack.redis_url,
        kafka_topic=f"tracks-{run}", kafka_dlq_topic=f"dlq-{run}", group_id=f"g-{run}",
        redis_key_prefix=f"t{run}:", model_path=str(model), allowed_roots=[str(tmp_path)],
        idle_exit_s=3.0, decode_workers=2, batch_max_wait_ms=100, device="cpu")
    assert produce_refs(settings, refs_for(clips)) == 2
    worker = Worker(settings, until_idle=True)
    worker.run()
    store = store_parts(connect(settings.redis), settings.redis.key_prefix)
    ids = [r["track_id"] for r in refs_for(clips)]
    records = store.reader.get_many(ids)
    assert all(records.values())
    rec = records[ids[0]]
    assert rec.model_version == f"musicnn-msd-0.1.0-r{CONVERTER_REVISION}" and len(rec.probabilities) == 50
    assert "rock" in rec.labels and "happy" in rec.labels  # threshold 0: every tag
    assert store.reader.top("rock") and store.reader.top("happy") == []  # a mood is not a genre
    assert {t for t, _ in store.reader.top("happy", genre=False)} == set(ids)
    assert set(store.reader.labels_of_kind("era")) == {"00s", "60s", "70s", "80s", "90s", "oldies"}
    assert store.dead.count() == 0
