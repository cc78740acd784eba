"""Kafka message contracts: the track reference the producer enqueues and the dead letter."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, field_validator

from genretag.schemas._base import Contract, utcnow

SCHEMA_VERSION = 1

#: Track ids become Redis key parts and Kafka keys: keep them printable and bounded.
TRACK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"
#: Deepest nesting of ``metadata`` (JSON serialisers stop far deeper; dead letters must encode).
MAX_METADATA_DEPTH = 32


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of lists/dicts in ``value``, counting no further than ``limit + 1``."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


class TrackRef(Contract):
    """One track to tag: where its audio is and what the catalog knows about it.

    ``uri`` is a local path or a ``file://`` URI (other schemes only where the worker allows them).
    """

    # A path is taken as written: "a.mp3 " is not "a.mp3" (stripping would tag another file).
    model_config = ConfigDict(str_strip_whitespace=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    track_id: str = Field(pattern=TRACK_ID_PATTERN, description="Stable catalog id; the Kafka key.")
    uri: str = Field(min_length=1, max_length=4096, description="Path or URI of the audio file.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free catalog metadata.")
    enqueued_at: AwareDatetime = Field(default_factory=utcnow)

    @field_validator("uri")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError("uri contains control characters")
        if value != value.strip():
            raise ValueError("uri has leading or trailing whitespace")
        return value

    @field_validator("metadata")
    @classmethod
    def _bounded_depth(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _depth(value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
        return value


class ReasonCode(StrEnum):
    """Why a message was dead-lettered; a fixed set so operators can count and alert on it."""

    BAD_MESSAGE = "bad_message"  # not JSON, wrong schema, oversized message
    DISALLOWED_URI = "disallowed_uri"  # scheme not allowed, path outside the allowed roots
    MISSING_FILE = "missing_file"
    EMPTY_FILE = "empty_file"
    TOO_LARGE = "too_large"
    UNDECODABLE = "undecodable"  # the decoder (libav or FFmpeg) failed or produced no audio
    TOO_SHORT = "too_short"
    DECODE_TIMEOUT = "decode_timeout"
    INVALID_AUDIO = "invalid_audio"  # decoded samples are NaN or infinite (a broken float file)
    SILENT = "silent"
    INTERNAL = "internal"  # a bug, or the worker out of descriptors: parked, the worker goes on


class DeadLetter(Contract):
    """A message the worker could not turn into tags, with the reason and the original bytes."""

    schema_version: Literal[1] = SCHEMA_VERSION
    reason: ReasonCode
    detail: str = Field(max_length=4000)
    stage: Literal["parse", "validate", "decode", "infer", "store"]
    track_id: str | None = None
    original: str = Field(description="The original message value (UTF-8, replaced if invalid).")
    track: TrackRef | None = Field(default=None, description="The parsed reference, if it parsed.")
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    worker_id: str
    failed_at: datetime = Field(default_factory=utcnow)
