"""Validate source rows as ``TrackRef``s and publish them, keyed by track id, with a report."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError
from tqdm import tqdm

from genretag.kafka import ensure_topics, make_producer
from genretag.logs import get_logger
from genretag.settings import ProducerSettings
from producer.sources import SourceRow
from schemas import TrackRef

log = get_logger(__name__)


@dataclass
class ProduceReport:
    """What a produce run did: counts, and every rejected row with its origin and reason."""

    enqueued: int = 0
    failed: int = 0
    skipped: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"enqueued": self.enqueued, "failed": self.failed,
                "skipped": dict(self.skipped), "errors": self.errors[:100]}


def validate_row(row: SourceRow) -> TrackRef:
    """The row as a TrackRef, or ValueError naming the origin and the offending field."""
    where = f"{row.origin}:{row.line}" if row.line is not None else row.origin
    if "__error__" in row.data:
        raise ValueError(f"{where}: {row.data['__error__']}")
    try:
        return TrackRef.model_validate(row.data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{where}: {problems}") from None


def publish(
    rows: Iterable[SourceRow],
    settings: ProducerSettings,
    *,
    dry_run: bool = False,
    strict: bool = False,
    limit: int | None = None,
    max_rate: float | None = None,
    progress: bool = True,
) -> ProduceReport:
    """Send every valid row; ``strict`` validates everything first and sends nothing on error."""
    report = ProduceReport()
    refs: list[TrackRef] = []
    seen: set[str] = set()
    for row in rows:
        if limit is not None and len(refs) >= limit:
            break
        try:
            ref = validate_row(row)
        except ValueError as exc:
            report.skipped["invalid"] += 1
            report.errors.append(str(exc))
            log.warning("produce.invalid_row", extra={"error": str(exc)})
            continue
        if ref.track_id in seen:
            report.skipped["duplicate"] += 1
            continue
        seen.add(ref.track_id)
        refs.append(ref)
    if strict and report.errors:
        log.error("produce.strict_abort", extra={"errors": len(report.errors)})
        return report
    if dry_run:
        report.enqueued = 0
        report.skipped["dry_run"] += len(refs)
        return report

    ensure_topics(settings)
    producer = make_producer(
        settings, linger_ms=settings.producer_linger_ms,
        compression_type=None if settings.producer_compression == "none" else settings.producer_compression,
    )
    futures = []
    started = time.monotonic()
    try:
        for i, ref in enumerate(tqdm(refs, desc="enqueue", unit="track", disable=not progress)):
            if max_rate:
                wait = started + i / max_rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            value = ref.model_dump_json().encode()
            futures.append((ref, producer.send(settings.kafka_topic, key=ref.track_id.encode(), value=value)))
        producer.flush()
    finally:
        for ref, fut in futures:
            try:
                fut.get(timeout=30)
                report.enqueued += 1
            except Exception as exc:  # noqa: BLE001 - any send failure is counted and reported
                report.failed += 1
                report.errors.append(f"{ref.track_id}: not acknowledged: {exc}")
        producer.close()
    log.info("produce.done", extra=report.as_dict())
    return report
