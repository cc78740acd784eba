"""Build a DeadLetter for any message and any exception, without ever raising.

The error path must not fail whatever the input: every field is taken from sanitised, bounded
data (:func:`genretag.worker.parse.safe_text`), an id is kept only if it matches the TrackRef contract,
and if building the full letter fails anyway a minimal one is built from constants.
"""

from __future__ import annotations

from typing import Any

from genretag.core.errors import PermanentError
from genretag.core.logs import get_logger
from genretag.schemas import DeadLetter, ReasonCode, TrackRef
from genretag.worker.parse import safe_text, trusted_track_id

log = get_logger(__name__)

_STAGES = ("parse", "validate", "decode", "infer", "store")


def build_dead_letter(msg: Any, exc: BaseException, *, worker_id: str, max_bytes: int,
                      ref: TrackRef | None = None, stage: str | None = None) -> DeadLetter:
    """A dead letter for ``msg`` (anything with topic/partition/offset/value) failed by ``exc``.

    A :class:`PermanentError` keeps its reason and stage; anything else is ``internal`` (a bug:
    the message is parked so the worker goes on). The letter encodes to JSON. Never raises.
    """
    topic, partition, offset = _coordinates(msg)
    try:
        if isinstance(exc, PermanentError):
            reason, detail = ReasonCode(exc.reason), safe_text(exc, 4000)
            stage = exc.stage
        else:
            reason = ReasonCode.INTERNAL
            detail = safe_text(f"{type(exc).__name__}: {safe_text(exc, 3800)}", 4000)
        stage = stage if stage in _STAGES else "decode"
        track = ref if isinstance(ref, TrackRef) else None
        track_id = track.track_id if track else trusted_track_id(getattr(exc, "track_id", None))
        letter = DeadLetter(
            reason=reason, detail=detail, stage=stage, track_id=track_id,
            original=_original(msg, max_bytes), track=track, source_topic=topic,
            source_partition=partition, source_offset=offset, worker_id=safe_text(worker_id, 200),
        )
        letter.model_dump_json()  # what is sent must encode
        return letter
    except Exception as build_exc:  # noqa: BLE001 - fall back to a letter of constants
        log.error("worker.dead_letter_fallback", extra={
            "why": safe_text(build_exc, 500), "topic": topic, "partition": partition,
            "offset": offset})
        return DeadLetter(
            reason=ReasonCode.INTERNAL, stage="parse" if ref is None else "decode",
            detail=f"dead letter could not be built in full: {type(build_exc).__name__}",
            original="", source_topic=topic, source_partition=partition, source_offset=offset,
            worker_id="unknown",
        )


def _coordinates(msg: Any) -> tuple[str, int, int]:
    """Topic, partition and offset of ``msg``, made valid for the contract whatever they are."""
    topic = safe_text(getattr(msg, "topic", None) or "unknown", 249)
    numbers = []
    for name in ("partition", "offset"):
        raw = getattr(msg, name, 0)
        numbers.append(raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0
                       else 0)
    return topic, numbers[0], numbers[1]


def _original(msg: Any, max_bytes: int) -> str:
    """The message value as text: at most ``max_bytes`` bytes, invalid UTF-8 replaced."""
    raw = getattr(msg, "value", None)
    if not isinstance(raw, bytes | bytearray | memoryview):
        return ""
    return bytes(raw[: max(0, max_bytes)]).decode("utf-8", "replace")  # never a surrogate
