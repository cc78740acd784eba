"""Tag events end to end on the real stack: the events sink after the tag store, the compacted
topic, `genretag events`, and the redelivery whose write finds the tags unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from genretag.cli import main
from genretag.core.artifact import load_artifact, save_artifact
from genretag.core.store import connect
from genretag.producer.ids import path_track_id
from genretag.worker.loop import run
from tests.integration.helpers import committed, produce_refs, refs_for
from tests.integration.test_producer import REPO
from tests.store_parts import store_parts

pytestmark = pytest.mark.integration


def events_flags(settings) -> list[str]:
    return ["--kafka-bootstrap-servers", ",".join(settings.kafka.bootstrap_servers),
            "--kafka-events-topic", settings.kafka.events_topic]


def listed(settings, capsys) -> list[dict]:
    """`genretag events --from-beginning --json`: every event on the topic (in each
    partition's order; partitions interleave)."""
    code = main(["events", "--from-beginning", "--json", *events_flags(settings)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def current(settings, track_ids) -> dict:
    store = store_parts(connect(settings.redis), settings.redis.key_prefix)
    return {tid: store.reader.get(tid) for tid in track_ids}


def content(event_or_record) -> tuple:
    get = (event_or_record.get if isinstance(event_or_record, dict)
           else lambda k: getattr(event_or_record, k))
    return get("model_version"), sorted(get("labels")), get("primary_genre")


@pytest.fixture
def clips(demo_audio) -> list[Path]:
    return [c.path for c in demo_audio if c.split == "test"][:6]


@pytest.fixture
def model_v2(demo_model: Path, tmp_path: Path) -> Path:
    """The demo model's weights under another version: a 'newer model' for a backfill."""
    module, manifest = load_artifact(demo_model)
    return save_artifact(module, manifest.model_copy(update={"version": "test-2"}),
                         tmp_path / "v2.pt")


def test_events_announce_new_and_changed_tags_once_and_the_cli_lists_them(
        worker_settings, clips, model_v2, tmp_path, capsys) -> None:
    settings = worker_settings(sinks="tags,events", batch_size=4,
                               kafka_events_topic=f"events-{os.urandom(4).hex()}")
    ids = [path_track_id(c) for c in clips]
    missing = {"track_id": "gone", "uri": "/tmp/genretag-no-such-file.mp3"}
    assert produce_refs(settings, refs_for(clips) + [missing]) == len(clips) + 1
    stats = run(settings, until_idle=True)
    assert (stats.tagged, stats.dead_lettered) == (len(clips), 1)

    # One event per tagged track (none for the dead letter), its content what Redis holds.
    first = listed(settings, capsys)
    assert sorted(e["track_id"] for e in first) == sorted(ids)
    stored = current(settings, ids)
    for e in first:
        assert e["change"] == "new" and e["previous_model_version"] is None
        assert content(e) == content(stored[e["track_id"]])
        assert e["uri"] == stored[e["track_id"]].uri
        assert len(e["top_probabilities"]) == 4  # every label of the demo model (top_k 5)

    # The same tracks enqueued again, same model: their tags do not change, no event.
    assert produce_refs(settings, refs_for(clips)) == len(clips)
    run(settings, until_idle=True)
    assert sorted(e["event_id"] for e in listed(settings, capsys)) == sorted(
        e["event_id"] for e in first)

    # A newer model: two tracks first, then a backfill enqueues only the four still stale;
    # each re-tag announces the change once, with what it replaced.
    v2 = settings.updated(model_path=str(model_v2))
    assert produce_refs(v2, refs_for(clips[:2])) == 2
    run(v2, until_idle=True)
    code = main(["produce", "--backfill", "--model", str(model_v2), "--no-progress",
                 "--kafka-bootstrap-servers", settings.kafka.bootstrap_servers[0],
                 "--kafka-topic", settings.kafka.topic, "--redis-url", settings.redis.url,
                 "--redis-key-prefix", settings.redis.key_prefix])
    capsys.readouterr()
    assert code == 0
    run(v2, until_idle=True)
    after = listed(settings, capsys)
    changed = [e for e in after if e["change"] != "new"]
    assert len(after) == len(first) + len(changed)
    assert sorted(e["track_id"] for e in changed) == sorted(ids)  # once each
    for e in changed:
        assert e["change"] == "changed" and e["model_version"] == "test-2"
        assert e["previous_model_version"] == "test-1"
        assert e["previous_labels"] == next(f["labels"] for f in first
                                            if f["track_id"] == e["track_id"])
    assert sum(committed(settings).values()) == 2 * len(clips) + 1 + 2 + 4

    # --events all: every settle announces, unchanged ones too, with the same event id.
    assert produce_refs(v2, refs_for(clips[:3])) == 3
    run(v2.updated(events="all"), until_idle=True)
    again = [e for e in listed(settings, capsys) if e["change"] == "unchanged"]
    assert sorted(e["track_id"] for e in again) == sorted(ids[:3])
    ids_of = {e["track_id"]: e["event_id"] for e in changed}
    assert all(ids_of[e["track_id"]] == e["event_id"] for e in again)

    # Plain output: one line per event (each partition starts with a track's first event).
    assert main(["events", "--from-beginning", "--limit", "1", *events_flags(settings)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and " new " in line and " test-1 " in line
    assert any(f" {tid} new " in line for tid in ids), line


def test_a_redelivery_that_finds_its_own_change_publishes_it(worker_settings, clips,
                                                              capsys) -> None:
    """The crash the design is for, made deterministic: the tags of a message are written but
    its event never published (here: the events sink was off, as if the worker died right
    after the Redis write); the redelivery finds the tags unchanged, yet publishes."""
    settings = worker_settings(batch_size=4, kafka_events_topic=f"ev-{os.urandom(4).hex()}")
    produce_refs(settings, refs_for(clips))
    run(settings, until_idle=True)  # tags only: written, committed, no event
    assert main(["events", "--from-beginning", *events_flags(settings)]) == 1
    assert "no topic" in capsys.readouterr().err

    redelivered = settings.updated(sinks="tags,events",
                                   group_id=settings.consumer.group_id + "-again")
    stats = run(redelivered, until_idle=True)
    assert stats.tagged == len(clips)
    events = listed(settings, capsys)
    assert sorted(e["track_id"] for e in events) == sorted(path_track_id(c) for c in clips)
    assert all(e["change"] == "new" for e in events)

    # Another message with the same tags (a new enqueue, other coordinates): nothing new.
    produce_refs(settings, refs_for(clips))
    run(redelivered.updated(group_id=settings.consumer.group_id + "-third"), until_idle=True)
    assert len(listed(settings, capsys)) == len(events) + len(clips)  # the third group
    # re-read the first messages too (same coordinates: duplicates, same ids) ...
    ids = [e["event_id"] for e in listed(settings, capsys)]
    assert len(set(ids)) == len(clips)  # ... and no other event


def follow(settings, limit: int, then) -> list[str]:
    """Start `genretag events --json --limit N` (following from now); once it says it is
    positioned, call ``then``; the track ids it printed before it stopped at ``limit``."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "genretag.cli", "events", "--json", "--limit", str(limit),
         *events_flags(settings)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        ready = threading.Event()
        err_lines: list[str] = []

        def watch() -> None:
            for line in follower.stderr:
                err_lines.append(line)
                if "following" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        then(ready, err_lines)
        out, _ = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, "".join(err_lines)
    return [json.loads(line)["track_id"] for line in out.splitlines()]


def test_follow_prints_only_what_comes_after_it_started(worker_settings, clips) -> None:
    settings = worker_settings(sinks="tags,events", batch_size=4,
                               kafka_events_topic=f"ev-{os.urandom(4).hex()}")
    produce_refs(settings, refs_for(clips[:2]))
    run(settings, until_idle=True)

    def tag_the_rest(ready, err_lines) -> None:
        assert ready.wait(60), "".join(err_lines)
        produce_refs(settings, refs_for(clips[2:]))
        run(settings, until_idle=True)

    shown = follow(settings, 4, tag_the_rest)
    assert sorted(shown) == sorted(path_track_id(c) for c in clips[2:])


def test_follow_waits_for_a_topic_made_after_it_started(worker_settings, clips) -> None:
    """Started before any worker made the topic: every event of it is 'from now'."""
    settings = worker_settings(sinks="tags,events", batch_size=4,
                               kafka_events_topic=f"ev-{os.urandom(4).hex()}")

    def tag_all(ready, err_lines) -> None:
        time.sleep(2)  # it is waiting for the topic, not positioned
        assert not ready.is_set(), "".join(err_lines)
        produce_refs(settings, refs_for(clips))
        run(settings, until_idle=True)

    shown = follow(settings, len(clips), tag_all)
    assert sorted(shown) == sorted(path_track_id(c) for c in clips)


def test_a_track_twice_in_one_batch_is_announced_once(worker_settings, clips, capsys) -> None:
    """Its first message changes the tags, the second finds them unchanged: each outcome gets
    its own write's answer (by track id, both got the second's, and nothing was announced)."""
    settings = worker_settings(sinks="tags,events", batch_size=8, batch_max_wait_ms=2000,
                               kafka_events_topic=f"ev-{os.urandom(4).hex()}")
    refs = refs_for(clips[:1])
    assert produce_refs(settings, refs) + produce_refs(settings, refs) == 2  # two messages
    stats = run(settings, until_idle=True)
    assert (stats.tagged, stats.batches) == (2, 1)  # both messages in one batch
    events = listed(settings, capsys)
    assert [(e["track_id"], e["change"]) for e in events] == [(refs[0]["track_id"], "new")]
