"""The consume loop's parts on their own: checkpoint, retry policy, job state, settle path.

The settle and commit tests run against the real local stack (Kafka-protocol broker + redis-
server): the one settle path (dead letters → sinks in order → commit) is the same code for the
loop (retrying) and the revocation (one attempt, urgent), so both are exercised here through
its two ``attempt`` shapes, with a recording sink after the tag store.
"""

from __future__ import annotations

import random
import uuid

import pytest
import redis.exceptions
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from genretag.core.errors import FATAL_ERRORS, TRANSIENT_ERRORS
from genretag.core.kafka import ensure_topics, make_consumer, make_producer
from genretag.core.store import KeyLayout, TagWriter, connect
from genretag.schemas import DeadLetter, ReasonCode, TagRecord
from genretag.worker.checkpoint import Checkpoint, OffsetRegression, next_offsets
from genretag.worker.job import Job, Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.retry import GaveUp, RetryPolicy, retry
from genretag.worker.settle import Settle, once
from genretag.worker.sinks.tags import TagSink
from genretag.worker.stats import WorkerStats
from tests.store_parts import store_parts


def offsets(**by_partition: int) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition("t", int(p[1:])): OffsetAndMetadata(o, "", -1)
            for p, o in by_partition.items()}


# -- checkpoint ------------------------------------------------------------------------------
def test_checkpoint_refuses_an_offset_moving_backwards_before_committing() -> None:
    stats = WorkerStats()
    cp = Checkpoint(consumer=None, stats=stats, metrics=WorkerMetrics("u"))  # never reached
    cp.assign({TopicPartition("t", 0), TopicPartition("t", 1)})
    cp.note_committed(offsets(p0=10, p1=3), during="batch")
    cp.check(offsets(p0=10, p1=4))  # same or forward: fine
    with pytest.raises(OffsetRegression, match="t:0 at 9 would move it back from 10"):
        cp.commit(offsets(p0=9, p1=5))
    assert cp.committed == {TopicPartition("t", 0): 10, TopicPartition("t", 1): 3}
    assert stats.commits == 1
    # A partition that moved away is forgotten: its next commit here starts afresh.
    cp.forget({TopicPartition("t", 0)})
    cp.check(offsets(p0=2))


def test_next_offsets_commit_last_plus_one_per_partition_in_any_order() -> None:
    outcomes = [Outcome("t", 1, 7), Outcome("t", 0, 2), Outcome("t", 1, 4), Outcome("t", 0, 0)]
    assert {tp.partition: m.offset for tp, m in next_offsets(outcomes).items()} == {0: 3, 1: 8}


# -- retry policy ----------------------------------------------------------------------------
def test_retry_delays_grow_to_the_cap_with_jitter_inside_its_bounds() -> None:
    policy = RetryPolicy(initial_s=0.5, max_s=10.0, jitter=0.25)
    assert [policy.base(a) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert not policy.at_cap(4) and policy.at_cap(5) and policy.base(10_000) == 10.0
    rng = random.Random(1)
    for attempt in range(8):
        base = policy.base(attempt)
        draws = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.75 * base <= d <= base for d in draws), attempt
        assert max(draws) - min(draws) > 0.1 * base  # really spread: no lockstep
    # Two replicas meeting the same outage wait different times.
    a, b = random.Random(2), random.Random(3)
    assert [policy.delay(3, a) for _ in range(5)] != [policy.delay(3, b) for _ in range(5)]
    with pytest.raises(ValueError):
        RetryPolicy(initial_s=2.0, max_s=1.0)


def test_retry_backs_off_on_transient_errors_and_never_retries_fatal_ones() -> None:
    policy = RetryPolicy(initial_s=0.1, max_s=0.4, jitter=0.5)
    waits: list[float] = []
    notes: list[str] = []
    calls = iter([redis.exceptions.ConnectionError("down"), redis.exceptions.TimeoutError("slow"),
                  redis.exceptions.ConnectionError("down"), "ok"])

    def flaky() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry(flaky, policy, what="redis_write", wait=waits.append, stopping=lambda: False,
                 on_retry=lambda what, exc, d: notes.append(what)) == "ok"
    assert len(waits) == 3 and notes == ["redis_write"] * 3
    assert 0.05 <= waits[0] <= 0.1 and 0.1 <= waits[1] <= 0.2 and 0.2 <= waits[2] <= 0.4

    fatal_calls = []
    auth = redis.exceptions.AuthenticationError("bad password")  # a ConnectionError subclass
    assert isinstance(auth, TRANSIENT_ERRORS) and isinstance(auth, FATAL_ERRORS)

    def refused() -> None:
        fatal_calls.append(1)
        raise auth

    with pytest.raises(redis.exceptions.AuthenticationError):
        retry(refused, policy, what="redis_ping", wait=waits.append, stopping=lambda: False)
    assert fatal_calls == [1] and len(waits) == 3  # not retried, no wait

    with pytest.raises(ValueError):  # neither transient nor fatal: a bug, propagates at once
        retry(lambda: int("x"), policy, what="x", wait=waits.append, stopping=lambda: False)


def test_a_broker_unknown_server_error_is_retried_not_fatal() -> None:
    """Tansu answers UNKNOWN_SERVER_ERROR to produce requests for seconds after a restart: a
    publish (tag events, dead letters) that got it is retried instead of stopping the worker."""
    from kafka.errors import UnknownError

    policy = RetryPolicy(initial_s=0.01, max_s=0.02)
    replies = iter([UnknownError(), UnknownError(), "acked"])

    def publish() -> str:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    waits: list[float] = []
    assert retry(publish, policy, what="events_publish", wait=waits.append,
                 stopping=lambda: False) == "acked"
    assert len(waits) == 2


def test_retry_gives_up_only_when_stopping_at_the_cap_and_stops_when_abandoned() -> None:
    policy = RetryPolicy(initial_s=0.1, max_s=0.4, jitter=0.0)
    waits: list[float] = []

    def down() -> None:
        raise redis.exceptions.ConnectionError("down")

    with pytest.raises(GaveUp, match="redis_write: ConnectionError: down"):
        retry(down, policy, what="redis_write", wait=waits.append, stopping=lambda: True)
    assert waits == [0.1, 0.2]  # the third failure is at the cap: give up instead of waiting
    waits.clear()
    assert retry(down, policy, what="dlq", wait=waits.append, stopping=lambda: False,
                 abandon=lambda: len(waits) == 2) is None
    assert waits == [0.1, 0.2]


# -- job state -------------------------------------------------------------------------------
def test_job_state_moves_forward_only_through_its_own_methods() -> None:
    job = Job("b", [])
    assert not (job.step_done("dlq") or job.step_done("sink:tags") or job.settled)
    assert job.finished()  # nothing in it
    assert job.mark_step("counted") is True and job.mark_step("counted") is False  # counted once
    job.mark_step("dlq")
    job.mark_settled()
    assert job.step_done("dlq") and job.step_done("counted") and job.settled
    with pytest.raises(AttributeError):
        job.settled = False  # type: ignore[misc]


# -- the one settle path (real broker + redis) -----------------------------------------------
class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset, self.value = "t", partition, offset, b"{}"


def finished_job(worker_id: str) -> Job:
    job = Job("b1", [Msg(0, 5), Msg(0, 6), Msg(1, 2)])
    for i, o in enumerate(job.outcomes[:2]):
        o.record = TagRecord(track_id=f"tr-{i}", model_version="v1",
                             probabilities={"rock": 0.9}, labels=["rock"])
    job.outcomes[2].dead = DeadLetter(
        reason=ReasonCode.UNDECODABLE, detail="not audio", stage="decode", track_id="bad",
        original="{}", source_topic="t", source_partition=1, source_offset=2, worker_id=worker_id)
    return job


class RecordingSink:
    """A sink added without touching the loop: records what it was given, in order."""

    name = "recording"
    operation = "record"

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, object]] = []

    def write(self, outcomes, *, urgent: bool = False) -> dict[str, str]:
        self.seen += [(o.record.track_id, urgent, o.previous) for o in outcomes if o.record]
        return {}

    def close(self) -> None:
        pass


@pytest.mark.integration
def test_settle_writes_dlq_then_sinks_then_commits_each_step_once_whoever_settles(
        worker_settings) -> None:
    settings = worker_settings()
    ensure_topics(settings.kafka)
    stats, metrics = WorkerStats(), WorkerMetrics("u")
    store = store_parts(connect(settings.redis), settings.redis.key_prefix)
    writer = TagWriter(connect(settings.redis), KeyLayout(settings.redis.key_prefix))
    recording = RecordingSink()
    producer = make_producer(settings.kafka)
    settle = Settle(producer, settings.kafka.dlq_topic, [TagSink(writer, writer), recording],
                    stats, metrics, dead_letter=lambda *a: None)
    commits: list = []
    try:
        # A loop attempt that gives up at the DLQ step (job settled elsewhere): nothing written.
        job = finished_job(settings.worker_id)
        assert settle.run(job, lambda step, what: None, commits.append) is False
        assert not job.step_done("dlq") and not job.step_done("sink:tags")
        assert store.reader.get("tr-0") is None and commits == [] and recording.seen == []
        # The revocation's single attempt whose commit is refused, then the loop's retrying
        # one: the same path, each step done once, counted once, committed after the sinks.
        steps: list[str] = []
        assert settle.run(job, lambda step, what: steps.append(what) or once(step, what),
                          lambda o: commits.append(o) and False, urgent=True) is False
        assert steps == ["dlq", "redis_write", "record"] and not job.settled
        assert [(tid, urgent) for tid, urgent, _ in recording.seen] == [("tr-0", True),
                                                                       ("tr-1", True)]
        assert all(prev is not None and not prev.existed for *_, prev in recording.seen)
        assert settle.run(job, lambda step, what: steps.append(what) or step(),
                          lambda o: commits.append(o) or True)
        assert steps == ["dlq", "redis_write", "record"]  # nothing left to do the second time
        assert job.settled and commits == [next_offsets(job.kept())] * 2
        assert commits[0] == offsets(p0=7, p1=3)  # offset + 1 of each partition's last
        assert (stats.tagged, stats.dead_lettered, stats.batches) == (2, 1, 1)
        assert stats.reasons == {"undecodable": 1}
        assert store.reader.get("tr-0").labels == ["rock"] and store.reader.get("tr-1") is not None
    finally:
        producer.close(timeout=5)
    dlq = make_consumer(settings.kafka, None)
    try:
        dlq.assign([TopicPartition(settings.kafka.dlq_topic, p)
                    for p in dlq.partitions_for_topic(settings.kafka.dlq_topic)])
        dlq.seek_to_beginning()
        got = [r for _ in range(20) for rs in dlq.poll(500).values() for r in rs]
    finally:
        dlq.close()
    assert [DeadLetter.model_validate_json(r.value).track_id for r in got] == ["bad"]


@pytest.mark.integration
def test_checkpoint_commits_offset_plus_one_per_partition_on_the_broker(worker_settings) -> None:
    from tests.integration.helpers import committed

    settings = worker_settings(group_id=f"g-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings.kafka)
    consumer = make_consumer(settings.kafka, settings.consumer.group_id)
    stats = WorkerStats()
    try:
        parts = sorted(consumer.partitions_for_topic(settings.kafka.topic))[:2]
        tps = [TopicPartition(settings.kafka.topic, p) for p in parts]
        consumer.assign(tps)
        cp = Checkpoint(consumer, stats, WorkerMetrics("u"))
        cp.assign(set(tps))
        outcomes = [Outcome(tp.topic, tp.partition, off) for tp in tps for off in (0, 1, 2)]
        cp.commit(next_offsets(outcomes))
        assert committed(settings) == {parts[0]: 3, parts[1]: 3}
        with pytest.raises(OffsetRegression):
            cp.commit(next_offsets(outcomes[:1]))
        assert committed(settings) == {parts[0]: 3, parts[1]: 3} and stats.commits == 1
    finally:
        consumer.close()


def test_retry_past_its_deadline_gives_up_naming_the_dependency() -> None:
    """Startup of a batch run: a dependency down (or refusing) past the deadline is one line,
    exit 3 (the CLI prints it), never an endless wait."""
    import time

    from genretag.worker.retry import Unreachable

    policy = RetryPolicy(initial_s=0.05, max_s=0.2, jitter=0.0)
    waits: list[float] = []

    def refusing() -> None:
        raise redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down")

    deadline = time.monotonic() + 0.3
    with pytest.raises(Unreachable, match=r"^Redis at X: is the stack up\? \(last error: "
                                          r"ResponseError: MASTERDOWN Link") as caught:
        retry(refusing, policy, what="redis_ping", wait=lambda s: (waits.append(s),
                                                                   time.sleep(s)),
              stopping=lambda: False, deadline=deadline,
              unreachable="Redis at X: is the stack up?")
    assert caught.value.exit_code == 3
    assert waits and sum(waits) <= 0.3 + 1e-6  # the last wait is cut to the deadline
