"""Every way a live Redis refuses a tag write, classified as data (core/errors.py).

A dedicated redis-server is put into each refusing state (tests/faults/refusals.py): the write
must raise an error the worker's retry policy retries (not one that kills the worker), and
succeed once an operator lifts the state. A track whose own key is of the wrong type (or holds
unreadable labels) is named by the write, with the rest of the batch written.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.exceptions

from genretag.core.errors import is_fatal, is_redis_refusal, redis_error_code
from tests.store_parts import store_parts
from genretag.schemas import TagRecord
from tests.faults.refusals import REFUSALS, RedisServer
from genretag.worker.retry import RetryPolicy

pytestmark = pytest.mark.integration
POLICY = RetryPolicy(initial_s=0.1, max_s=1.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path_factory.mktemp("refusing-redis"))
    yield running
    running.close()


def records(prefix: str, n: int = 3) -> list[TagRecord]:
    return [TagRecord(track_id=f"{prefix}-{i}", model_version="v1",
                      probabilities={"rock": 0.9, "jazz": 0.2}, labels=["rock"])
            for i in range(n)]


@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_a_refusing_redis_is_retried_and_the_write_lands_once_lifted(
        server: RedisServer, code: str) -> None:
    store = store_parts(redis.Redis(port=server.port, decode_responses=True), f"r{code}:")
    batch = records(code)
    refusal = REFUSALS[code]
    refusal.enter(server)
    try:
        with pytest.raises(redis.exceptions.RedisError) as caught:
            store.writer.write(batch)
    finally:
        refusal.leave(server)
    exc = caught.value
    assert redis_error_code(exc) == code, exc
    assert is_redis_refusal(exc) and not is_fatal(exc)
    assert POLICY.is_retryable(exc), f"{code} would stop the worker: {exc!r}"
    assert store.writer.write(batch).refused == {}
    assert store.reader.get(f"{code}-2").labels == ["rock"]


def test_a_shared_key_of_the_wrong_type_is_retried_not_blamed_on_a_track(
        server: RedisServer) -> None:
    store = store_parts(redis.Redis(port=server.port, decode_responses=True), "shared:")
    server.client.set("shared:genre:rock", "not a sorted set")
    with pytest.raises(redis.exceptions.ResponseError) as caught:
        store.writer.write(records("s"))
    assert redis_error_code(caught.value) == "WRONGTYPE" and POLICY.is_retryable(caught.value)
    server.client.delete("shared:genre:rock")  # the operator removes the stale key
    assert store.writer.write(records("s")).refused == {}


@pytest.mark.parametrize("plant", ["string", "list", "unreadable labels"])
def test_a_tracks_own_bad_key_is_named_and_the_rest_of_the_batch_is_written(
        server: RedisServer, plant: str) -> None:
    prefix = f"own{plant.replace(' ', '')}:"
    store = store_parts(redis.Redis(port=server.port, decode_responses=True), prefix)
    bad = f"{prefix}track:t-1"
    if plant == "string":
        server.client.set(bad, "stale")
    elif plant == "list":
        server.client.rpush(bad, "stale")
    else:
        server.client.hset(bad, mapping={"labels": "{not json", "model_version": "v0"})
    refused = store.writer.write(records("t")).refused
    assert list(refused) == ["t-1"] and refused["t-1"].startswith(f"TRACKKEY {bad} ")
    assert redis_error_code(redis.exceptions.ResponseError(refused["t-1"])) == "TRACKKEY"
    assert store.reader.get("t-0") is not None and store.reader.get("t-2") is not None
    assert store.reader.top("rock") and "t-1" not in dict(store.reader.top("rock"))
    if plant != "unreadable labels":
        assert server.client.type(bad) == plant  # refused before anything was changed


def test_an_unknown_error_reply_is_fatal_and_auth_errors_stay_fatal() -> None:
    unknown = redis.exceptions.ResponseError("ERR unknown command 'EVALSHA'")
    assert is_fatal(unknown) and not POLICY.is_retryable(unknown)
    annotated = redis.exceptions.ResponseError(
        "Command # 2 (EVALSHA abc 1 k) of pipeline caused error: MISCONF Errors writing")
    assert redis_error_code(annotated) == "MISCONF" and POLICY.is_retryable(annotated)
    noperm = redis.exceptions.NoPermissionError("this user has no permissions")
    assert is_fatal(noperm) and not POLICY.is_retryable(noperm)
