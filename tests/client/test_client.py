"""`genretag.client.TagClient` against a real redis-server, on data written by the worker's own
write path (TagWriter's Lua script), so the client reads exactly what production stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from genretag.client import Page, ScoredTrack, TagClient
from genretag.core.store import connect
from genretag.core.settings import RedisSection
from genretag.core.trackids import path_track_id
from genretag.schemas import DeadLetter, ReasonCode, TagRecord, Timeline, TrackRef
from tests.store_parts import store_parts

pytestmark = pytest.mark.heavy  # a real redis-server (tests/client/conftest.py)


def record(tid: str, version: str = "v1", uri: str | None = None, **probs: float) -> TagRecord:
    labels = sorted((k for k, p in probs.items() if p >= 0.5), key=lambda k: -probs[k])
    return TagRecord(track_id=tid, model_version=version, probabilities=probs, labels=labels,
                     uri=uri)


def letter(tid: str | None, reason: ReasonCode, offset: int, minutes_ago: int) -> DeadLetter:
    ref = TrackRef(track_id=tid, uri=f"/m/{tid}.mp3") if tid else None
    return DeadLetter(reason=reason, detail="why", stage="decode" if ref else "parse",
                      track_id=tid, original=ref.model_dump_json() if ref else "not json",
                      track=ref, source_topic="t", source_partition=0, source_offset=offset,
                      worker_id="w", failed_at=datetime.now(UTC) - timedelta(minutes=minutes_ago))


@pytest.fixture
def client(redis_url: str, prefix: str):
    with TagClient.connect(redis_url, key_prefix=prefix) as c:
        yield c


def writer(redis_url: str, prefix: str, kinds: dict[str, str] | None = None):
    return store_parts(connect(RedisSection(url=redis_url)), prefix, kinds).writer


def test_tags_by_id_many_and_missing(client: TagClient, redis_url: str, prefix: str) -> None:
    writer(redis_url, prefix).write([record("a", rock=0.9, jazz=0.2), record("b", jazz=0.7)])
    got = client.tags("a")
    assert isinstance(got, TagRecord)
    assert got.labels == ["rock"] and got.probabilities == {"rock": 0.9, "jazz": 0.2}
    assert client.tags("nope") is None
    many = client.tags_many(["b", "nope", "a"])
    assert list(many) == ["b", "nope", "a"]
    assert many["b"].labels == ["jazz"] and many["nope"] is None


def test_tags_by_uri_use_the_producers_id(client: TagClient, redis_url: str, prefix: str,
                                          tmp_path: Path, monkeypatch) -> None:
    song = tmp_path / "My Song.mp3"
    tid = path_track_id(song)  # what `genretag produce FOLDER` gives this file
    writer(redis_url, prefix).write([record(tid, uri=str(song), rock=0.8)])
    assert client.tags_of_uri(song).track_id == tid
    assert client.tags_of_uri(str(song)).uri == str(song)
    assert client.tags_of_uri(f"file://{song}").track_id == tid
    monkeypatch.chdir(tmp_path)  # a relative path resolves from the current folder
    assert client.track_id_of("My Song.mp3") == tid
    monkeypatch.setenv("HOME", str(tmp_path))
    assert client.track_id_of("~/My Song.mp3") == tid
    assert client.tags_of_uri(tmp_path / "other.mp3") is None
    assert client.track_id_of("http://x/a.mp3") != client.track_id_of("http://y/a.mp3")


def test_tracks_of_a_genre_paginate_best_first(client: TagClient, redis_url: str,
                                               prefix: str) -> None:
    writer(redis_url, prefix).write([record(f"r{i}", rock=0.5 + i / 100) for i in range(25)])
    first = client.tracks("rock", limit=10)
    assert isinstance(first, Page) and first.offset == 0 and first.next_offset == 10
    assert [t.track_id for t in first] == [f"r{i}" for i in range(24, 14, -1)]
    assert first.items[0] == ScoredTrack("r24", pytest.approx(0.74))
    second = client.tracks("rock", limit=10, offset=first.next_offset)
    third = client.tracks("rock", limit=10, offset=second.next_offset)
    assert len(third) == 5 and third.next_offset is None
    seen = [t.track_id for page in (first, second, third) for t in page]
    assert sorted(seen) == sorted(f"r{i}" for i in range(25)) and len(set(seen)) == 25
    exact = client.tracks("rock", limit=5, offset=20)  # a page that ends exactly at the end
    assert len(exact) == 5 and exact.next_offset is None
    above = client.tracks("rock", min_score=0.70, limit=100)
    assert [t.track_id for t in above] == ["r24", "r23", "r22", "r21", "r20"]
    assert client.tracks("polka").items == []
    with pytest.raises(ValueError, match="limit"):
        client.tracks("rock", limit=0)
    with pytest.raises(ValueError, match="kind"):
        client.tracks("rock", kind="colour")


def test_other_kinds_and_label_counts(client: TagClient, redis_url: str, prefix: str) -> None:
    writer(redis_url, prefix, {"happy": "mood", "80s": "era"}).write([
        record("a", rock=0.9, happy=0.8), record("b", rock=0.6, happy=0.55, **{"80s": 0.7})])
    assert [t.track_id for t in client.tracks("happy", kind="mood")] == ["a", "b"]
    assert client.tracks("happy").items == []  # a mood is not a genre ranking
    assert client.labels("genre") == {"rock": 2}
    assert client.labels("mood") == {"happy": 2}
    assert client.labels("era") == {"80s": 1}
    assert client.genres() == ["rock"]
    assert client.kind_of_label("happy") == "mood" and client.kind_of_label("rock") == "genre"
    assert client.kind_of_label("polka") is None


def test_timeline(client: TagClient, redis_url: str, prefix: str) -> None:
    tl = Timeline(clip_seconds=6.0, labels=["rock", "jazz"], starts=[10.0, 100.0],
                  probabilities=[[0.9, 0.1], [0.2, 0.8]], silent=[False, False])
    writer(redis_url, prefix).write([record("a", rock=0.55, jazz=0.45).model_copy(
        update={"timeline": tl}), record("b", rock=0.9)])
    assert client.timeline("a") == tl
    assert client.timeline("b") is None and client.timeline("nope") is None


def test_dead_letters_newest_first_and_purge(client: TagClient, redis_url: str,
                                             prefix: str) -> None:
    writer(redis_url, prefix).write([], dead_letters=[
        letter("old", ReasonCode.UNDECODABLE, 1, minutes_ago=9),
        letter("new", ReasonCode.UNDECODABLE, 2, minutes_ago=1),
        letter("short", ReasonCode.TOO_SHORT, 3, minutes_ago=5),
        letter(None, ReasonCode.BAD_MESSAGE, 4, minutes_ago=2)])
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    raw.hset(f"{prefix}dlq", "junk", "not a dead letter")
    keys = [e.key for e in client.dead_letters()]
    assert keys == ["new", "t:0:4", "short", "old", "junk"]
    assert client.dead_letters()[-1].reason == "unreadable"
    assert [e.key for e in client.dead_letters("undecodable", limit=1)] == ["new"]
    assert client.dead_letters()[0].letter.track.uri == "/m/new.mp3"
    dry = client.purge_dead_letters("undecodable", dry_run=True)
    assert (dry.found, dry.purged, dry.dry_run) == (2, 0, True)
    assert len(client.dead_letters()) == 5
    done = client.purge_dead_letters("undecodable")
    assert (done.found, done.purged, done.kept) == (2, 2, 0)
    assert [e.key for e in client.dead_letters()] == ["t:0:4", "short", "junk"]


def test_stats_hide_emptied_genres_and_versions(client: TagClient, redis_url: str,
                                                prefix: str) -> None:
    w = writer(redis_url, prefix)
    w.write([record("a", "v1", rock=0.9), record("b", "v1", jazz=0.8), record("c", "v1", jazz=0.7)],
            dead_letters=[letter("x", ReasonCode.SILENT, 1, 0)])
    w.write([record("a", "v2", jazz=0.6)])  # a re-tag: rock and (partly) v1 empty out
    stats = client.stats()
    assert stats.tracks == 3
    assert stats.genres == {"jazz": 3}
    assert stats.models == {"v1": 2, "v2": 1}
    assert stats.dead_letters == 1 and stats.dead_letters_by_reason == {"silent": 1}
    assert stats.as_dict()["dead_letters"] == {"total": 1, "by_reason": {"silent": 1}}
    assert client.models() == ["v1", "v2"]


def test_from_env_reads_the_same_settings_as_the_cli(redis_url: str, prefix: str,
                                                     monkeypatch) -> None:
    writer(redis_url, prefix).write([record("a", rock=0.9)])
    monkeypatch.setenv("GENRETAG_REDIS_URL", redis_url)
    monkeypatch.setenv("GENRETAG_REDIS_KEY_PREFIX", prefix)
    with TagClient.from_env() as c:
        assert c.tags("a").labels == ["rock"]
    with TagClient.from_env(redis_key_prefix="elsewhere:") as c:
        assert c.tags("a") is None


def test_unreachable_redis_raises_redis_connection_error(free_port_url: str) -> None:
    with TagClient.connect(free_port_url) as c, pytest.raises(redis.exceptions.ConnectionError):
        c.tags("a")


@pytest.fixture
def free_port_url() -> str:
    from genretag.cli.stack import free_port

    return f"redis://127.0.0.1:{free_port()}/0"
