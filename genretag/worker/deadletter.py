"""Build a DeadLetter for any message and any exception, without ever raising.

The error path must not fail whatever the input: every field is taken from sanitised, bounded
data (:func:`genretag.worker.parse.safe_text`), an id is kept only if it matches the TrackRef contract,
and if building the full letter fails anyway a minimal one is built from constants.

A letter is bounded in *encoded* size by construction (:func:`fit`): JSON escaping can make a
byte six (``\u0001``), so the size is measured after encoding and the original bytes are cut
first, then the parsed reference dropped, then the detail shortened, until it fits.
"""

from __future__ import annotations

from typing import Any

from genretag.core.descriptors import HINT as DESCRIPTOR_HINT
from genretag.core.descriptors import is_exhaustion
from genretag.core.errors import FatalError, PermanentError
from genretag.core.kafka import LETTER_FRAMING_BYTES, dead_letter_max_bytes, topic_limit
from genretag.core.logs import get_logger
from genretag.core.settings import KafkaSection
from genretag.schemas import DeadLetter, ReasonCode, TrackRef
from genretag.worker.parse import safe_text, trusted_track_id

log = get_logger(__name__)

_STAGES = ("parse", "validate", "decode", "infer", "store")


#: Smallest letter bound that holds any letter once its original is cut and its reference
#: dropped (a 4000-character detail, coordinates, ids, timestamps).
MIN_LETTER_BYTES = 24 * 1024


def build_dead_letter(msg: Any, exc: BaseException, *, worker_id: str, max_bytes: int,
                      ref: TrackRef | None = None, stage: str | None = None,
                      max_encoded_bytes: int | None = None) -> DeadLetter:
    """A dead letter for ``msg`` (anything with topic/partition/offset/value) failed by ``exc``.

    A :class:`PermanentError` keeps its reason and stage; anything else is ``internal`` (a bug:
    the message is parked so the worker goes on). The letter encodes to JSON, in at most
    ``max_encoded_bytes`` bytes when given (:func:`fit`). Never raises.
    """
    topic, partition, offset = _coordinates(msg)
    try:
        if isinstance(exc, PermanentError):
            reason, detail = ReasonCode(exc.reason), safe_text(exc, 4000)
            stage = exc.stage
        else:
            reason = ReasonCode.INTERNAL
            detail = safe_text(f"{type(exc).__name__}: {safe_text(exc, 3800)}", 4000)
            if is_exhaustion(exc):  # not the track's fault: say what to fix
                detail = safe_text(f"out of file descriptors ({DESCRIPTOR_HINT}): {detail}", 4000)
        stage = stage if stage in _STAGES else "decode"
        track = ref if isinstance(ref, TrackRef) else None
        track_id = track.track_id if track else trusted_track_id(getattr(exc, "track_id", None))
        letter = DeadLetter(
            reason=reason, detail=detail, stage=stage, track_id=track_id,
            original=_original(msg, max_bytes), track=track, source_topic=topic,
            source_partition=partition, source_offset=offset, worker_id=safe_text(worker_id, 200),
        )
        letter.model_dump_json()  # what is sent must encode
        return letter if max_encoded_bytes is None else fit(letter, _raw(msg, max_bytes),
                                                            max_encoded_bytes)
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


def _raw(msg: Any, max_bytes: int) -> bytes:
    """The message value's first ``max_bytes`` bytes (empty when it is not bytes)."""
    raw = getattr(msg, "value", None)
    if not isinstance(raw, bytes | bytearray | memoryview):
        return b""
    return bytes(raw[: max(0, max_bytes)])


def _original(msg: Any, max_bytes: int) -> str:
    """The message value as text: at most ``max_bytes`` bytes, invalid UTF-8 replaced."""
    return _raw(msg, max_bytes).decode("utf-8", "replace")  # never a surrogate


def encoded_size(letter: DeadLetter) -> int:
    """Bytes of the letter as sent (the JSON the DLQ topic and Redis receive)."""
    return len(letter.model_dump_json().encode())


def fit(letter: DeadLetter, raw: bytes, limit: int) -> DeadLetter:
    """``letter`` in at most ``limit`` encoded bytes: its original cut (raw bytes first, then
    measured after escaping), then its parsed reference dropped, then its detail shortened.

    A cut original says so in the detail (how many of the message's bytes it keeps).
    """
    if encoded_size(letter) <= limit:
        return letter
    empty = letter.model_copy(update={"original": ""})
    budget = limit - encoded_size(empty)
    keep = len(raw)
    while keep > 0 and budget > 2:  # shrink in proportion to what escaping made of it
        text = raw[:keep].decode("utf-8", "replace")
        size = encoded_size(empty.model_copy(update={"original": text})) - encoded_size(empty)
        if size <= budget:
            note = f" [original cut to its first {keep} of {len(raw)}+ bytes to fit {limit}]"
            cut = _with_detail(empty.model_copy(update={"original": text}), note)
            if encoded_size(cut) <= limit:
                return cut
            size += len(note.encode())
        keep = min(keep - 1, keep * budget // max(size, 1))
    if encoded_size(empty) <= limit:
        return empty
    bare = empty.model_copy(update={"track": None})
    if encoded_size(bare) <= limit:
        return bare
    over = encoded_size(bare) - limit
    detail = bare.detail.encode()[: max(0, len(bare.detail.encode()) - over - 8)]
    return bare.model_copy(update={"detail": detail.decode("utf-8", "ignore") + " …"})


def _with_detail(letter: DeadLetter, note: str) -> DeadLetter:
    """``letter`` with ``note`` appended to its detail (within the field's 4000 characters)."""
    return letter.model_copy(update={"detail": letter.detail[: 4000 - len(note)] + note})


class DeadLetterTopicTooSmall(FatalError):
    """The dead-letter topic refuses letters of the size a worker may have to send."""

    exit_code = 3  # the broker refuses us, like credentials and ACLs


def letter_bound(kafka: KafkaSection) -> int:
    """Most encoded bytes of one dead letter, from the DLQ topic's ``max.message.bytes`` as the
    broker reports it (or the limit genretag gives the topics it creates, when the broker cannot
    say); refuses to start when even a letter without its original would not fit."""
    try:
        limit = topic_limit(kafka, kafka.dlq_topic)
        why = None if limit is not None else "the broker reports no max.message.bytes"
    except Exception as exc:  # noqa: BLE001 - e.g. Tansu closes the connection: go on, say so
        limit, why = None, f"{type(exc).__name__}: {safe_text(exc, 300)}"
    bound = dead_letter_max_bytes(kafka, limit)
    if bound < MIN_LETTER_BYTES:
        raise DeadLetterTopicTooSmall(
            f"the dead-letter topic {kafka.dlq_topic} accepts messages of at most {limit} bytes "
            f"(max.message.bytes); dead letters need {MIN_LETTER_BYTES + LETTER_FRAMING_BYTES}: "
            "raise the topic's max.message.bytes")
    log.info("worker.dead_letter_bound", extra={
        "topic": kafka.dlq_topic, "topic_max_message_bytes": limit, "letter_max_bytes": bound,
        "limit_unknown_because": why})
    return bound
