"""Turn a batch of Kafka messages into tag records and dead letters (no I/O to Kafka/Redis).

parse (bytes → TrackRef) → validate (URI, roots, size) → decode only the track's windows,
spread over its whole duration (in a thread pool of ``decode_workers``; see
:mod:`genretag.worker.tracks`) → infer (one model call per batch, on a single inference thread) →
TagRecord with its genre timeline. Any failure of one message, permanent or unexpected (reason
``internal``), becomes a DeadLetter for that message only, always through
:meth:`Processor.dead_letter`: the one place to classify per-message errors.

A batch of several messages is decoded in ``decode_workers`` chunks, one pool task per chunk
(a one-message batch alone), by the decoder :func:`genretag.core.audio.decoders.open_decoder`
gives for the ``decoder`` setting. With the default ``libav`` each file is one request to one of
the ``decode_workers`` long-lived decoder processes, which reads the header, places, seeks and
decodes the windows itself (no FFmpeg process). With ``ffmpeg`` one FFmpeg probe reads the
headers of each group of a chunk's files and one FFmpeg process decodes the group's windows
(start-up paid once per group); http(s) sources always go to FFmpeg. Both place the windows by
the same rules and give the same errors per file; the samples after a seek are close, not
bit-identical (libav's are the whole-file decode's).

:meth:`Processor.submit` returns a :class:`Job` at once: its decodes start in the pool and its
model pass is queued on the inference thread, so the loop can submit batch k+1 (whose decodes
then overlap batch k's model pass) before it waits for batch k. Batches run the model in
submission order and each outcome depends only on its own message, so the results equal a
sequential run's.
"""

from __future__ import annotations

import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

import numpy as np

from genretag.core.audio.decoders import (DEFAULT_GROUP_SIZE, decoder_info, mismatch,
                                           open_decoder, split_evenly)
from genretag.core.audio.uri import AudioSource, resolve_source
from genretag.core.errors import PermanentError
from genretag.core.kafka import dead_letter_max_bytes
from genretag.core.logs import get_logger
from genretag.schemas import DeadLetter, TrackRef
from genretag.worker.deadletter import build_dead_letter
from genretag.worker.infer import Tagger
from genretag.worker.job import Job, Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.modelset import MemberResult, ModelSet
from genretag.worker.parse import parse_message
from genretag.worker.settings import WorkerSettings
from genretag.worker.tracks import Prepared, make_record, prepare_tracks, track_embedding

log = get_logger(__name__)

#: One model's result for one track: its windows' probabilities and embeddings (or None).
TrackResult = tuple[np.ndarray, np.ndarray | None]
#: Fewest messages per decode chunk: below this, a chunk's FFmpeg start-up saving is small.
MIN_DECODE_CHUNK = 4


class Processor:
    """Holds the model (or model set), the decode pool and the inference thread; ``submit``
    starts a Job.

    Every failure of one message ends in :meth:`dead_letter` (reason ``internal`` for anything
    that is not a :class:`PermanentError`): that message is parked, the batch and worker go on.
    """

    def __init__(self, settings: WorkerSettings, models: Tagger | ModelSet,
                 metrics: WorkerMetrics | None = None, *,
                 letter_max_bytes: int | None = None) -> None:
        self.settings = settings
        #: Most encoded bytes of a dead letter (the DLQ topic's limit; see ``letter_bound``).
        self.letter_max_bytes = letter_max_bytes or dead_letter_max_bytes(settings.kafka)
        self.models = models if isinstance(models, ModelSet) else ModelSet([models])
        self.tagger = self.models.primary
        self.metrics = metrics
        workers = settings.decode.workers
        self.decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        # One thread: batches run the model one at a time, in submission order.
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")
        m = self.tagger.manifest
        self.decoder = open_decoder(settings.decode.decoder, workers,
                                    settings.access.max_file_bytes, DEFAULT_GROUP_SIZE)
        differs = mismatch(m.decoder, decoder_info(settings.decode.decoder))
        if differs:
            log.warning("worker.decoder_differs", extra={"why": differs, "model": m.version})

    def close(self) -> None:
        """Stop the pools (queued decodes are cancelled; running decodes finish) and decoders."""
        self.decode_pool.shutdown(wait=True, cancel_futures=True)
        self.infer_pool.shutdown(wait=True, cancel_futures=True)
        self.decoder.close()

    def source(self, ref: TrackRef) -> AudioSource:
        """Vet the URI (scheme, allowed roots, file size). Raises PermanentError."""
        s = self.settings
        return resolve_source(
            ref.uri, list(s.access.allowed_roots), allow_http=s.access.allow_http,
            max_file_bytes=s.access.max_file_bytes, track_id=ref.track_id,
        )

    def _prepare_sources(self, refs: list[TrackRef],
                         sources: list[AudioSource]) -> list[Prepared | Exception]:
        """Whole-track windows from the configured decoder: FFmpeg groups (``ffmpeg``: one
        probe, one decode process per group) or the libav decoder processes (``libav``, local
        files, one request each; http stays with FFmpeg). Seeks are not bit-identical between
        the two, but windows are placed by the same rules and give the same tags.

        A model set decodes each track once per layout (sample rate, window length); a track
        that fails in any layout gets that failure."""
        s = self.settings
        layouts = self.models.layouts
        results = prepare_tracks(refs, sources, layouts[0], s.windows, s.decode, self.decoder)
        for k, manifest in enumerate(layouts[1:], start=1):
            alive = [j for j, r in enumerate(results) if isinstance(r, Prepared)]
            more = prepare_tracks([refs[j] for j in alive], [sources[j] for j in alive],
                                  manifest, s.windows, s.decode, self.decoder)
            for j, other in zip(alive, more, strict=True):
                if isinstance(other, Prepared):
                    results[j].other_layouts[k] = other  # type: ignore[union-attr] - alive
                else:
                    results[j] = other
        return results

    def prepare(self, ref: TrackRef) -> Prepared:
        """Validate the URI, decode the windows, judge the whole track. Raises PermanentError."""
        [result] = self._prepare_sources([ref], [self.source(ref)])
        if isinstance(result, Exception):
            raise result
        return result

    def prepare_many(self, refs: list[TrackRef]) -> list[Prepared | Exception]:
        """:meth:`prepare` for each ref, the valid ones decoded together (one probe process
        and, with ``ffmpeg``, one decode process per group of files).

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

    def _prepare_or_error(self, ref: TrackRef) -> Prepared | Exception:
        try:
            return self.prepare(ref)
        except Exception as exc:  # noqa: BLE001 - this ref only
            return exc

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
        except Exception as exc:  # noqa: BLE001 - a bug, not bad input: isolate it per file
            log.error("worker.decode_group_failed", exc_info=exc, extra={"size": len(live)})
            results = [self._prepare_or_error(ref) for ref, _ in live]
        except BaseException as exc:  # interpreter exit: settle the futures, then go
            for _, f in live:
                f.set_exception(exc)
            raise
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
        """Any failure of one message → its dead letter; never raises, whatever the input.

        Built by :func:`genretag.worker.deadletter.build_dead_letter` (sanitised, bounded fields); an
        error that is not a :class:`PermanentError` is a bug: logged loudly, reason ``internal``.
        """
        if not isinstance(exc, PermanentError):
            try:
                log.error("worker.internal_error", exc_info=exc, extra={
                    "offset": getattr(msg, "offset", None),
                    "partition": getattr(msg, "partition", None),
                    "track_id": ref.track_id if isinstance(ref, TrackRef) else None})
            except Exception:  # noqa: BLE001, S110 - logging must not fail the error path
                pass
        return build_dead_letter(msg, exc, worker_id=self.settings.worker_id,
                                 max_bytes=self.settings.kafka.max_message_bytes, ref=ref,
                                 stage=stage, max_encoded_bytes=self.letter_max_bytes)

    def submit(self, messages: list, batch_id: str = "-") -> Job:
        """Parse now, start the decodes (chunked when several), queue the model pass; returns at once."""
        job = Job(batch_id, messages)
        parsed: list[tuple[int, TrackRef]] = []
        for i, msg in enumerate(messages):
            try:
                ref = parse_message(msg.value, self.settings.kafka.max_message_bytes)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
                job.outcomes[i].dead = self.dead_letter(msg, exc, None)
                continue
            job.outcomes[i].enqueued_at = ref.enqueued_at
            job.outcomes[i].ref = ref
            parsed.append((i, ref))
        # Chunks: with ffmpeg each chunk's files share one probe and one decode process per
        # group; with libav a chunk is a run of requests to one decoder process.
        if self.settings.decode.grouped and len(parsed) > 1:
            for chunk in split_evenly(parsed, self.settings.decode.workers,
                                      min_size=MIN_DECODE_CHUNK):
                futures = self._submit_chunk(chunk)
                job.decodes.extend((i, ref, f) for (i, ref), f in zip(chunk, futures, strict=True))
        else:
            for i, ref in parsed:
                job.decodes.append((i, ref, self.decode_pool.submit(self._timed_prepare, ref)))
        job.future = self.infer_pool.submit(self._complete_safely, job)
        return job

    def process(self, messages: list) -> list[Outcome]:
        """Every message → exactly one Outcome, in input order (sequential convenience)."""
        return self.submit(messages).result()

    def _complete_safely(self, job: Job) -> None:
        """:meth:`_complete`; if it fails as a whole (a bug), every message it left without an
        outcome is dead-lettered ``internal``, so the job still settles and the loop goes on."""
        try:
            self._complete(job)
        except Exception as exc:  # noqa: BLE001 - never let the model pass fail the job
            log.error("worker.model_pass_failed", exc_info=exc, extra={"batch_id": job.batch_id})
            for i, o in enumerate(job.outcomes):
                if o.record is None and o.dead is None and not job.is_dropped(o.tp):
                    o.dead = self.dead_letter(job.messages[i], exc, o.ref, "infer")

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
            results: list[list[TrackResult] | None] = self._infer([p for _, p in ready])
        except Exception as exc:  # noqa: BLE001 - isolate the track that breaks the model
            log.error("worker.model_failed", exc_info=exc,
                      extra={"batch_id": job.batch_id, "size": len(ready)})
            results = [self._predict_one(job, i, p) for i, p in ready]
        if self.metrics:
            self.metrics.stage_seconds.labels(stage="model").observe(time.perf_counter() - start)
        aggregation = self.settings.windows.aggregation
        for (i, prepared), result in zip(ready, results, strict=True):
            if result is None:
                continue
            outcome = job.outcomes[i]
            try:  # every model's record, or (any failing, e.g. NaN) the track is parked
                records = {}
                for member, (rows, window_embeddings) in zip(self.models.members, result,
                                                            strict=True):
                    own = prepared.in_layout(member.layout)
                    records[member.namespace] = make_record(own, rows, member.tagger, aggregation)
                    if window_embeddings is not None:
                        outcome.embedding = track_embedding(own, window_embeddings)
                outcome.record = records.pop("")
                outcome.model_records = records
            except Exception as exc:  # noqa: BLE001 - park, go on
                outcome.embedding, outcome.model_records = None, {}
                outcome.dead = self.dead_letter(job.messages[i], exc, prepared.ref, "infer")

    def _infer(self, prepared: list[Prepared]) -> list[list[TrackResult]]:
        """Every model of the set on the tracks' windows → per track, per member its windows'
        probabilities and embeddings (or None)."""
        per_layout = [[p.in_layout(k).windows for p in prepared]
                      for k in range(len(self.models.layouts))]
        by_member: list[MemberResult] = self.models.infer(per_layout)
        for probs, _ in by_member:
            if len(probs) != len(prepared):
                raise ValueError(f"model gave {len(probs)} rows for {len(prepared)} tracks")
        return [[(probs[t], embedded[t] if embedded is not None else None)
                 for probs, embedded in by_member] for t in range(len(prepared))]

    def _predict_one(self, job: Job, i: int, prepared: Prepared) -> list[TrackResult] | None:
        """After a failed batch: one track alone; if it fails again it is dead-lettered."""
        try:
            return self._infer([prepared])[0]
        except Exception as exc:  # noqa: BLE001
            job.outcomes[i].dead = self.dead_letter(job.messages[i], exc, prepared.ref, "infer")
            return None
