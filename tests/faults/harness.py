"""Tools of the faults suite: worker subprocesses, raw producing, Redis state and write counting.

Every worker here is a real ``genretag work`` process (``python -m genretag.cli work``) that
reads its settings from ``GENRETAG_*`` environment variables, exactly as in production. The
suite relies on these JSON log events of it: ``worker.starting`` (one per process start),
``core.audio.windows`` (one per finished micro-batch) and ``worker.transient_error`` (one per retry).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from genretag.core.kafka import ensure_topics, make_producer
from genretag.core.settings import load_settings
from genretag.worker.settings import WorkerSettings
from genretag.cli.stack import LocalStack
from genretag.schemas import TrackRef

from tests.faults.config import REPO_ROOT
from tests.integration.helpers import committed

#: Fields never passed to a worker process: each process names itself.
_NOT_PASSED = frozenset({"worker_id"})


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2,
               diagnose: Callable[[], str] | None = None) -> float:
    """Poll ``check`` until true; returns the seconds it took, or fails naming ``what``."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{extra}")
        time.sleep(interval_s)


def assign(prefix: str, n: int, clips: list[Path]) -> dict[str, str]:
    """``n`` track ids spread round-robin over the clips: track id → uri."""
    return {f"{prefix}-{i:04d}": str(clips[i % len(clips)]) for i in range(n)}


# -- settings --------------------------------------------------------------------------------
def fault_settings(stack: LocalStack, model_path: Path, roots: list[Path], **overrides: Any
                   ) -> WorkerSettings:
    """Worker settings for one isolated scenario: its own topics, group and key prefix."""
    run = uuid.uuid4().hex[:8]
    base: dict[str, Any] = dict(
        kafka_bootstrap_servers=stack.bootstrap, redis_url=stack.redis_url,
        kafka_topic=f"faults-{run}", kafka_dlq_topic=f"faults-dlq-{run}", group_id=f"fg-{run}",
        redis_key_prefix=f"f{run}:", model_path=str(model_path),
        allowed_roots=[str(r) for r in roots], idle_exit_s=2.0, decode_workers=2, batch_size=4,
        batch_max_wait_ms=100, device="cpu", torch_threads=1, retry_max_backoff_s=1.0,
    )
    base.update(overrides)
    return load_settings(WorkerSettings, **base)


def settings_env(settings: WorkerSettings) -> dict[str, str]:
    """The ``GENRETAG_*`` environment that makes a worker process use ``settings``."""
    return settings.as_env(skip=_NOT_PASSED)


# -- worker processes ------------------------------------------------------------------------
class WorkerProc:
    """A ``genretag work`` subprocess; its output is kept, logged to a file and parsed as JSON."""

    def __init__(self, settings: WorkerSettings, log_path: Path, *, until_idle: bool = False,
                 env: dict[str, str] | None = None, args: list[str] | None = None,
                 python_code: str | None = None) -> None:
        """``python_code``: run ``python -c CODE work ...`` instead of ``python -m genretag.cli``
        (code that installs a test's fault injection, then runs the CLI)."""
        full_env = {**os.environ, **settings_env(settings), **(env or {})}
        entry = ["-c", python_code] if python_code else ["-m", "genretag.cli"]
        argv = [sys.executable, *entry, "work", *(args or [])]
        if until_idle:
            argv.append("--until-idle")
        self.log_path = log_path
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv, env=full_env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                event = None
                if line.startswith("{"):
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        event = None
                with self._lock:
                    self.lines.append(line)
                    if isinstance(event, dict):
                        self.events.append(event)

    def count(self, event: str) -> int:
        """How many log records named ``event`` the process wrote so far."""
        with self._lock:
            return sum(1 for e in self.events if e.get("event") == event)

    def events_named(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == event]

    def lines_containing(self, *needles: str) -> int:
        with self._lock:
            return sum(1 for line in self.lines if any(n in line for n in needles))

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def tail(self, n: int = 25) -> str:
        with self._lock:
            return "".join(self.lines[-n:])[-6000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL (a crash: no cleanup, no commit, no group leave) and reap."""
        self.signal(signal.SIGKILL)
        return self.wait(30)

    def wait(self, timeout_s: float) -> int:
        """Exit status; a process still running after ``timeout_s`` is killed and fails the test."""
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            raise AssertionError(
                f"worker {self.proc.pid} still running after {timeout_s:.0f}s:\n{self.tail()}"
            ) from None
        self._reader.join(10)
        return rc


class WorkerPool:
    """Starts workers for one test and SIGKILLs the ones still running at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[WorkerProc] = []

    def start(self, settings: WorkerSettings, name: str = "worker", **kwargs: Any) -> WorkerProc:
        path = self.log_dir / f"{name}-{len(self.started)}.log"
        worker = WorkerProc(settings, path, **kwargs)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            if worker.alive():
                worker.proc.kill()
                worker.proc.wait()

    def logged_twice(self) -> int:
        """Tracks named by more than one ``core.audio.windows`` record (finished more than once)."""
        seen: Counter[str] = Counter()
        for worker in self.started:
            for event in worker.events_named("core.audio.windows"):
                seen.update(event.get("track_ids") or [])
        return sum(1 for c in seen.values() if c > 1)


# -- producing -------------------------------------------------------------------------------
Coord = tuple[int, int]


def send_values(settings: WorkerSettings, items: list[tuple[str | None, bytes | None]],
                producer: Any = None) -> list[Coord]:
    """Send ``(key, value)`` pairs as they are; returns each one's (partition, offset)."""
    own = producer is None
    if own:
        ensure_topics(settings.kafka)
        producer = make_producer(settings.kafka, linger_ms=5)
    try:
        futures = [producer.send(settings.kafka.topic, key=k.encode() if k else None, value=v)
                   for k, v in items]
        producer.flush(timeout=60)
        coords = []
        for fut in futures:
            meta = fut.get(timeout=60)
            coords.append((meta.partition, meta.offset))
        return coords
    finally:
        if own:
            producer.close()


def send_tracks(settings: WorkerSettings, tracks: dict[str, str], producer: Any = None
                ) -> dict[str, Coord]:
    """Send a TrackRef for each ``track_id → uri``, keyed by track id; returns coordinates."""
    items = [(tid, TrackRef(track_id=tid, uri=uri).model_dump_json().encode())
             for tid, uri in tracks.items()]
    return dict(zip(tracks, send_values(settings, items, producer), strict=True))


def end_offsets_of(coords: list[Coord]) -> dict[int, int]:
    """Per partition, the offset after the last message sent (what a full commit reaches)."""
    ends: dict[int, int] = {}
    for partition, offset in coords:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def all_committed(settings: WorkerSettings, ends: dict[int, int]) -> bool:
    try:
        done = committed(settings)
    except Exception:  # noqa: BLE001 - broker briefly unavailable: not done yet
        return False
    return all(done.get(p, 0) >= end for p, end in ends.items())


# -- Redis state -----------------------------------------------------------------------------
@dataclass
class StoreState:
    """Everything under one key prefix, normalised (no timestamps)."""

    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)
    genres: dict[str, dict[str, float]] = field(default_factory=dict)
    genre_index: set[str] = field(default_factory=set)
    models: dict[str, set[str]] = field(default_factory=dict)
    model_index: set[str] = field(default_factory=set)
    dlq: dict[str, dict[str, Any]] = field(default_factory=dict)  # parsed messages, by track id
    dlq_msg: dict[str, dict[str, Any]] = field(default_factory=dict)  # unparsed, by topic:p:o


def read_state(client: redis.Redis, prefix: str) -> StoreState:
    """Read the key layout of README 'Redis key layout' for ``prefix`` (SCAN, never KEYS)."""
    state = StoreState()
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        key = key.decode() if isinstance(key, bytes) else key
        name = key[len(prefix):]
        if name.startswith("track:"):
            raw = _str_dict(client.hgetall(key))
            state.tracks[name[len("track:"):]] = {
                "labels": json.loads(raw["labels"]),
                "probabilities": json.loads(raw["probabilities"]),
                "model_version": raw["model_version"],
                "uri": raw.get("uri"),
                "duration_s": float(raw["duration_s"]) if raw.get("duration_s") else None,
                "track_id": raw.get("track_id"),
            }
        elif name.startswith("genre:"):
            rows = client.zrange(key, 0, -1, withscores=True)
            state.genres[name[len("genre:"):]] = {_s(m): float(s) for m, s in rows}
        elif name == "genres":
            state.genre_index = {_s(m) for m in client.smembers(key)}
        elif name.startswith("model:"):
            state.models[name[len("model:"):]] = {_s(m) for m in client.smembers(key)}
        elif name == "models":
            state.model_index = {_s(m) for m in client.smembers(key)}
        elif name == "dlq":
            state.dlq = {k: json.loads(v) for k, v in _str_dict(client.hgetall(key)).items()}
        elif name == "dlq:msg":
            state.dlq_msg = {k: json.loads(v) for k, v in _str_dict(client.hgetall(key)).items()}
    return state


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _str_dict(data: dict) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in data.items()}


@dataclass(frozen=True)
class Reference:
    """Tags a clean run gave each audio file, and the model's label thresholds."""

    by_uri: dict[str, dict[str, Any]]
    thresholds: dict[str, float]
    version: str


def consistency_problems(state: StoreState) -> list[str]:
    """Index invariants: genre and model sets hold exactly the tracks whose tags say so."""
    problems: list[str] = []
    want_genres: dict[str, dict[str, float]] = {}
    want_models: dict[str, set[str]] = {}
    for tid, tags in state.tracks.items():
        for label in tags["labels"]:
            want_genres.setdefault(label, {})[tid] = tags["probabilities"][label]
        want_models.setdefault(tags["model_version"], set()).add(tid)
    for label in set(want_genres) | set(state.genres):
        have, want = state.genres.get(label, {}), want_genres.get(label, {})
        stale = sorted(set(have) - set(want))
        missing = sorted(set(want) - set(have))
        if stale:
            problems.append(f"genre:{label} holds stale members {stale[:5]} ({len(stale)})")
        if missing:
            problems.append(f"genre:{label} lacks {missing[:5]} ({len(missing)})")
        wrong = [t for t in set(have) & set(want) if abs(have[t] - want[t]) > 1e-6]
        if wrong:
            problems.append(f"genre:{label} scores differ from the track hash for {wrong[:5]}")
    if not set(want_genres) <= state.genre_index:
        problems.append(f"genres set {sorted(state.genre_index)} lacks {sorted(set(want_genres))}")
    for version in set(want_models) | set(state.models):
        have_m, want_m = state.models.get(version, set()), want_models.get(version, set())
        if have_m != want_m:
            problems.append(f"model:{version} stale {sorted(have_m - want_m)[:5]} "
                            f"missing {sorted(want_m - have_m)[:5]}")
    if set(want_models) != state.model_index:
        problems.append(f"models set {sorted(state.model_index)} != {sorted(want_models)}")
    return problems


def agreement_problems(state: StoreState, expected: dict[str, str], ref: Reference,
                       tol: float = 1e-5) -> tuple[list[str], list[str]]:
    """(lost track ids, other differences) of ``state`` against a clean run's tags per uri.

    Probabilities may differ by ``tol`` (batch composition changes float rounding); a label
    may differ only where its probability is within ``tol`` of its threshold.
    """
    lost = sorted(set(expected) - set(state.tracks))
    problems: list[str] = []
    extra = sorted(set(state.tracks) - set(expected))
    if extra:
        problems.append(f"unexpected tracks {extra[:5]} ({len(extra)})")
    for tid, uri in expected.items():
        got, want = state.tracks.get(tid), ref.by_uri[uri]
        if got is None:
            continue
        if got["model_version"] != want["model_version"] or got["uri"] != uri:
            problems.append(f"{tid}: model/uri {got['model_version']}/{got['uri']}")
        if set(got["probabilities"]) != set(want["probabilities"]) or any(
            abs(got["probabilities"][k] - p) > tol for k, p in want["probabilities"].items()
        ):
            problems.append(f"{tid}: probabilities {got['probabilities']} != "
                            f"{want['probabilities']}")
            continue
        for label in set(got["labels"]) ^ set(want["labels"]):
            if abs(want["probabilities"][label] - ref.thresholds[label]) > tol:
                problems.append(f"{tid}: labels {got['labels']} != {want['labels']}")
                break
        if got["duration_s"] != want["duration_s"]:
            problems.append(f"{tid}: duration {got['duration_s']} != {want['duration_s']}")
    return lost, problems


class WriteCounter:
    """Counts the writes of each track hash (HSET keyspace notifications) under a prefix.

    A track written twice was processed twice (at-least-once redelivery): the suite's measure
    of duplicates. Needs CONFIG SET, so only on stacks the test owns.
    """

    def __init__(self, client: redis.Redis, prefix: str, db: int = 0) -> None:
        client.config_set("notify-keyspace-events", "Kh")
        pool = client.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": None, "decode_responses": True}
        # Its own connection without a read timeout: quiet spells are normal.
        self._client = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **kwargs))
        self._pattern = f"__keyspace@{db}__:{prefix}track:*"
        self._cut = len(f"__keyspace@{db}__:{prefix}track:")
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(self._pattern)
        self.counts: Counter[str] = Counter()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self._pubsub.get_message(timeout=0.2)
                if msg and _s(msg.get("data")) == "hset":
                    with self._lock:
                        self.counts[_s(msg["channel"])[self._cut:]] += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced by total()
            self.error = exc

    def total(self) -> int:
        if self.error is not None:
            raise AssertionError(f"write counter stopped: {self.error!r}")
        with self._lock:
            return sum(self.counts.values())

    def unique(self) -> int:
        with self._lock:
            return len(self.counts)

    def duplicates(self) -> tuple[int, int]:
        """(tracks written more than once, extra writes in all)."""
        with self._lock:
            return (sum(1 for c in self.counts.values() if c > 1),
                    sum(c - 1 for c in self.counts.values() if c > 1))

    def close(self) -> None:
        time.sleep(0.5)  # let the last notifications arrive
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()


def ensure_stack_up(stack: LocalStack) -> None:
    """Restart a service a previous (failed) test left stopped."""
    status = stack.status()
    if not status["kafka"]["up"]:
        stack.start_kafka()
    if not status["redis"]["up"]:
        stack.start_redis()


def read_topic(settings: WorkerSettings, topic: str, want: int, timeout_s: float = 60.0
               ) -> list[Any]:
    """Every record of ``topic`` from the beginning (no group), until ``want`` were read."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka.client_config(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < want and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
