"""Publish a catalog: validate rows, choose which to send, send them keyed by track id, report.

Streaming: rows flow source → validation → selection → producer one at a time. ``strict``
reads the source twice (validate everything, then send) — or, for a one-shot source such as
stdin, keeps the validated messages of the first pass in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from genretag.core.kafka import ensure_topics
from genretag.core.logs import get_logger
from genretag.producer.settings import ProducerSettings
from genretag.producer.report import ProduceReport
from genretag.producer.send import AckingSender, BrokerUnavailable, RateLimiter
from genretag.producer.sources import Source, SourceRow
from genretag.producer.validate import Prepared, prepare, validate_row
from genretag.schemas import TrackRef

log = get_logger(__name__)

#: Decides, for a chunk of valid references, which to skip: a reason per ref, None to send it.
Chooser = Callable[[Sequence[TrackRef]], Sequence[str | None]]
CHOOSE_CHUNK = 256

__all__ = ["Chooser", "ProduceReport", "publish", "validate_row"]


def _rereadable(rows: Iterable[SourceRow]) -> bool:
    if isinstance(rows, Source):
        return rows.rereadable
    return iter(rows) is not rows  # a list or tuple can be read twice; an iterator cannot


def choose(
    items: Iterable[Prepared], report: ProduceReport, chooser: Chooser | None, limit: int | None
) -> Iterator[Prepared]:
    """The items ``chooser`` keeps (asked in chunks), at most ``limit``; skips counted by reason."""
    if limit is not None and limit <= 0:
        return
    chosen = 0
    chunk: list[Prepared] = []

    def decide(batch: list[Prepared]) -> Iterator[Prepared]:
        reasons = chooser([p.ref for p in batch]) if chooser else [None] * len(batch)
        for item, reason in zip(batch, reasons, strict=True):
            if reason is None:
                yield item
            else:
                report.skipped[reason] += 1

    for item in items:
        chunk.append(item)
        if chooser is not None and len(chunk) < CHOOSE_CHUNK:
            continue
        for kept in decide(chunk):
            yield kept
            chosen += 1
            if limit is not None and chosen >= limit:
                return
        chunk = []
    for kept in decide(chunk):
        yield kept
        chosen += 1
        if limit is not None and chosen >= limit:
            return


def _bar(items: Iterable[Prepared], desc: str, progress: bool) -> Iterable[Prepared]:
    """A progress bar with count and rate on stderr (hidden when not a terminal or not wanted)."""
    return tqdm(items, desc=desc, unit="track", disable=None if progress else True,
                dynamic_ncols=True, mininterval=0.5)


def publish(
    rows: Iterable[SourceRow],
    settings: ProducerSettings,
    *,
    dry_run: bool = False,
    strict: bool = False,
    limit: int | None = None,
    max_rate: float | None = None,
    progress: bool = True,
    chooser: Chooser | None = None,
) -> ProduceReport:
    """Send every valid, chosen row (at most ``limit``, at most ``max_rate``/s); see the report.

    ``strict``: any invalid row anywhere in the source aborts before anything is sent.
    ``dry_run``: validate and choose (``chooser`` may read Redis), send nothing.
    """
    report = ProduceReport(dry_run=dry_run)
    items: Iterable[Prepared]
    if strict:
        check = ProduceReport(dry_run=dry_run)
        keep = not _rereadable(rows)
        buffered: list[Prepared] = []
        for item in _bar(prepare(rows, check, settings.kafka.max_message_bytes), "validate", progress):
            if keep:
                buffered.append(item)
        if check.error_count:
            check.strict_aborted = True
            log.error("produce.strict_abort", extra={"errors": check.error_count})
            return check
        if keep:
            report, items = check, buffered
        else:
            items = prepare(rows, report, settings.kafka.max_message_bytes)
    else:
        items = prepare(rows, report, settings.kafka.max_message_bytes)

    chosen = choose(items, report, chooser, limit)
    if dry_run:
        for _ in _bar(chosen, "dry run", progress):
            report.selected += 1
        log.info("produce.done", extra=report.as_dict())
        return report

    ensure_topics(settings.kafka)
    sender = AckingSender(
        settings.kafka, settings.kafka.topic, on_error=report.add_error,
        linger_ms=settings.producer.linger_ms,
        compression_type=None if settings.producer.compression == "none"
        else settings.producer.compression,
    )
    limiter = RateLimiter(max_rate)
    try:
        for item in _bar(chosen, "enqueue", progress):
            limiter.wait()
            report.selected += 1
            sender.send(item.ref.track_id, item.value)
    except BrokerUnavailable as exc:
        report.aborted = str(exc)
    except (OSError, ValueError) as exc:  # the source became unreadable mid-way
        report.aborted = f"source unreadable: {exc}"
        log.error("produce.source_failed", extra={"error": str(exc)})
    finally:
        sender.close(settings.producer.ack_timeout_s)
        report.enqueued = sender.acked
        report.failed = sender.failed
    log.info("produce.done", extra=report.as_dict())
    return report
