"""`genretag work` as a service on real Tansu, redis-server and FFmpeg.

Micro-batching by max wait, pipelining equal to a sequential run, replicas splitting a topic,
SIGTERM mid-run, a Redis outage, a batch slower than max_poll_interval_ms, a re-tag by a new
model version, and the metrics/health endpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from genretag.core.kafka import ensure_topics, make_consumer
from genretag.worker.settings import WorkerSettings
from genretag.cli.stack import free_port
from genretag.core.store import connect
from tests.store_parts import StoreParts, store_parts
from kafka import TopicPartition
from tests.integration.helpers import committed, produce_refs, refs_for
from genretag.core.artifact import load_artifact, save_artifact
from genretag.worker.loop import StopFlag, Worker, WorkerStats

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


# -- helpers ---------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class InThread:
    """A Worker running in a thread of the test process; stopped (gracefully) on exit."""

    def __init__(self, settings: WorkerSettings, until_idle: bool = False) -> None:
        self.stop = StopFlag()
        self.worker = Worker(settings, until_idle=until_idle, stop=self.stop)
        self.stats: WorkerStats | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.stats = self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def __enter__(self) -> InThread:
        self.thread.start()
        return self

    def join(self, timeout_s: float = 60) -> WorkerStats:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker did not stop"
        assert self.error is None, repr(self.error)
        assert self.stats is not None
        return self.stats

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def run_until_idle(settings: WorkerSettings) -> Worker:
    worker = Worker(settings, until_idle=True)
    worker.run()
    return worker


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text → {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def store_for(settings: WorkerSettings) -> StoreParts:
    return store_parts(connect(settings.redis), settings.redis.key_prefix)


def tagged_ids(settings: WorkerSettings) -> set[str]:
    return set(store_for(settings).reader.scan_track_ids())


def settings_env(settings: WorkerSettings) -> dict[str, str]:
    """The settings as GENRETAG_* variables, for a `genretag work` subprocess."""
    return {**os.environ, **settings.as_env(skip=frozenset({"worker_id"}))}


def offsets_to_ids(settings: WorkerSettings, total: int) -> dict[tuple[int, int], str]:
    """(partition, offset) → track id of every message on the topic (manual assignment)."""
    consumer = make_consumer(settings.kafka, None)
    try:
        parts = consumer.partitions_for_topic(settings.kafka.topic)
        consumer.assign([TopicPartition(settings.kafka.topic, p) for p in parts])
        out: dict[tuple[int, int], str] = {}
        deadline = time.monotonic() + 30
        while len(out) < total and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    out[(r.partition, r.offset)] = json.loads(r.value)["track_id"]
        assert len(out) == total
        return out
    finally:
        consumer.close()


def clip_refs(demo_audio, n: int) -> list[dict]:
    """``n`` refs spread over the genres (the demo set is ordered by genre)."""
    clips = sorted(demo_audio, key=lambda c: (int(c.path.stem.rsplit("_", 1)[-1]), c.labels[0]))
    return refs_for([c.path for c in clips[:n]])


# -- tests -----------------------------------------------------------------------------------
def test_batch_closes_after_max_wait_and_metrics_count_it(
        worker_settings, demo_audio, tmp_path: Path) -> None:
    port = free_port()
    settings = worker_settings(batch_size=64, batch_max_wait_ms=1500, metrics_port=port,
                               metrics_host="127.0.0.1", batch_close_when_idle=False)
    broken = tmp_path / "broken.mp3"
    broken.write_text("not audio\n" * 100)
    refs = clip_refs(demo_audio, 3) + refs_for([broken])
    with InThread(settings) as running:
        wait_until(lambda: running.worker.health.joined, 40, "the worker to join its group")
        assert http_get(port, "/healthz")[0] == 200
        code, body = http_get(port, "/readyz")
        assert code == 200 and json.loads(body)["redis"] is True, body
        start = time.monotonic()
        assert produce_refs(settings, refs) == 4
        wait_until(lambda: sum(committed(settings).values()) == 4, 30, "the batch to commit")
        took = time.monotonic() - start
        # One batch of 4, closed by the max wait (batch_size 64 was never reached).
        metrics = samples(http_get(port, "/metrics")[1])
        assert value(metrics, "genretag_batch_size_count") == 1
        assert value(metrics, "genretag_batch_size_sum") == 4
        assert 1.5 <= took < 1.5 + 8, took
        e2e_count = value(metrics, "genretag_end_to_end_seconds_count")
        e2e_sum = value(metrics, "genretag_end_to_end_seconds_sum")
        assert e2e_count == 3 and e2e_sum / e2e_count >= 1.5, (e2e_count, e2e_sum)
        assert value(metrics, "genretag_messages_consumed_total") == 4
        assert value(metrics, "genretag_tracks_tagged_total") == 3
        assert value(metrics, "genretag_dead_letters_total", reason="undecodable") == 1
        assert value(metrics, "genretag_stage_seconds_count", stage="decode") == 4
        for stage in ("model", "write", "commit"):
            assert value(metrics, "genretag_stage_seconds_count", stage=stage) == 1, stage
        assert value(metrics, "genretag_model_info", version="test-1", device="cpu") == 1
        assert value(metrics, "genretag_assigned_partitions") == 4

        def lag_settled() -> bool:
            lag = {k: v for k, v in samples(http_get(port, "/metrics")[1]).items()
                   if k[0] == "genretag_consumer_lag"}
            return len(lag) == len(committed(settings)) and set(lag.values()) == {0.0}

        wait_until(lag_settled, 10, "consumer lag gauges at 0 for the committed partitions")
    stats = running.join()
    assert stats.batches == 1 and stats.tagged == 3 and stats.reasons == {"undecodable": 1}
    with pytest.raises(OSError):  # the endpoint goes away with the worker
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_light_load_batch_closes_without_waiting_out_max_wait(
        worker_settings, demo_audio) -> None:
    """One message into an idle worker: it is tagged at once, not after batch_max_wait_ms."""
    settings = worker_settings(batch_size=64, batch_max_wait_ms=60000)
    refs = clip_refs(demo_audio, 2)
    with InThread(settings) as running:
        wait_until(lambda: running.worker.health.joined, 40, "the worker to join its group")
        for n, ref in enumerate(refs, start=1):  # one at a time: each is its own batch
            produce_refs(settings, [ref])
            wait_until(lambda n=n: sum(committed(settings).values()) == n, 30,
                       f"message {n} to be tagged well inside the 60 s max wait")
    stats = running.join()
    assert stats.batches == 2 and stats.tagged == 2
    assert tagged_ids(settings) == {r["track_id"] for r in refs}


def test_backlog_still_fills_batches_when_closing_early(worker_settings, demo_audio) -> None:
    """Closing early needs every partition read to its end: a backlog is not split up."""
    settings = worker_settings(batch_size=8, batch_max_wait_ms=60000, idle_exit_s=1.0)
    refs = clip_refs(demo_audio, 20)
    produce_refs(settings, refs)
    started = time.monotonic()
    stats = run_until_idle(settings).stats
    took = time.monotonic() - started
    assert stats.tagged == 20 and stats.batches == 3, stats  # 8 + 8 + 4
    assert took < 50, f"the last partial batch waited out its max wait ({took:.0f}s)"
    assert tagged_ids(settings) == {r["track_id"] for r in refs}


def test_pipelined_run_equals_sequential_run(worker_settings, demo_audio) -> None:
    sequential = worker_settings(pipeline_depth=1, batch_size=1, decode_workers=1,
                                 idle_exit_s=1.0)
    refs = clip_refs(demo_audio, 12)
    produce_refs(sequential, refs)
    pipelined = sequential.updated(pipeline_depth=2, batch_size=3, decode_workers=2, group_id=sequential.consumer.group_id + "-p", redis_key_prefix="p" + sequential.redis.key_prefix)
    seq_worker = run_until_idle(sequential)
    pipe_worker = run_until_idle(pipelined)
    assert seq_worker.stats.tagged == pipe_worker.stats.tagged == len(refs)
    assert seq_worker.stats.max_inflight == 1
    assert pipe_worker.stats.max_inflight == 2  # batch k+1 decoded while batch k was in the model
    ids = [r["track_id"] for r in refs]
    a = store_for(sequential).reader.get_many(ids)
    b = store_for(pipelined).reader.get_many(ids)
    for tid in ids:
        assert a[tid] is not None and b[tid] is not None, tid
        assert a[tid].labels == b[tid].labels, tid
        assert a[tid].duration_s == b[tid].duration_s
        for label, p in a[tid].probabilities.items():
            assert b[tid].probabilities[label] == pytest.approx(p, abs=1e-5), (tid, label)


def test_sigterm_mid_run_finishes_commits_and_loses_nothing(worker_settings, demo_audio) -> None:
    settings = worker_settings(batch_size=4, decode_workers=1, idle_exit_s=1.0)
    refs = clip_refs(demo_audio, 32)
    produce_refs(settings, refs)
    proc = subprocess.Popen([sys.executable, "-m", "genretag.cli", "work"], cwd=REPO,
                            env=settings_env(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: len(tagged_ids(settings)) >= 6 or proc.poll() is not None, 60,
                   "the first tags")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    stats = json.loads(out.strip().splitlines()[-1])
    done = committed(settings)
    assert 0 < sum(done.values()) < len(refs), "SIGTERM should land mid-run"
    # Exactly the committed messages are tagged: in-flight batches were finished and committed,
    # nothing was written beyond the commit and nothing below it is missing.
    by_offset = offsets_to_ids(settings, len(refs))
    below = {tid for (part, off), tid in by_offset.items() if off < done.get(part, 0)}
    assert tagged_ids(settings) == below
    assert stats["tagged"] == len(below)
    # The rest is picked up by the next member from the committed offsets.
    rest = run_until_idle(settings)
    assert rest.stats.tagged == len(refs) - len(below)
    assert tagged_ids(settings) == {r["track_id"] for r in refs}
    assert sum(committed(settings).values()) == len(refs)


def test_two_replicas_split_the_partitions(worker_settings, demo_audio) -> None:
    settings = worker_settings(batch_size=4, decode_workers=1)
    ensure_topics(settings.kafka)
    proc = subprocess.Popen(
        [sys.executable, "-m", "genretag.cli", "work", "--replicas", "2"], cwd=REPO,
        env=settings_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assignments: dict[str, set[int]] = {}
    batches: dict[str, int] = {}

    def read_logs() -> None:
        for line in proc.stderr:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "worker.assigned":
                assignments[event["worker_id"]] = set(event["partitions"])
            elif event.get("event") == "core.audio.windows":
                wid = event["batch_id"].rsplit(":", 1)[0]
                batches[wid] = batches.get(wid, 0) + 1

    reader = threading.Thread(target=read_logs, daemon=True)
    reader.start()
    try:
        def split() -> bool:
            parts = list(assignments.values())
            return (len(parts) == 2 and all(parts) and not parts[0] & parts[1]
                    and parts[0] | parts[1] == {0, 1, 2, 3})

        wait_until(split, 60, "both replicas to own partitions")
        refs = clip_refs(demo_audio, 16)
        produce_refs(settings, refs)
        wait_until(lambda: sum(committed(settings).values()) == len(refs), 60, "all commits")
        proc.send_signal(signal.SIGTERM)  # forwarded to both replicas
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert proc.returncode == 0
    stats = [json.loads(line) for line in out.strip().splitlines()]
    assert len(stats) == 2
    assert all(s["tagged"] > 0 for s in stats), stats  # both made progress
    assert sum(s["tagged"] for s in stats) == len(refs)
    assert len(batches) == 2 and all(batches.values())
    assert tagged_ids(settings) == {r["track_id"] for r in refs}


def test_member_joining_mid_run_takes_over_without_double_work(
        worker_settings, demo_audio) -> None:
    first = worker_settings(batch_size=4, decode_workers=1)
    # Each clip twice under two ids: a backlog that the second member joins in the middle of.
    refs = clip_refs(demo_audio, 32)
    refs += [{**r, "track_id": r["track_id"] + "-b"} for r in refs]
    # Sent once the second member has its partitions: work for it however fast the first was
    # (on a loaded machine the join can outlast the backlog).
    late = [{**r, "track_id": r["track_id"] + "-late"} for r in refs[:16]]
    produce_refs(first, refs)
    second = first.updated(worker_id=first.worker_id + "-2")
    with InThread(first) as a:
        wait_until(lambda: a.worker.stats.tagged >= 8, 60, "the first member to get going")
        with InThread(second) as b:
            wait_until(lambda: b.worker.health.joined, 60, "the second member to join")
            produce_refs(first, late)
            refs += late
            wait_until(lambda: sum(committed(first).values()) == len(refs), 90, "all commits")
            assert b.worker.stats.tagged > 0
        stats_b = b.join()
    stats_a = a.join()
    # The revoke wrote+committed what A had finished and dropped what was in flight, so no
    # track was tagged twice and none was lost.
    assert a.worker.metrics.rebalances.labels(kind="revoked")._value.get() >= 1
    assert stats_a.commit_failures == stats_b.commit_failures == 0
    assert stats_a.tagged + stats_b.tagged == len(refs), (stats_a, stats_b)
    assert tagged_ids(first) == {r["track_id"] for r in refs}


def test_revoke_writes_and_commits_a_finished_batch(worker_settings, demo_audio) -> None:
    """White-box: a batch that finished but was not written yet when a rebalance starts is
    written and committed by the rebalance listener (on the consumer's IO thread)."""
    settings = worker_settings(batch_size=4)
    refs = clip_refs(demo_audio, 4)
    produce_refs(settings, refs)
    worker = Worker(settings)
    other = None
    try:
        worker._start()
        poller = worker.poller
        wait_until(lambda: poller.poll(200, 4) is not None and len(poller.buffer) == 4, 40,
                   "4 records polled")
        worker.inflight.add(worker.processor.submit(poller.collect(worker.inflight.busy), "b1"))
        job = worker.inflight.head()
        assert job.wait(30) and not job.step_done("sink:tags")
        poller.pause()
        other = make_consumer(settings.kafka, settings.consumer.group_id)
        other.subscribe([settings.kafka.topic])
        joined = threading.Event()

        def join_other() -> None:
            while not joined.is_set():
                other.poll(timeout_ms=500)

        thread = threading.Thread(target=join_other, daemon=True)
        thread.start()
        # Our next polls take part in the rebalance: the revoke settles the finished batch.
        wait_until(lambda: poller.poll(200, 4) is not None and job.settled, 40, "the revoke")
        joined.set()
        thread.join(10)
    finally:
        worker.stop.set()
        worker._shutdown()
        if other is not None:
            other.close()
    assert sum(committed(settings).values()) == 4
    assert worker.stats.tagged == 4 and worker.stats.commit_failures == 0
    assert tagged_ids(settings) == {r["track_id"] for r in refs}


def test_redis_outage_is_retried_without_commit_then_nothing_is_lost(
        worker_settings, demo_audio, stack) -> None:
    port = free_port()
    settings = worker_settings(retry_initial_backoff_s=0.2, retry_max_backoff_s=1.0,
                               max_poll_interval_ms=2000, metrics_port=port,
                               metrics_host="127.0.0.1")
    refs = clip_refs(demo_audio, 6)
    with InThread(settings) as running:
        wait_until(lambda: running.worker.health.joined, 40, "the worker to join its group")
        stack.stop_service("redis")
        try:
            produce_refs(settings, refs)
            wait_until(lambda: running.worker.stats.retries >= 4, 30, "write retries")
            time.sleep(2.5)  # an outage longer than max_poll_interval_ms
            assert committed(settings) == {}  # nothing committed while Redis is down
            assert http_get(port, "/healthz")[0] == 200  # the loop is alive...
            code, body = http_get(port, "/readyz")
            assert code == 503 and json.loads(body)["redis"] is False  # ...but not ready
            assert running.worker.health.joined  # still a member: not evicted
        finally:
            stack.start_redis()
        wait_until(lambda: sum(committed(settings).values()) == len(refs), 30, "commits")
        metrics = samples(http_get(port, "/metrics")[1])
        assert value(metrics, "genretag_transient_retries_total", what="redis_write") >= 4
        assert value(metrics, "genretag_rebalances_total", kind="revoked") == 0
    stats = running.join()
    assert stats.tagged == len(refs) and stats.commit_failures == 0 and stats.dropped == 0
    assert tagged_ids(settings) == {r["track_id"] for r in refs}


def test_batch_slower_than_max_poll_interval_is_not_evicted(worker_settings, demo_audio) -> None:
    # 96 tracks (each clip twice, under two ids) on one decoder: the one batch must outlast
    # max_poll_interval_ms with room to spare (48 clips took 0.9-1.1 s with libav; 96 take ~2 s).
    settings = worker_settings(max_poll_interval_ms=1000, batch_size=96, batch_max_wait_ms=3000,
                               decode_workers=1, pipeline_depth=1, idle_exit_s=1.0)
    refs = [{**r, "track_id": f"{r['track_id']}-{copy}"}
            for copy in range(2) for r in clip_refs(demo_audio, 48)]
    produce_refs(settings, refs)
    worker = run_until_idle(settings)
    stats = worker.stats
    assert stats.longest_batch_s > 1.0, f"batch took {stats.longest_batch_s}s: too fast"
    # Tagged exactly once, no rebalance, nothing dropped or refused.
    assert stats.tagged == len(refs) and stats.batches == 1
    assert stats.commit_failures == 0 and stats.dropped == 0
    revoked = worker.metrics.rebalances.labels(kind="revoked")._value.get()
    lost = worker.metrics.rebalances.labels(kind="lost")._value.get()
    assert (revoked, lost) == (1, 0)  # the one revoke is leaving the group at exit
    assert sum(committed(settings).values()) == len(refs)
    assert tagged_ids(settings) == {r["track_id"] for r in refs}


@pytest.mark.slow  # two more group joins; tests/integration/test_tagstore.py covers the Lua
def test_retag_by_new_model_version_removes_stale_memberships(
        worker_settings, demo_audio, demo_model: Path, tmp_path: Path) -> None:
    module, manifest = load_artifact(demo_model)
    renamed = {label: f"{label}-v2" for label in manifest.labels}
    v2 = manifest.model_copy(update={
        "version": "test-2", "labels": [renamed[label] for label in manifest.labels],
        "thresholds": {renamed[k]: v for k, v in manifest.thresholds.items()}})
    v2_path = save_artifact(module, v2, tmp_path / "v2.pt")
    v1_settings = worker_settings(idle_exit_s=1.0)
    refs = clip_refs(demo_audio, 6)
    produce_refs(v1_settings, refs)
    run_until_idle(v1_settings)
    store = store_for(v1_settings)
    assert store.client.scard(store.keys.model("test-1")) == len(refs)
    assert sum(store.client.zcard(store.keys.genre(g)) for g in manifest.labels) >= len(refs)
    v2_settings = v1_settings.updated(model_path=v2_path, group_id=v1_settings.consumer.group_id + "-v2")
    run_until_idle(v2_settings)
    assert store.client.scard(store.keys.model("test-1")) == 0 and store.client.scard(store.keys.model("test-2")) == len(refs)
    assert all(store.client.zcard(store.keys.genre(g)) == 0 for g in manifest.labels)  # stale memberships gone
    assert sum(store.client.zcard(store.keys.genre(renamed[g])) for g in manifest.labels) >= len(refs)
    for rec in store.reader.get_many([r["track_id"] for r in refs]).values():
        assert rec is not None and rec.model_version == "test-2"
        assert set(rec.probabilities) == set(renamed.values())
