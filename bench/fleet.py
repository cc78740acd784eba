"""Worker processes on a running stack, and the clock: enqueue → tag timestamps from Redis.

A :class:`Fleet` is one consumer group on its own topics and key prefix. It starts worker
processes (``genretag work`` or the naive baseline), optionally pinned to cores, warms them up
(group joined, model run), then sends the corpus and reads each track's ``processed_at`` back
from Redis. Throughput is measured from the first message's ``enqueued_at`` to the last tag's
``processed_at``, so process start, model load, group join and idle exit are never counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import redis

from genretag.core.kafka import ensure_topics, make_producer
from genretag.core.logs import get_logger
from genretag.core.settings import KafkaSection
from genretag.cli.stack import LocalStack
from genretag.producer.ids import path_track_id
from genretag.schemas import TrackRef

log = get_logger(__name__)

WORKER_CMD = [sys.executable, "-m", "genretag.cli", "work"]
NAIVE_CMD = [sys.executable, "-m", "bench.naive"]
#: Log events that show a process has handled messages (worker loop, naive baseline).
ACTIVITY_MARKERS = ('"core.audio.windows"', '"naive.message"')


@dataclass
class Proc:
    """One benchmarked process and where its logs go."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    cpus: set[int] | None

    def activity(self) -> int:
        """How many batches/messages it has logged (0 until it has done real work)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return sum(text.count(m) for m in ACTIVITY_MARKERS)

    def cpu_seconds(self) -> float:
        """CPU time so far of the process, its reaped children and its live children."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds so far of the process itself (with reaped children: short FFmpegs) and
        of its live children (the libav decoder processes)."""
        return _cpu_seconds(self.popen.pid, True), sum(
            _cpu_seconds(c, True) for c in _child_pids(self.popen.pid))

    def peak_rss_mib(self, children: bool = True) -> float | None:
        """VmHWM (peak resident set) of the live process, in MiB, plus its live children's
        (the libav decoder processes) unless ``children`` is False."""
        own = _vm_hwm_mib(self.popen.pid)
        if own is None or not children:
            return own
        return own + sum(_vm_hwm_mib(pid) or 0.0 for pid in _child_pids(self.popen.pid))


def _cpu_seconds(pid: int, reaped_children: bool) -> float:
    """utime + stime of ``pid`` (+ its waited-for children's: short-lived FFmpegs), 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list: Linux files them per thread)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


@dataclass
class Fleet:
    """One consumer group of benchmarked processes on ``stack``."""

    stack: LocalStack
    model: Path
    roots: list[Path]
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    partitions: int = 4
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.topic, self.prefix = f"bench-{self.run_id}", f"b{self.run_id}:"
        self.kafka = KafkaSection(bootstrap_servers=[self.stack.bootstrap], topic=self.topic,
                                  dlq_topic=f"{self.topic}.dlq", partitions=self.partitions)
        ensure_topics(self.kafka)
        self.redis = redis.Redis.from_url(self.stack.redis_url, decode_responses=True)
        self.producer = make_producer(self.kafka, linger_ms=0)
        self.sent = 0

    # -- processes -------------------------------------------------------------------------
    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENRETAG_")}
        env.update({
            "GENRETAG_STATE_DIR": str(self.workdir / "state"),
            "GENRETAG_KAFKA_BOOTSTRAP_SERVERS": self.stack.bootstrap,
            "GENRETAG_REDIS_URL": self.stack.redis_url,
            "GENRETAG_KAFKA_TOPIC": self.topic, "GENRETAG_KAFKA_DLQ_TOPIC": f"{self.topic}.dlq",
            "GENRETAG_KAFKA_PARTITIONS": str(self.partitions),
            "GENRETAG_GROUP_ID": f"g-{self.run_id}", "GENRETAG_REDIS_KEY_PREFIX": self.prefix,
            "GENRETAG_MODEL_PATH": str(self.model),
            "GENRETAG_ALLOWED_ROOTS": ",".join(str(r) for r in self.roots),
            "GENRETAG_IDLE_EXIT_S": "600",
        })
        env.update({f"GENRETAG_{k.upper()}": str(v) for k, v in {**self.settings, **extra}.items()})
        return env

    def start(self, name: str, cmd: list[str], cpus: set[int] | None = None,
              **settings: object) -> Proc:
        """Start a process in this group, pinned to ``cpus`` when given."""
        log_path = self.workdir / f"{name}.log"
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env=self.env({k: str(v) for k, v in settings.items()}),
                                     preexec_fn=pin)  # noqa: PLW1509 - no threads run yet
        proc = Proc(name, popen, log_path, cpus)
        self.procs.append(proc)
        return proc

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every process (they finish their batch and leave the group), then reap."""
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        self.procs.clear()
        self.producer.close()
        self.redis.close()

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                tail = p.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{tail}")

    # -- traffic ---------------------------------------------------------------------------
    def send(self, path: Path, tag: str) -> TrackRef:
        """Enqueue one track (explicit round-robin partition: equal work per group member)."""
        ref = TrackRef(track_id=f"{tag}-{self.sent}-{path_track_id(path)}"[:128],
                       uri=str(Path(path).resolve()))
        self.producer.send(self.topic, key=ref.track_id.encode(),
                           value=ref.model_dump_json().encode(), partition=self.sent % self.partitions)
        self.sent += 1
        return ref

    def wait_tags(self, refs: list[TrackRef], timeout_s: float) -> dict[str, datetime | None]:
        """``processed_at`` of every ref's tags (None if dead-lettered), waiting up to timeout."""
        done: dict[str, datetime | None] = {}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(refs):
            self.check_alive()
            todo = [r.track_id for r in refs if r.track_id not in done]
            pipe = self.redis.pipeline(transaction=False)
            for tid in todo:
                pipe.hget(f"{self.prefix}track:{tid}", "processed_at")
                pipe.hexists(f"{self.prefix}dlq", tid)
            answers = pipe.execute()
            for k, tid in enumerate(todo):
                at, dead = answers[2 * k], answers[2 * k + 1]
                if at:
                    done[tid] = datetime.fromisoformat(at)
                elif dead:
                    done[tid] = None
            if len(done) < len(refs):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(refs) - len(done)} of {len(refs)} tracks not tagged "
                                       f"within {timeout_s:g}s")
                time.sleep(0.1)
        return done

    def wait_ready(self, settle_s: float, timeout_s: float = 120.0) -> None:
        """Wait until every process has loaded its model, then ``settle_s`` for the group join.

        Members that join while another one is mid-batch force a rebalance under it; the
        worker's commit then fails (see the report), so group members start together.
        """
        deadline = time.monotonic() + timeout_s
        while not all('"model.loaded"' in p.log_path.read_text(errors="replace") for p in self.procs):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not load the model in time")
            time.sleep(0.2)
        time.sleep(settle_s)

    def require_tagged(self, done: dict[str, datetime | None]) -> None:
        """Fail loudly if any benchmark track was dead-lettered: its timing would mean nothing."""
        dead = [tid for tid, at in done.items() if at is None]
        if not dead:
            return
        letters = [json.loads(v) for v in self.redis.hmget(f"{self.prefix}dlq", dead[:200]) if v]
        reasons = Counter(f"{d['reason']}: {d['detail'][:200]}" for d in letters)
        raise RuntimeError(f"{len(dead)} benchmark tracks were dead-lettered: {dict(reasons)}")

    def warm_up(self, sample: Path, timeout_s: float = 180.0) -> float:
        """Rounds of one message per partition until every process has handled some; returns s."""
        started = time.monotonic()
        baseline = {p.name: p.activity() for p in self.procs}
        rounds = 0
        while True:
            refs = [self.send(sample, f"warm{rounds}") for _ in range(self.partitions)]
            self.producer.flush()
            self.require_tagged(self.wait_tags(refs, max(1.0, timeout_s - (time.monotonic() - started))))
            rounds += 1
            time.sleep(0.3)  # let the last batch's log line land
            if rounds >= 2 and all(p.activity() > baseline[p.name] for p in self.procs):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                log.warning("bench.warm_up_incomplete", extra={"rounds": rounds})
                return time.monotonic() - started

    def throughput(self, paths: list[Path], tag: str) -> dict[str, object]:
        """Enqueue ``paths`` at once; clips/s from the first enqueue to the last tag.

        Also the CPU seconds the fleet's processes and their children spent per clip: on a
        shared machine a workload with more runnable threads gets a bigger share of the cores,
        so wall-clock rates favour many-threaded work; CPU per clip does not.
        """
        cpu_before = sum(p.cpu_seconds() for p in self.procs)
        refs = [self.send(p, tag) for p in paths]
        self.producer.flush()
        done = self.wait_tags(refs, timeout_s=120 + 3.0 * len(refs))
        cpu = sum(p.cpu_seconds() for p in self.procs) - cpu_before
        self.require_tagged(done)
        first = min(r.enqueued_at for r in refs)
        tagged = [at for at in done.values() if at is not None]
        span = (max(tagged) - first).total_seconds() if tagged else float("nan")
        return {"clips": len(refs), "tagged": len(tagged), "dead_lettered": len(refs) - len(tagged),
                "seconds": round(span, 3), "clips_per_s": round(len(tagged) / span, 3),
                "cpu_ms_per_clip": round(1000 * cpu / max(1, len(tagged)), 1)}

    def latency(self, paths: list[Path], rate: float, seconds: float, tag: str) -> dict[str, object]:
        """Enqueue at ``rate`` msgs/s for ``seconds``; enqueue → tag latency percentiles."""
        count = max(1, int(rate * seconds))
        refs: list[TrackRef] = []
        start = time.monotonic()
        for i in range(count):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            refs.append(self.send(paths[i % len(paths)], tag))
            self.producer.flush()
        done = self.wait_tags(refs, timeout_s=120)
        self.require_tagged(done)
        lat = np.array([(done[r.track_id] - r.enqueued_at).total_seconds()
                        for r in refs if done[r.track_id] is not None])
        pct = {f"p{q}": round(float(np.percentile(lat, q)), 4) for q in (50, 95, 99)}
        return {"rate_per_s": rate, "seconds": seconds, "messages": count, **pct,
                "max": round(float(lat.max()), 4), "latencies_s": [round(float(x), 4) for x in lat]}
