"""Turn a batch of Kafka messages into tag records and dead letters (no I/O to Kafka/Redis).

parse (bytes → TrackRef) → validate (URI, roots, size) → decode only the track's windows,
spread over its whole duration (FFmpeg subprocesses, in a thread pool of ``decode_workers``;
see :mod:`worker.tracks`) → infer (one model call per batch, on a single inference thread) →
TagRecord with its genre timeline. Any permanent failure of one message becomes a DeadLetter
for that message only.

A batch of several messages is decoded in ``decode_workers`` chunks, one pool task per chunk
(several files per FFmpeg process: start-up is paid once per group); a one-message batch is
decoded at once, so light load keeps its latency. Both give the same samples and the same
errors per file.

:meth:`Processor.submit` returns a :class:`Job` at once: its decodes start in the pool and its
model pass is queued on the inference thread, so the loop can submit batch k+1 (whose decodes
then overlap batch k's model pass) before it waits for batch k. Batches run the model in
submission order and each outcome depends only on its own message, so the results equal a
sequential run's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from kafka.structs import TopicPartition
from pydantic import ValidationError

from core.logs import get_logger
from worker.settings import WorkerSettings
from schemas import DeadLetter, ModelManifest, ReasonCode, TagRecord, TrackRef, describe_errors
from core.audio.decode import DEFAULT_GROUP_SIZE, DecodeOptions, split_evenly
from core.errors import PermanentError
from worker.infer import Tagger
from worker.metrics import WorkerMetrics
from worker.tracks import Prepared, WindowOptions, make_record, prepare_tracks
from core.audio.uri import AudioSource, resolve_source

log = get_logger(__name__)

#: Fewest messages per decode chunk: below this, a chunk's FFmpeg start-up saving is small.
MIN_DECODE_CHUNK = 4


@dataclass
class Outcome:
    """What became of one message: a tag record or a dead letter (exactly one is set)."""

    topic: str
    partition: int
    offset: int
    record: TagRecord | None = None
    dead: DeadLetter | None = None
    enqueued_at: datetime | None = None

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class Job:
    """One micro-batch in flight: decodes in the pool, then one model pass; droppable by partition.

    ``drop`` (called by the rebalance listener) gives up the messages of revoked partitions:
    queued decodes are cancelled, the model skips them, and they are neither written nor
    committed, so the partition's next owner redoes them from the committed offset.
    """

    def __init__(self, batch_id: str, messages: list) -> None:
        self.batch_id = batch_id
        self.messages = messages
        self.outcomes = [Outcome(m.topic, m.partition, m.offset) for m in messages]
        self.decodes: list[tuple[int, TrackRef, Future]] = []
        self.future: Future | None = None
        self.created = time.monotonic()
        self.written_dlq = False  # dead letters acknowledged by the broker
        self.written = False  # tags and dead letters in Redis (counted once)
        self.settled = False  # written and committed, by the loop or the rebalance listener
        self._dropped: set[TopicPartition] = set()
        self._lock = threading.Lock()

    def partitions(self) -> set[TopicPartition]:
        return {o.tp for o in self.outcomes}

    def done(self) -> bool:
        """Every kept outcome is set (the model pass finished, or everything was dropped)."""
        return self.future is None or self.future.done() or self.all_dropped()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for :meth:`done` (a failed model pass counts as done)."""
        if self.future is not None and not self.all_dropped():
            wait_futures([self.future], timeout=timeout_s)
        return self.done()

    def is_dropped(self, tp: TopicPartition) -> bool:
        with self._lock:
            return tp in self._dropped

    def all_dropped(self) -> bool:
        with self._lock:
            return self.partitions() <= self._dropped

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Give up the messages of ``partitions``; returns how many messages that was."""
        revoked = set(partitions) & self.partitions()
        if not revoked:
            return 0
        with self._lock:
            new = revoked - self._dropped
            self._dropped |= new
        for i, _ref, future in self.decodes:
            if self.outcomes[i].tp in new:
                future.cancel()  # only queued decodes stop; a running FFmpeg just finishes
        return sum(1 for o in self.outcomes if o.tp in new)

    def kept(self) -> list[Outcome]:
        """Outcomes of partitions not dropped, in message order."""
        with self._lock:
            dropped = set(self._dropped)
        return [o for o in self.outcomes if o.tp not in dropped]

    def result(self) -> list[Outcome]:
        """Kept outcomes once done; re-raises a failure of the model pass."""
        if self.future is not None and not self.all_dropped():
            self.future.result()
        return self.kept()


def parse_message(value: bytes | None, max_bytes: int) -> TrackRef:
    """Message bytes → TrackRef; oversized, non-JSON or wrong-schema → BAD_MESSAGE."""
    if value is None:
        raise PermanentError(ReasonCode.BAD_MESSAGE, "message has no value", stage="parse")
    if len(value) > max_bytes:
        raise PermanentError(
            ReasonCode.BAD_MESSAGE, f"message is {len(value)} bytes, cap is {max_bytes}",
            stage="parse",
        )
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentError(ReasonCode.BAD_MESSAGE, f"not JSON: {exc}", stage="parse") from None
    try:
        return TrackRef.model_validate(data)
    except ValidationError as exc:
        fields = describe_errors(exc, "message")
        track_id = data.get("track_id") if isinstance(data, dict) else None
        raise PermanentError(
            ReasonCode.BAD_MESSAGE, f"schema: {fields}",
            track_id=track_id if isinstance(track_id, str) else None, stage="parse",
        ) from None


def worker_decode_options(manifest: ModelManifest, settings: WorkerSettings) -> DecodeOptions:
    """A plain decode of the opening ``max_windows`` clips (the pre-whole-track worker; kept
    for the benchmark's naive baseline and tests that decode directly)."""
    return DecodeOptions(sample_rate=manifest.sample_rate,
                         max_seconds=manifest.clip_seconds * settings.max_windows,
                         timeout_s=settings.decode_timeout_s)


class Processor:
    """Holds the model, the decode pool and the inference thread; ``submit`` starts a Job."""

    #: Decode multi-message batches in chunks with ``decode_many`` (False: one task per file,
    #: kept for the benchmark's side-by-side comparison).
    grouped_decode: bool = True
    #: Files per FFmpeg process inside a chunk.
    decode_group_size: int = DEFAULT_GROUP_SIZE

    def __init__(self, settings: WorkerSettings, tagger: Tagger,
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.tagger = tagger
        self.metrics = metrics
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        # One thread: batches run the model one at a time, in submission order.
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")
        m = tagger.manifest
        self.clip_samples = m.clip_samples
        self.min_samples = int(m.min_seconds * m.sample_rate)
        self.decode_opts = worker_decode_options(m, settings)
        self.window_options = WindowOptions.from_settings(settings)

    def close(self) -> None:
        """Stop the pools (queued decodes are cancelled; running FFmpegs finish)."""
        self.decode_pool.shutdown(wait=True, cancel_futures=True)
        self.infer_pool.shutdown(wait=True, cancel_futures=True)

    def source(self, ref: TrackRef) -> AudioSource:
        """Vet the URI (scheme, allowed roots, file size). Raises PermanentError."""
        s = self.settings
        return resolve_source(
            ref.uri, s.allowed_roots, allow_http=s.allow_http, max_file_bytes=s.max_file_bytes,
            track_id=ref.track_id,
        )

    def _prepare_sources(self, refs: list[TrackRef],
                         sources: list[AudioSource]) -> list[Prepared | Exception]:
        options = replace(self.window_options, group_size=self.decode_group_size)
        return prepare_tracks(refs, sources, self.tagger.manifest, options)

    def prepare(self, ref: TrackRef) -> Prepared:
        """Validate the URI, decode the windows, judge the whole track. Raises PermanentError."""
        [result] = self._prepare_sources([ref], [self.source(ref)])
        if isinstance(result, Exception):
            raise result
        return result

    def prepare_many(self, refs: list[TrackRef]) -> list[Prepared | Exception]:
        """:meth:`prepare` for each ref, the valid ones decoded several files per FFmpeg.

        One result per ref, in order: its Prepared, or the exception :meth:`prepare` would
        raise for it (same reason code and detail).
        """
        results: list[Prepared | Exception | None] = [None] * len(refs)
        valid: list[tuple[int, AudioSource]] = []
        for k, ref in enumerate(refs):
            try:
                valid.append((k, self.source(ref)))
            except Exception as exc:  # noqa: BLE001 - this ref only
                results[k] = exc
        prepared = self._prepare_sources([refs[k] for k, _ in valid], [src for _, src in valid])
        for (k, _), result in zip(valid, prepared, strict=True):
            results[k] = result
        return results  # type: ignore[return-value] - every slot is set above

    def _timed_prepare(self, ref: TrackRef) -> Prepared:
        start = time.perf_counter()
        try:
            return self.prepare(ref)
        finally:
            if self.metrics:
                self.metrics.stage_seconds.labels(stage="decode").observe(
                    time.perf_counter() - start)

    def _run_chunk(self, chunk: list[tuple[TrackRef, Future]]) -> None:
        """Decode pool task: prepare the chunk's refs not dropped meanwhile; settle their futures."""
        live = [(ref, f) for ref, f in chunk if f.set_running_or_notify_cancel()]
        if not live:
            return
        start = time.perf_counter()
        try:
            results = self.prepare_many([ref for ref, _ in live])
        except BaseException as exc:  # a bug, not bad input: every ref of the chunk gets it
            for _, f in live:
                f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if self.metrics:  # amortised seconds per track, so the histogram still counts tracks
            per_track = (time.perf_counter() - start) / len(live)
            for _ in live:
                self.metrics.stage_seconds.labels(stage="decode").observe(per_track)
        for (_, f), result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                f.set_exception(result)
            else:
                f.set_result(result)

    def _submit_chunk(self, chunk: list[tuple[int, TrackRef]]) -> list[Future]:
        """One pool task for ``chunk``; returns one future per ref (cancellable while queued)."""
        futures: list[Future] = [Future() for _ in chunk]
        task = self.decode_pool.submit(
            self._run_chunk, [(ref, f) for (_, ref), f in zip(chunk, futures, strict=True)])

        def settle_if_cancelled(done: Future) -> None:  # pool shut down before the task ran
            if done.cancelled():
                for f in futures:
                    f.cancel()

        task.add_done_callback(settle_if_cancelled)
        return futures

    def dead_letter(self, msg, exc: Exception, ref: TrackRef | None,
                    stage: str = "decode") -> DeadLetter:
        if isinstance(exc, PermanentError):
            reason, stage, detail = exc.reason, exc.stage, str(exc)
        else:  # a bug in our code must not stop the worker: park the message, log loudly
            log.error("worker.internal_error", exc_info=exc, extra={
                "offset": msg.offset, "partition": msg.partition,
                "track_id": ref.track_id if ref else None})
            reason, detail = ReasonCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        raw = msg.value or b""
        return DeadLetter(
            reason=ReasonCode(reason), detail=detail[:4000], stage=stage,
            track_id=ref.track_id if ref else getattr(exc, "track_id", None),
            original=raw[: self.settings.max_message_bytes].decode("utf-8", "replace"),
            track=ref, source_topic=msg.topic, source_partition=msg.partition,
            source_offset=msg.offset, worker_id=self.settings.worker_id,
        )

    def submit(self, messages: list, batch_id: str = "-") -> Job:
        """Parse now, start the decodes (chunked when several), queue the model pass; returns at once."""
        job = Job(batch_id, messages)
        parsed: list[tuple[int, TrackRef]] = []
        for i, msg in enumerate(messages):
            try:
                ref = parse_message(msg.value, self.settings.max_message_bytes)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
                job.outcomes[i].dead = self.dead_letter(msg, exc, None)
                continue
            job.outcomes[i].enqueued_at = ref.enqueued_at
            parsed.append((i, ref))
        if self.grouped_decode and len(parsed) > 1:
            for chunk in split_evenly(parsed, self.settings.decode_workers,
                                      min_size=MIN_DECODE_CHUNK):
                futures = self._submit_chunk(chunk)
                job.decodes.extend((i, ref, f) for (i, ref), f in zip(chunk, futures, strict=True))
        else:
            for i, ref in parsed:
                job.decodes.append((i, ref, self.decode_pool.submit(self._timed_prepare, ref)))
        job.future = self.infer_pool.submit(self._complete, job)
        return job

    def process(self, messages: list) -> list[Outcome]:
        """Every message → exactly one Outcome, in input order (sequential convenience)."""
        return self.submit(messages).result()

    def _complete(self, job: Job) -> None:
        """Inference thread: wait for the job's decodes, run the model once, build records."""
        ready: list[tuple[int, Prepared]] = []
        for i, ref, future in job.decodes:
            msg = job.messages[i]
            if job.is_dropped(job.outcomes[i].tp):
                continue
            try:
                ready.append((i, future.result()))
            except CancelledError:
                continue  # dropped while queued
            except Exception as exc:  # noqa: BLE001
                job.outcomes[i].dead = self.dead_letter(msg, exc, ref)
        ready = [(i, p) for i, p in ready if not job.is_dropped(job.outcomes[i].tp)]
        if not ready:
            return
        start = time.perf_counter()
        try:
            probs: list[np.ndarray | None] = list(
                self.tagger.predict_windows([p.windows for _, p in ready]))
        except Exception as exc:  # noqa: BLE001 - isolate the track that breaks the model
            log.error("worker.model_failed", exc_info=exc,
                      extra={"batch_id": job.batch_id, "size": len(ready)})
            probs = [self._predict_one(job, i, p) for i, p in ready]
        if self.metrics:
            self.metrics.stage_seconds.labels(stage="model").observe(time.perf_counter() - start)
        for (i, prepared), rows in zip(ready, probs, strict=True):
            if rows is None:
                continue
            try:
                job.outcomes[i].record = make_record(prepared, rows, self.tagger,
                                                     self.window_options.aggregation)
            except Exception as exc:  # noqa: BLE001 - e.g. NaN probabilities: park, go on
                job.outcomes[i].dead = self.dead_letter(job.messages[i], exc, prepared.ref, "infer")

    def _predict_one(self, job: Job, i: int, prepared: Prepared) -> np.ndarray | None:
        """After a failed batch: one track alone; if it fails again it is dead-lettered."""
        try:
            return self.tagger.predict_windows([prepared.windows])[0]
        except Exception as exc:  # noqa: BLE001
            job.outcomes[i].dead = self.dead_letter(job.messages[i], exc, prepared.ref, "infer")
            return None
