"""Message bytes → TrackRef, where every failure is a BAD_MESSAGE with a safe, bounded detail.

Nothing in a message can make this raise anything but :class:`PermanentError`: not deep
nesting, huge integers, lone surrogates or control characters. An id that does not match the
TrackRef contract is never carried on the error (it would become a Redis key or a Kafka key).
"""

from __future__ import annotations

import json
import re
from typing import Any

from genretag.core.batches import UnreadableBatch
from genretag.core.errors import PermanentError
from genretag.schemas import ReasonCode, TrackRef, describe_errors
from genretag.schemas.messages import TRACK_ID_PATTERN

#: Longest error detail built from message content (the DeadLetter field allows 4000).
DETAIL_LIMIT = 1000
_TRACK_ID = re.compile(TRACK_ID_PATTERN)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def safe_text(value: object, limit: int = DETAIL_LIMIT) -> str:
    """Printable, valid UTF-8, at most ``limit`` characters: control characters and lone
    surrogates become ``\\x..``/``\\u....`` escapes. Never raises."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001 - a __str__ that fails: say so, do not fail
        text = f"<unprintable {type(value).__name__}>"
    text = text[: limit * 2]
    text = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace")
                       .decode("ascii", "replace"), text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trusted_track_id(value: Any) -> str | None:
    """``value`` if it is a contract-valid track id (safe as a key), else None."""
    return value if isinstance(value, str) and _TRACK_ID.fullmatch(value) else None


def parse_message(value: bytes | None, max_bytes: int) -> TrackRef:
    """Message bytes → TrackRef; oversized, non-JSON or wrong-schema → BAD_MESSAGE."""

    def bad(detail: str, track_id: str | None = None) -> PermanentError:
        return PermanentError(ReasonCode.BAD_MESSAGE, safe_text(detail), track_id=track_id,
                              stage="parse")

    if value is None:
        raise bad("message has no value")
    if isinstance(value, UnreadableBatch):  # the consumer could not read its record batch
        raise bad(str(value))
    if not isinstance(value, bytes | bytearray | memoryview):
        raise bad(f"message value is {type(value).__name__}, not bytes")
    if len(value) > max_bytes:
        raise bad(f"message is {len(value)} bytes, cap is {max_bytes}")
    try:
        data = json.loads(bytes(value))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not JSON: {exc}") from None
    except RecursionError:
        raise bad("not JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise bad(f"not JSON: {exc}") from None
    track_id = trusted_track_id(data.get("track_id")) if isinstance(data, dict) else None
    try:
        ref = TrackRef.model_validate(data)
        ref.model_dump_json()  # a reference that parses can be dead-lettered and sent later
    except RecursionError:
        raise bad("schema: nested too deeply", track_id) from None
    except Exception as exc:  # noqa: BLE001 - ValidationError or a value it cannot encode
        fields = describe_errors(exc, "message") if hasattr(exc, "errors") else str(exc)
        raise bad(f"schema: {fields}", track_id) from None
    return ref
