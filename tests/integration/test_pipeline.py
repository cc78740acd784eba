"""The spine end to end on real Tansu, redis-server and FFmpeg: produce → work → tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genretag.core.store import connect
from tests.store_parts import StoreParts, store_parts
from genretag.producer.ids import path_track_id
from tests.integration.helpers import committed, produce_refs, refs_for, send_raw
from genretag.worker.loop import run

pytestmark = pytest.mark.integration


def snapshot(store: StoreParts) -> dict:
    """Everything under the test's prefix except volatile timestamps."""
    out = {}
    for key in sorted(store.client.scan_iter(match=f"{store.keys.prefix}*")):
        kind = store.client.type(key)
        if kind == "hash":
            value = store.client.hgetall(key)
            value.pop("processed_at", None)
            if key in (store.keys.dlq, store.keys.dlq_msg):
                value = {k: json.loads(v)["reason"] for k, v in value.items()}
        elif kind == "zset":
            value = store.client.zrange(key, 0, -1, withscores=True)
        else:
            value = sorted(store.client.smembers(key))
        out[key] = value
    return out


def test_produce_work_tags_dlq_commit_and_idempotent_rerun(worker_settings, demo_audio, tmp_path: Path) -> None:
    settings = worker_settings()
    good = [clip for clip in demo_audio if clip.split == "test"]
    broken_text = tmp_path / "not-audio.mp3"
    broken_text.write_text("definitely not audio\n" * 50)
    truncated = tmp_path / "truncated.mp3"
    truncated.write_bytes(good[0].path.read_bytes()[:1500])
    refs = refs_for([c.path for c in good] + [broken_text, truncated])
    assert produce_refs(settings, refs) == len(good) + 2

    stats = run(settings, until_idle=True)
    assert stats.tagged == len(good) and stats.dead_lettered == 2

    store = store_parts(connect(settings.redis), settings.redis.key_prefix)
    correct = 0
    for clip in good:
        rec = store.reader.get(path_track_id(clip.path))
        assert rec is not None and rec.model_version == "test-1"
        assert set(rec.probabilities) == {"ambient", "chiptune", "noise", "techno"}
        assert abs(sum(rec.probabilities.values()) - 1) < 1e-3
        top = max(rec.probabilities, key=rec.probabilities.get)
        assert rec.primary_genre == top  # every label of the demo model is a genre
        correct += top == clip.labels[0]
        for label in rec.labels:  # every label is in its genre set with its probability
            assert store.client.zscore(store.keys.genre(label), rec.track_id) == pytest.approx(
                rec.probabilities[label], abs=1e-6)
    assert correct >= 0.75 * len(good)

    letters = {e.key: e.letter for e in store.dead.scan() if e.letter}
    assert letters[path_track_id(broken_text)].reason.value == "undecodable"
    assert letters[path_track_id(truncated)].reason.value in ("undecodable", "too_short")
    assert letters[path_track_id(broken_text)].track.uri == str(broken_text)

    # Offsets: everything produced is committed.
    assert sum(committed(settings).values()) == len(refs)

    # Redelivery (a new group re-reads everything): the stored state is unchanged.
    before = snapshot(store)
    rerun = run(settings.updated(group_id=settings.consumer.group_id + "-again"), until_idle=True)
    assert rerun.tagged == len(good)
    assert snapshot(store) == before


def test_bad_messages_are_dead_lettered_and_the_worker_goes_on(worker_settings, demo_audio) -> None:
    settings = worker_settings(max_message_bytes=2048)
    good = demo_audio[0]
    send_raw(settings, [
        b"not json at all",
        json.dumps({"track_id": "x1"}).encode(),  # schema: uri missing
        json.dumps({"track_id": "x2", "uri": "http://example.com/a.mp3"}).encode(),
        json.dumps({"track_id": "x3", "uri": "/" + "a" * 4000}).encode(),  # oversized
        json.dumps({"track_id": path_track_id(good.path), "uri": str(good.path)}).encode(),
    ])
    stats = run(settings, until_idle=True)
    assert stats.tagged == 1
    assert stats.reasons == {"bad_message": 3, "disallowed_uri": 1}
    store = store_parts(connect(settings.redis), settings.redis.key_prefix)
    assert store.reader.get(path_track_id(good.path)) is not None
    assert sum(committed(settings).values()) == 5
