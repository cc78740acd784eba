"""The tag store on a real redis-server: layout, re-tags leave no stale memberships, reads,
and each write reports what the track held before."""

from __future__ import annotations

import uuid

import pytest

from genretag.core.settings import ReaderSettings, load_settings
from genretag.core.store import connect
from tests.store_parts import StoreParts, store_parts
from genretag.schemas import TagRecord

pytestmark = pytest.mark.integration


@pytest.fixture
def store(stack) -> StoreParts:
    settings = load_settings(ReaderSettings, redis_url=stack.redis_url)
    return store_parts(connect(settings.redis), f"ts{uuid.uuid4().hex[:6]}:")


def rec(tid: str, version: str, probs: dict[str, float], labels: list[str]) -> TagRecord:
    return TagRecord(track_id=tid, model_version=version, probabilities=probs, labels=labels)


def test_retag_moves_genre_and_model_membership(store: StoreParts) -> None:
    store.writer.write([rec("t1", "v1", {"rock": 0.9, "pop": 0.6}, ["rock", "pop"])])
    assert store.reader.top("rock") == [("t1", 0.9)] and store.reader.top("pop") == [("t1", 0.6)]
    assert store.client.scard(store.keys.model("v1")) == 1
    store.writer.write([rec("t1", "v2", {"rock": 0.2, "pop": 0.7}, ["pop"])])
    assert store.reader.top("rock") == []
    assert store.reader.top("pop") == [("t1", 0.7)]
    assert store.client.scard(store.keys.model("v1")) == 0 and store.client.scard(store.keys.model("v2")) == 1
    assert store.reader.get("t1").labels == ["pop"]
    assert store.reader.models() == ["v1", "v2"]


def test_top_orders_filters_and_limits(store: StoreParts) -> None:
    store.writer.write([rec(f"t{i}", "v1", {"jazz": i / 10}, ["jazz"]) for i in range(1, 10)])
    assert [t for t, _ in store.reader.top("jazz", limit=3)] == ["t9", "t8", "t7"]
    assert [t for t, _ in store.reader.top("jazz", min_score=0.75)] == ["t9", "t8"]
    assert sorted(store.reader.scan_track_ids()) == sorted(f"t{i}" for i in range(1, 10))
    assert store.reader.get_many(["t1", "nope"])["nope"] is None


def test_other_kinds_sit_beside_genres_and_retag_moves_them(stack) -> None:
    settings = load_settings(ReaderSettings, redis_url=stack.redis_url)
    prefix = f"ts{uuid.uuid4().hex[:6]}:"
    store = store_parts(connect(settings.redis), prefix, {"happy": "mood", "80s": "era", "rock": "genre"})
    probs = {"rock": 0.8, "happy": 0.6, "80s": 0.5}
    store.writer.write([rec("t1", "m1", probs, ["rock", "happy", "80s"])])
    assert store.reader.top("rock") == [("t1", 0.8)]
    assert store.reader.top("happy") == [] and store.reader.top("happy", genre=False) == [("t1", 0.6)]
    assert store.reader.genres() == ["rock"]
    assert store.reader.labels_of_kind("mood") == {"happy": 1} and store.reader.labels_of_kind("era") == {"80s": 1}
    assert store.reader.labels_of_kind("genre") == {"rock": 1}
    assert store.client.hget(store.keys.track("t1"), "kinds") == '{"happy": "mood", "80s": "era"}'
    # A re-tag by a model that knows no kinds (an older artifact) removes the mood/era entries.
    plain = store_parts(connect(settings.redis), prefix)
    plain.writer.write([rec("t1", "v1", {"pop": 0.7}, ["pop"])])
    assert store.reader.top("happy", genre=False) == [] and store.reader.top("80s", genre=False) == []
    assert store.reader.top("rock") == [] and store.reader.top("pop") == [("t1", 0.7)]
    assert store.reader.labels_of_kind("mood") == {}
    # And back: writing the same record twice leaves one membership (idempotent).
    for _ in range(2):
        store.writer.write([rec("t1", "m1", probs, ["rock", "happy", "80s"])])
    assert store.reader.top("happy", genre=False) == [("t1", 0.6)] and store.reader.top("pop") == []
    assert store.client.zcard(store.keys.tag("happy")) == 1


def test_write_reports_what_each_track_held_before(store: StoreParts) -> None:
    first = store.writer.write([rec("t1", "v1", {"rock": 0.9, "pop": 0.6}, ["rock", "pop"]),
                                rec("t2", "v1", {"rock": 0.1}, [])])
    assert first.refused == {}
    assert not first.previous["t1"].existed and first.previous["t1"].labels is None
    again = store.writer.write([rec("t1", "v2", {"rock": 0.2, "pop": 0.7}, ["pop"])])
    assert again.previous["t1"].model_version == "v1"
    assert again.previous["t1"].labels == ("rock", "pop")
    third = store.writer.write([rec("t1", "v2", {"rock": 0.2, "pop": 0.7}, ["pop"]),
                                rec("t2", "v2", {"rock": 0.1}, [])])
    assert third.previous["t1"].primary_genre is None  # written without one
    with_primary = rec("t2", "v3", {"rock": 0.1}, []).model_copy(update={"primary_genre": "rock"})
    fourth = store.writer.write([with_primary])
    assert store.reader.get("t2").primary_genre == "rock"  # shown even with no label
    again = store.writer.write([with_primary])
    assert fourth.previous["t2"].primary_genre is None
    assert again.previous["t2"].primary_genre == "rock"
    assert third.previous["t1"].labels == ("pop",) and third.previous["t1"].model_version == "v2"
    assert third.previous["t2"].labels == () and third.previous["t2"].model_version == "v1"
