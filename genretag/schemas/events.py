"""The tag event: what the worker publishes on the events topic when a track's tags appear or
change (keyed by track id, so a compacted topic keeps each track's current tags).

The event id is a function of the content alone (track, model version, label set, primary
genre), so every delivery of the same tags carries the same id and a consumer drops duplicates
by remembering ids (or the last id per track).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from genretag.schemas._base import Contract
from genretag.schemas.messages import SCHEMA_VERSION, TRACK_ID_PATTERN

#: Hex digits of the event id (128 bits of SHA-256).
EVENT_ID_HEX = 32


def tag_event_id(track_id: str, model_version: str, labels: Iterable[str],
                 primary_genre: str | None) -> str:
    """The deterministic id of a track's tags: the same content always gives the same id
    (labels as a set: their order follows probabilities that vary in the last digits)."""
    content = json.dumps([track_id, model_version, sorted(labels), primary_genre],
                         separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(content.encode()).hexdigest()[:EVENT_ID_HEX]


class TagChange(StrEnum):
    """What the event announces."""

    NEW = "new"  # the track had no tags before
    CHANGED = "changed"  # model version, label set or primary genre differ from before
    UNCHANGED = "unchanged"  # re-tagged with the same content (only with ``--events all``)


class TagEvent(Contract):
    """A track's tags as a settled write left them, with what it held before that change."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(pattern=rf"^[0-9a-f]{{{EVENT_ID_HEX}}}$",
                          description="tag_event_id(track, version, labels, primary genre).")
    change: TagChange
    track_id: str = Field(pattern=TRACK_ID_PATTERN, description="The Kafka key.")
    uri: str | None = None
    model_version: str = Field(min_length=1)
    labels: list[str] = Field(description="Labels over their threshold, most probable first.")
    primary_genre: str | None = None
    top_probabilities: dict[str, float] = Field(
        default_factory=dict, description="The most probable labels (tagged or not) → p.")
    previous_model_version: str | None = Field(
        default=None, description="Model version before this change (None: the track was new).")
    previous_labels: list[str] | None = None
    previous_primary_genre: str | None = None
    time: AwareDatetime = Field(description="When the worker computed these tags.")

    @model_validator(mode="after")
    def _consistent(self) -> TagEvent:
        want = tag_event_id(self.track_id, self.model_version, self.labels, self.primary_genre)
        if self.event_id != want:
            raise ValueError(f"event_id {self.event_id} is not the id of this content ({want})")
        if any(not 0.0 <= p <= 1.0 for p in self.top_probabilities.values()):
            raise ValueError("top_probabilities must be in [0, 1]")
        if (self.change == TagChange.NEW) != (self.previous_model_version is None):
            raise ValueError("a new track has no previous model version, a changed one has one")
        return self
