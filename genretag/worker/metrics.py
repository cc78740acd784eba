"""Prometheus metrics of one worker, in its own registry (several workers can share a process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: Seconds: from a few ms (one decode, one Redis round trip) to minutes (a long batch).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Seconds from enqueue to tag written: seconds to hours when a backlog builds up.
E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STAGES = ("decode", "model", "write", "commit")


class WorkerMetrics:
    """Counters, histograms and gauges of the consume loop; ``render`` gives the text format."""

    def __init__(self, worker_id: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The standard process_* (CPU, RSS, open fds, start time), python_gc_* and python_info
        # series that the default registry has; a custom registry starts without them.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.consumed = Counter(
            "genretag_messages_consumed", "Messages taken from the tracks topic.", registry=r)
        self.tagged = Counter(
            "genretag_tracks_tagged", "Tracks whose tags were written to Redis.", registry=r)
        self.dead_letters = Counter(
            "genretag_dead_letters", "Messages dead-lettered, by reason code.", ["reason"],
            registry=r)
        self.batch_size = Histogram(
            "genretag_batch_size", "Messages per micro-batch.", buckets=BATCH_BUCKETS, registry=r)
        self.stage_seconds = Histogram(
            "genretag_stage_seconds",
            "Latency per stage: decode (one track), model, write and commit (one batch).",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram(
            "genretag_end_to_end_seconds", "From TrackRef.enqueued_at to the tag written in Redis.",
            buckets=E2E_BUCKETS, registry=r)
        self.retries = Counter(
            "genretag_transient_retries", "Retries after a transient failure (Redis, broker).",
            ["what"], registry=r)
        self.redis_refusals = Counter(
            "genretag_redis_refusals",
            "Redis error replies that refused a step for now (OOM, READONLY, MISCONF, BUSY...), "
            "by reply code; each is retried with backoff.", ["code"], registry=r)
        self.redis_refusing = Gauge(
            "genretag_redis_refusing",
            "1 while Redis answers but refuses writes (until a write succeeds again).",
            registry=r)
        self.redis_evicted_keys = Counter(
            "genretag_redis_evicted_keys",
            "Keys Redis evicted (INFO stats evicted_keys, server-wide) while we ran: committed "
            "tags may be gone; the server's maxmemory-policy evicts.", registry=r)
        self.commits = Counter("genretag_commits", "Successful offset commits.", registry=r)
        self.commit_failures = Counter(
            "genretag_commit_failures", "Commits refused (rebalanced meanwhile).", registry=r)
        self.rebalances = Counter(
            "genretag_rebalances", "Partition assignment changes, by kind.", ["kind"], registry=r)
        self.dropped = Counter(
            "genretag_dropped_on_revoke",
            "Polled messages given up because their partition was revoked (redelivered).",
            registry=r)
        self.assigned_partitions = Gauge(
            "genretag_assigned_partitions", "Partitions currently assigned.", registry=r)
        self.inflight_batches = Gauge(
            "genretag_inflight_batches", "Micro-batches decoding or in the model.", registry=r)
        self.lag = Gauge(
            "genretag_consumer_lag",
            "Highwater minus committed offset, per assigned partition (from fetch metadata).",
            ["topic", "partition"], registry=r)
        self.model_info = Gauge(
            "genretag_model_info", "The loaded model (value 1).", ["version", "device"],
            registry=r)
        self.worker_info = Gauge(
            "genretag_worker_info", "This worker (value 1).", ["worker_id"], registry=r)
        self.worker_info.labels(worker_id=worker_id).set(1)
        for stage in STAGES:  # export every stage from the start (zero counts, not absent)
            self.stage_seconds.labels(stage=stage)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
