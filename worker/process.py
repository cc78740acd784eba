"""Turn a batch of Kafka messages into tag records and dead letters (no I/O to Kafka/Redis).

parse (bytes → TrackRef) → validate (URI, roots, size) → decode (FFmpeg, in a thread pool)
→ windows → infer (one model call per batch) → TagRecord. Any permanent failure of one
message becomes a DeadLetter for that message only.
"""

from __future__ import annotations

import json
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from genretag.logs import get_logger
from genretag.settings import WorkerSettings
from schemas import DeadLetter, ReasonCode, TagRecord, TrackRef
from worker.batch import make_windows
from worker.decode import DecodeOptions, decode_audio
from worker.errors import PermanentError
from worker.infer import Tagger
from worker.uri import resolve_source

log = get_logger(__name__)

SILENCE_RMS = 1e-4


@dataclass
class Outcome:
    """What became of one message: a tag record or a dead letter (exactly one is set)."""

    topic: str
    partition: int
    offset: int
    record: TagRecord | None = None
    dead: DeadLetter | None = None


@dataclass
class Prepared:
    """A message whose audio decoded: its windows are ready for the model."""

    ref: TrackRef
    windows: np.ndarray
    duration_s: float


def parse_message(value: bytes | None, max_bytes: int) -> TrackRef:
    """Message bytes → TrackRef; oversized, non-JSON or wrong-schema → BAD_MESSAGE."""
    if value is None:
        raise PermanentError(ReasonCode.BAD_MESSAGE, "message has no value", stage="parse")
    if len(value) > max_bytes:
        raise PermanentError(
            ReasonCode.BAD_MESSAGE, f"message is {len(value)} bytes, cap is {max_bytes}", stage="parse"
        )
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentError(ReasonCode.BAD_MESSAGE, f"not JSON: {exc}", stage="parse") from None
    try:
        return TrackRef.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
        )
        track_id = data.get("track_id") if isinstance(data, dict) else None
        raise PermanentError(
            ReasonCode.BAD_MESSAGE, f"schema: {fields}",
            track_id=track_id if isinstance(track_id, str) else None, stage="parse",
        ) from None


class Processor:
    """Holds the model and decode pool; ``prepare`` runs in pool threads, ``finish`` in the loop."""

    def __init__(self, settings: WorkerSettings, tagger: Tagger, pool: Executor) -> None:
        self.settings = settings
        self.tagger = tagger
        self.pool = pool
        m = tagger.manifest
        self.clip_samples = m.clip_samples
        self.min_samples = int(m.min_seconds * m.sample_rate)
        self.decode_opts = DecodeOptions(
            sample_rate=m.sample_rate,
            max_seconds=m.clip_seconds * settings.max_windows,
            timeout_s=settings.decode_timeout_s,
        )

    def prepare(self, ref: TrackRef) -> Prepared:
        """Validate the URI, decode, check length/silence, cut windows. Raises PermanentError."""
        s = self.settings
        source = resolve_source(
            ref.uri, s.allowed_roots, allow_http=s.allow_http, max_file_bytes=s.max_file_bytes,
            track_id=ref.track_id,
        )
        wave = decode_audio(source, self.decode_opts, track_id=ref.track_id)
        if len(wave) < self.min_samples:
            raise PermanentError(
                ReasonCode.TOO_SHORT,
                f"{len(wave) / self.decode_opts.sample_rate:.2f}s of audio, minimum is "
                f"{self.min_samples / self.decode_opts.sample_rate:g}s",
                track_id=ref.track_id,
            )
        if float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) < SILENCE_RMS:
            raise PermanentError(ReasonCode.SILENT, "audio is silent (RMS below 1e-4)",
                                 track_id=ref.track_id)
        windows = make_windows(wave, self.clip_samples, s.max_windows)
        return Prepared(ref=ref, windows=windows, duration_s=len(wave) / self.decode_opts.sample_rate)

    def dead_letter(self, msg, exc: Exception, ref: TrackRef | None) -> DeadLetter:
        if isinstance(exc, PermanentError):
            reason, stage, detail = exc.reason, exc.stage, str(exc)
        else:  # a bug in our code must not stop the worker: park the message, log loudly
            log.exception("worker.internal_error", extra={"offset": msg.offset})
            reason, stage, detail = ReasonCode.INTERNAL, "decode", f"{type(exc).__name__}: {exc}"
        raw = msg.value or b""
        return DeadLetter(
            reason=ReasonCode(reason), detail=detail[:4000], stage=stage,
            track_id=ref.track_id if ref else getattr(exc, "track_id", None),
            original=raw[: self.settings.max_message_bytes].decode("utf-8", "replace"),
            track=ref, source_topic=msg.topic, source_partition=msg.partition,
            source_offset=msg.offset, worker_id=self.settings.worker_id,
        )

    def process(self, messages: list) -> list[Outcome]:
        """Every message → exactly one Outcome, in input order."""
        outcomes = [Outcome(m.topic, m.partition, m.offset) for m in messages]
        jobs = []
        for i, msg in enumerate(messages):
            try:
                ref = parse_message(msg.value, self.settings.max_message_bytes)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
                outcomes[i].dead = self.dead_letter(msg, exc, None)
                continue
            jobs.append((i, ref, self.pool.submit(self.prepare, ref)))
        ready: list[tuple[int, Prepared]] = []
        for i, ref, future in jobs:
            try:
                ready.append((i, future.result()))
            except Exception as exc:  # noqa: BLE001
                outcomes[i].dead = self.dead_letter(messages[i], exc, ref)
        if ready:
            probs = self.tagger.predict([p.windows for _, p in ready])
            version = self.tagger.manifest.version
            labels = self.tagger.manifest.labels
            for (i, prepared), row in zip(ready, probs, strict=True):
                outcomes[i].record = TagRecord(
                    track_id=prepared.ref.track_id,
                    model_version=version,
                    probabilities={k: round(float(p), 6) for k, p in zip(labels, row, strict=True)},
                    labels=self.tagger.labels_over_threshold(row),
                    duration_s=round(prepared.duration_s, 3),
                    uri=prepared.ref.uri,
                )
        return outcomes
