"""Source rows → validated, encoded ``TrackRef`` messages; bad rows reported with file:line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from genretag.core.logs import get_logger
from genretag.producer.report import ProduceReport
from genretag.producer.sources import SourceRow
from genretag.schemas import TrackRef, describe_errors

log = get_logger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A valid track reference and the exact bytes that will be sent for it."""

    ref: TrackRef
    value: bytes
    where: str


def validate_row(row: SourceRow, max_message_bytes: int | None = None) -> Prepared:
    """The row as a TrackRef and its JSON bytes, or ValueError naming the origin and the problem."""
    if row.error is not None:
        raise ValueError(f"{row.where}: {row.error}")
    try:
        ref = TrackRef.model_validate(row.data)
    except ValidationError as exc:
        raise ValueError(f"{row.where}: {describe_errors(exc, 'row')}") from None
    value = ref.model_dump_json().encode()
    if max_message_bytes is not None and len(value) > max_message_bytes:
        raise ValueError(f"{row.where}: message is {len(value)} bytes, over the "
                         f"{max_message_bytes}-byte cap (max_message_bytes)")
    return Prepared(ref, value, row.where)


def prepare(
    rows: Iterable[SourceRow], report: ProduceReport, max_message_bytes: int | None = None
) -> Iterator[Prepared]:
    """Valid, first-seen rows; every other row is counted in ``report`` (and logged) by reason.

    Only the ids seen so far are kept (for duplicates), never the rows themselves.
    """
    seen: set[str] = set()
    for row in rows:
        if row.skip is not None:
            report.skipped[row.skip] += 1
            log.info("produce.skipped_row", extra={"where": row.where, "reason": row.skip})
            continue
        try:
            item = validate_row(row, max_message_bytes)
        except ValueError as exc:
            report.skipped["invalid"] += 1
            report.add_error(str(exc))
            log.warning("produce.invalid_row", extra={"error": str(exc)})
            continue
        if item.ref.track_id in seen:
            report.skipped["duplicate"] += 1
            log.info("produce.duplicate", extra={"where": row.where, "track_id": item.ref.track_id})
            continue
        seen.add(item.ref.track_id)
        yield item
