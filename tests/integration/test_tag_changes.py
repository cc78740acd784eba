"""The tag store's one Lua write tells what changed, on a real redis-server: new, changed
(model version, label set, primary genre) or unchanged, and a redelivery of the message that
made the last change is recognised even though its write changes nothing."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from genretag.core.settings import ReaderSettings, load_settings
from genretag.core.store import connect
from genretag.schemas import TagRecord
from tests.store_parts import StoreParts, store_parts

pytestmark = pytest.mark.integration


@pytest.fixture
def store(stack) -> StoreParts:
    settings = load_settings(ReaderSettings, redis_url=stack.redis_url)
    return store_parts(connect(settings.redis), f"tc{uuid.uuid4().hex[:6]}:")


def rec(version: str, probs: dict[str, float], labels: list[str], primary: str | None = None,
        tid: str = "t1") -> TagRecord:
    return TagRecord(track_id=tid, model_version=version, probabilities=probs, labels=labels,
                     primary_genre=primary)


ROCK_POP = rec("v1", {"rock": 0.9, "pop": 0.6}, ["rock", "pop"], "rock")


def write_one(store: StoreParts, record: TagRecord, source: str):
    result = store.writer.write([record], sources=[source])
    assert result.by_record[0] is result.previous[record.track_id]
    return result.previous[record.track_id]


def test_a_new_track_is_a_change_and_the_same_tags_again_are_not(store: StoreParts) -> None:
    first = write_one(store, ROCK_POP, "tracks:0:5")
    assert first.changed and not first.existed and first.redelivered is None
    # Another message (another offset) with the same content: nothing changed.
    same = write_one(store, ROCK_POP.model_copy(update={"probabilities": {"rock": 0.91,
                                                                         "pop": 0.6}}),
                     "tracks:0:9")
    assert not same.changed and same.redelivered is None
    # Label order alone is not a change (it follows probabilities in their last digits).
    swapped = write_one(store, rec("v1", {"rock": 0.6, "pop": 0.6}, ["pop", "rock"], "rock"),
                        "tracks:0:10")
    assert not swapped.changed


@pytest.mark.parametrize("after", [
    rec("v2", {"rock": 0.9, "pop": 0.6}, ["rock", "pop"], "rock"),  # model version
    rec("v1", {"rock": 0.9, "pop": 0.4}, ["rock"], "rock"),  # a label less
    rec("v1", {"rock": 0.9, "pop": 0.6, "jazz": 0.7}, ["rock", "jazz", "pop"], "rock"),  # one more
    rec("v1", {"rock": 0.9, "pop": 0.6}, ["rock", "pop"], "pop"),  # primary genre
    rec("v1", {"rock": 0.9, "jazz": 0.6}, ["rock", "jazz"], "rock"),  # same count, other label
])
def test_each_part_of_the_tags_makes_a_change(store: StoreParts, after: TagRecord) -> None:
    write_one(store, ROCK_POP, "tracks:1:0")
    previous = write_one(store, after, "tracks:1:1")
    assert previous.changed
    assert (previous.model_version, previous.labels, previous.primary_genre) == (
        "v1", ("rock", "pop"), "rock")


def test_a_redelivery_of_the_changing_message_is_recognised(store: StoreParts) -> None:
    write_one(store, rec("v1", {"rock": 0.2}, [], "rock"), "tracks:2:3")
    change = write_one(store, ROCK_POP.model_copy(update={"model_version": "v2"}), "tracks:2:7")
    assert change.changed
    # The same message again (a worker died before its event was published): unchanged, yet
    # the change was its own, with what it changed from.
    again = write_one(store, ROCK_POP.model_copy(update={"model_version": "v2"}), "tracks:2:7")
    assert not again.changed and again.redelivered is not None
    assert (again.redelivered.model_version, again.redelivered.labels,
            again.redelivered.primary_genre) == ("v1", (), "rock")
    # Still recognised after another message rewrote the same tags (it changed nothing)...
    write_one(store, ROCK_POP.model_copy(update={"model_version": "v2"}), "tracks:2:9")
    assert write_one(store, ROCK_POP.model_copy(update={"model_version": "v2"}),
                     "tracks:2:7").redelivered is not None
    # ...but not by any other message, nor by a write without coordinates.
    assert write_one(store, ROCK_POP.model_copy(update={"model_version": "v2"}),
                     "tracks:2:9").redelivered is None
    assert write_one(store, ROCK_POP.model_copy(update={"model_version": "v2"}),
                     "").redelivered is None
    stored = store.client.hgetall(store.keys.track("t1"))
    assert stored["changed_by"] == "tracks:2:7"
    assert json.loads(stored["changed_from"]) == ["v1", [], "rock"]


def test_a_first_write_redelivered_is_recognised_as_new(store: StoreParts) -> None:
    write_one(store, ROCK_POP, "tracks:3:0")
    again = write_one(store, ROCK_POP, "tracks:3:0")
    assert not again.changed and again.redelivered is not None
    assert not again.redelivered.existed and again.redelivered.labels is None


def test_one_track_twice_in_a_batch_gets_each_writes_own_answer(store: StoreParts) -> None:
    result = store.writer.write([ROCK_POP, ROCK_POP], sources=["tracks:4:0", "tracks:4:1"])
    first, second = result.by_record
    assert first.changed and not first.existed
    assert not second.changed and second.existed and second.redelivered is None
    assert result.previous["t1"] is second


def test_a_refused_track_has_no_answer_and_the_others_keep_their_place(
        store: StoreParts) -> None:
    store.client.set(store.keys.track("bad"), "left over")
    result = store.writer.write(
        [rec("v1", {"rock": 0.5}, ["rock"], "rock", tid="bad"), ROCK_POP],
        sources=["tracks:5:0", "tracks:5:1"])
    assert result.by_record[0] is None and "TRACKKEY" in result.refused["bad"]
    assert result.by_record[1].changed


def test_sources_must_match_the_records(store: StoreParts) -> None:
    with pytest.raises(ValueError, match="1 sources for 2 records"):
        store.writer.write([ROCK_POP, ROCK_POP], sources=["tracks:6:0"])


def test_each_write_is_one_hset_of_the_track_hash(store: StoreParts) -> None:
    """Keyspace watchers (and the faults suite's write counter) see one write per track."""
    old = store.client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    store.client.config_set("notify-keyspace-events", "Kh")
    pubsub = store.client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(f"__keyspace@0__:{store.keys.track('t1')}")
        for source in ("tracks:7:0", "tracks:7:0", "tracks:7:1"):  # change, mine, unchanged
            write_one(store, ROCK_POP, source)
        seen = []
        deadline = time.monotonic() + 5
        while len(seen) < 4 and time.monotonic() < deadline:
            if (msg := pubsub.get_message(timeout=0.2)) is not None:
                seen.append(msg["data"])
        assert seen.count("hset") == 3, seen
    finally:
        pubsub.close()
        store.client.config_set("notify-keyspace-events", old)
