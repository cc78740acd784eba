"""Server outages under running workers: Redis SIGKILLed for a while, the broker restarted.

The module has its own LocalStack (Tansu + redis-server): its servers are killed here, so the
session stack other tests share is never touched. Redis runs with AOF ``appendfsync always``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genretag.core.kafka import ensure_topics, make_producer
from genretag.cli.stack import LocalStack
from genretag.core.store import connect
from tests.faults.config import REPO_ROOT, SIZES
from tests.faults.harness import (
    Coord,
    agreement_problems,
    all_committed,
    assign,
    committed,
    consistency_problems,
    end_offsets_of,
    ensure_stack_up,
    fault_settings,
    read_state,
    send_tracks,
    settings_env,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("outage-stack")) as running:
        yield running


@pytest.fixture
def live(own_stack: LocalStack) -> LocalStack:
    """The module's stack with both servers up (a failed test may have left one down)."""
    ensure_stack_up(own_stack)
    return own_stack


def test_redis_sigkilled_mid_run_workers_retry_commit_nothing_and_lose_nothing(
    live, demo_model, fault_clips, audio_root, reference, workers, sizes, figures
) -> None:
    """Two workers; Redis is SIGKILLed mid-run, kept down, restarted from its AOF.

    While it is down the committed offsets must not move and both workers must stay up; after
    the restart every tag a client could read before the kill is still there, every committed
    message has its tags, and the run completes with exactly a clean run's tags.
    """
    settings = fault_settings(live, demo_model, [audio_root], batch_size=2)
    tracks = assign("outage", sizes.outage_tracks, fault_clips)
    coords = send_tracks(settings, tracks)
    ends = end_offsets_of(list(coords.values()))
    total = sum(ends.values())
    pool = [workers.start(settings, f"outage-{i}") for i in range(2)]
    wait_until(lambda: sum(committed(settings).values()) >= total // 3, 180,
               "a third of the run to be committed", interval_s=0.1, diagnose=pool[0].tail)

    acknowledged = read_state(connect(settings.redis), settings.redis.key_prefix).tracks
    live.stop_service("redis", signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(1.5)  # a commit already past its Redis write may still land
    frozen = committed(settings)
    assert sum(frozen.values()) < total, "the run finished before the outage: make it longer"
    moved: list[dict[int, int]] = []
    while time.monotonic() - killed_at < sizes.redis_outage_s:
        now = committed(settings)
        if now != frozen:
            moved.append(now)
        for w in pool:
            assert w.alive(), f"a worker died during the Redis outage:\n{w.tail()}"
        time.sleep(0.5)
    retries = sum(w.count("worker.transient_error") for w in pool)
    live.start_redis()
    outage_s = time.monotonic() - killed_at

    after = read_state(connect(settings.redis), settings.redis.key_prefix).tracks
    lost_acked = sorted(t for t in acknowledged if after.get(t) != acknowledged[t])
    committed_tracks = [t for t, (p, off) in coords.items() if off < frozen.get(p, 0)]
    committed_but_missing = sorted(t for t in committed_tracks if t not in after)

    wait_until(lambda: all_committed(settings, ends) or not all(w.alive() for w in pool), 240,
               "the run to complete after the outage", diagnose=lambda: pool[0].tail(10))
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    lost, problems = agreement_problems(state, tracks, reference)
    problems += consistency_problems(state)
    alive = [w.alive() for w in pool]
    for w in pool:
        w.signal(signal.SIGTERM)
    codes = [w.wait(60) for w in pool]
    figures("Redis SIGKILLed mid-run, restarted from AOF", outages=1, tracks=len(tracks),
            lost=len(lost), outage_s=round(outage_s, 1), commits_during_outage=len(moved),
            acknowledged_tags_lost=len(lost_acked), acknowledged_tags_checked=len(acknowledged),
            committed_without_tags=len(committed_but_missing), retries_logged=retries)
    assert not moved, f"offsets were committed while Redis was down: {frozen} → {moved[:3]}"
    assert not lost_acked, f"acknowledged tags lost by the Redis crash: {lost_acked[:10]}"
    assert not committed_but_missing, committed_but_missing[:10]
    assert retries > 0, "no worker logged a retry during the outage"
    assert all(alive), [w.tail() for w in pool]
    assert not lost, lost[:10]
    assert not problems, problems[:10]
    assert codes == [0, 0], [w.tail() for w in pool]


def refill(settings, ends: dict[int, int], prefix: str, clip: Path) -> dict[str, Coord]:
    """Send tracks until every partition's log is back to at least ``ends`` (see the test)."""
    sent: dict[str, Coord] = {}
    have: dict[int, int] = {}
    producer = make_producer(settings.kafka, linger_ms=0)
    try:
        while any(have.get(p, 0) < end for p, end in ends.items()):
            assert len(sent) < 2000, "could not refill the partitions"
            tid = f"{prefix}-{len(sent):04d}"
            coord = send_tracks(settings, {tid: str(clip)}, producer)[tid]
            sent[tid] = coord
            have[coord[0]] = coord[1] + 1
    finally:
        producer.close()
    return sent


def restart_broker(stack: LocalStack, settings, worker, down_s: float = 5.0) -> float:
    """SIGKILL Tansu, keep it down ``down_s`` (the worker must stay up), restart it, re-topic."""
    stack.stop_service("tansu", signal.SIGKILL)
    down_at = time.monotonic()
    while time.monotonic() - down_at < down_s:
        assert worker.alive(), f"the worker died while the broker was down:\n{worker.tail()}"
        time.sleep(0.5)
    stack.start_kafka()
    ensure_topics(settings.kafka)  # memory storage: the restart lost them
    return time.monotonic()


def produce_cli(settings, tracks: dict[str, str], path: Path) -> dict:
    """Enqueue with the real ``genretag produce`` command (a fresh producer process)."""
    path.write_text("".join(json.dumps({"track_id": t, "uri": u}) + "\n"
                            for t, u in tracks.items()))
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.run([sys.executable, "-m", "genretag.cli", "produce", str(path),
                           "--no-progress", "--json"], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_broker_restart_worker_reconnects_and_tags_new_tracks_without_restarting(
    live, demo_model, fault_clips, audio_root, reference, workers, sizes, figures, tmp_path
) -> None:
    """Tansu is SIGKILLed and restarted under a running worker; the same process goes on.

    Out of scope: broker-side data loss. Tansu here keeps topics, offsets, groups and producer
    ids in memory only, so a restart loses them (a production Kafka keeps them). The test
    recreates the topics right after the restart, as a persistent broker would still have
    them, refills each partition to at least the offset the worker had reached (so a worker
    that keeps its positions, right on a persistent broker, and one that resets them both reach
    the new messages), then enqueues new tracks with ``genretag produce``. The worker, never
    restarted, must tag them all.
    """
    settings = fault_settings(live, demo_model, [audio_root], batch_size=4)
    before = assign("before", sizes.broker_tracks, fault_clips)
    after = assign("after", sizes.broker_tracks, fault_clips)
    ends = end_offsets_of(list(send_tracks(settings, before).values()))
    worker = workers.start(settings, "broker")
    wait_until(lambda: all_committed(settings, ends) or not worker.alive(), 180,
               "the first tracks to be committed", diagnose=worker.tail)
    restarted_at = restart_broker(live, settings, worker)
    filler = refill(settings, ends, "refill", fault_clips[0])
    report = produce_cli(settings, after, tmp_path / "after.jsonl")
    client = connect(settings.redis)

    def new_tracks_tagged() -> bool:
        tagged = read_state(client, settings.redis.key_prefix).tracks
        return set(after) <= set(tagged) or not worker.alive()

    wait_until(new_tracks_tagged, 240, "the new tracks after the restart", interval_s=0.5,
               diagnose=worker.tail)
    recovery_s = time.monotonic() - restarted_at
    state = read_state(client, settings.redis.key_prefix)
    problems = consistency_problems(state)
    # Refill tracks that a worker keeping its positions skips are broker-side loss: unchecked.
    state.tracks = {t: v for t, v in state.tracks.items() if t not in filler}
    lost, differences = agreement_problems(state, {**before, **after}, reference)
    problems += differences
    starts = worker.count("worker.starting")
    alive = worker.alive()
    worker.signal(signal.SIGTERM)
    rc = worker.wait(60)
    figures("Tansu broker SIGKILLed and restarted", outages=1,
            tracks=len(before) + len(after), lost=len(lost), worker_process_starts=starts,
            restart_to_new_tracks_tagged_s=round(recovery_s, 1),
            notes=["Tansu keeps topics, offsets, groups and producer ids in memory: a broker "
                   "restart loses them, so broker-side data loss is out of scope (the tracks "
                   "acknowledged before the restart had already been tagged)."])
    assert report["enqueued"] == len(after), report
    assert alive, worker.tail()
    assert starts == 1, "the worker process restarted"
    assert not lost, lost[:10]
    assert not problems, problems[:10]
    assert rc == 0, worker.tail()


def test_broker_restart_dead_letters_still_reach_the_dlq(
    live, demo_model, audio_root, workers, figures
) -> None:
    """After a broker restart, a bad input is dead-lettered and the worker goes on."""
    settings = fault_settings(live, demo_model, [audio_root], batch_size=4)
    send_tracks(settings, {"dlq-before": str(audio_root / "missing-1.mp3")})
    worker = workers.start(settings, "broker-dlq")
    client = connect(settings.redis)

    def dead(tid: str) -> Callable[[], bool]:
        return lambda: tid in read_state(client, settings.redis.key_prefix).dlq

    wait_until(dead("dlq-before"), 180, "the first dead letter", diagnose=worker.tail)
    restart_broker(live, settings, worker, down_s=2.0)
    send_tracks(settings, {"dlq-after": str(audio_root / "missing-2.mp3")})
    # Stop waiting early once the known symptom (a producer retry storm) shows.
    wait_until(lambda: dead("dlq-after")() or not worker.alive()
               or worker.lines_containing("UnknownProducerIdError") >= 20,
               120, "the dead letter after the restart", diagnose=worker.tail)
    stuck = worker.lines_containing("UnknownProducerIdError")
    figures("Tansu restart, then a dead letter", outages=1, bad_inputs=1,
            producer_id_errors_logged=stuck)
    assert worker.alive(), worker.tail()
    assert dead("dlq-after")(), f"no dead letter after the restart:\n{worker.tail(5)}"
