"""TagStore on a real redis-server: layout, re-tags leave no stale memberships, reads."""

from __future__ import annotations

import uuid

import pytest

from genretag.core.settings import ReaderSettings, load_settings
from genretag.core.tagstore import TagStore, connect
from genretag.schemas import TagRecord

pytestmark = pytest.mark.integration


@pytest.fixture
def store(stack) -> TagStore:
    settings = load_settings(ReaderSettings, redis_url=stack.redis_url)
    return TagStore(connect(settings), f"ts{uuid.uuid4().hex[:6]}:")


def rec(tid: str, version: str, probs: dict[str, float], labels: list[str]) -> TagRecord:
    return TagRecord(track_id=tid, model_version=version, probabilities=probs, labels=labels)


def test_retag_moves_genre_and_model_membership(store: TagStore) -> None:
    store.write([rec("t1", "v1", {"rock": 0.9, "pop": 0.6}, ["rock", "pop"])])
    assert store.top("rock") == [("t1", 0.9)] and store.top("pop") == [("t1", 0.6)]
    assert store.count_model("v1") == 1
    store.write([rec("t1", "v2", {"rock": 0.2, "pop": 0.7}, ["pop"])])
    assert store.top("rock") == []
    assert store.top("pop") == [("t1", 0.7)]
    assert store.count_model("v1") == 0 and store.count_model("v2") == 1
    assert store.get("t1").labels == ["pop"]
    assert store.models() == ["v1", "v2"]


def test_top_orders_filters_and_limits(store: TagStore) -> None:
    store.write([rec(f"t{i}", "v1", {"jazz": i / 10}, ["jazz"]) for i in range(1, 10)])
    assert [t for t, _ in store.top("jazz", limit=3)] == ["t9", "t8", "t7"]
    assert [t for t, _ in store.top("jazz", min_score=0.75)] == ["t9", "t8"]
    assert sorted(store.scan_track_ids()) == sorted(f"t{i}" for i in range(1, 10))
    assert store.get_many(["t1", "nope"])["nope"] is None


def test_other_kinds_sit_beside_genres_and_retag_moves_them(stack) -> None:
    settings = load_settings(ReaderSettings, redis_url=stack.redis_url)
    prefix = f"ts{uuid.uuid4().hex[:6]}:"
    store = TagStore(connect(settings), prefix, {"happy": "mood", "80s": "era", "rock": "genre"})
    probs = {"rock": 0.8, "happy": 0.6, "80s": 0.5}
    store.write([rec("t1", "m1", probs, ["rock", "happy", "80s"])])
    assert store.top("rock") == [("t1", 0.8)]
    assert store.top("happy") == [] and store.top("happy", genre=False) == [("t1", 0.6)]
    assert store.genres() == ["rock"]
    assert store.labels_of_kind("mood") == {"happy": 1} and store.labels_of_kind("era") == {"80s": 1}
    assert store.labels_of_kind("genre") == {"rock": 1}
    assert store.client.hget(store.track_key("t1"), "kinds") == '{"happy": "mood", "80s": "era"}'
    # A re-tag by a model that knows no kinds (an older artifact) removes the mood/era entries.
    plain = TagStore(connect(settings), prefix)
    plain.write([rec("t1", "v1", {"pop": 0.7}, ["pop"])])
    assert store.top("happy", genre=False) == [] and store.top("80s", genre=False) == []
    assert store.top("rock") == [] and store.top("pop") == [("t1", 0.7)]
    assert store.labels_of_kind("mood") == {}
    # And back: writing the same record twice leaves one membership (idempotent).
    for _ in range(2):
        store.write([rec("t1", "m1", probs, ["rock", "happy", "80s"])])
    assert store.top("happy", genre=False) == [("t1", 0.6)] and store.top("pop") == []
    assert store.client.zcard(store.tag_key("happy")) == 1
