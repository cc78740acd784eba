"""The tag record the worker writes to Redis for one track, with its genre timeline."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from genretag.schemas._base import Contract, utcnow
from genretag.schemas.messages import SCHEMA_VERSION, TRACK_ID_PATTERN


#: Most windows a timeline holds (the worker's MAX_WINDOWS is capped below it).
TIMELINE_MAX_WINDOWS = 256


class Timeline(Contract):
    """Where in the track the model listened and what it heard there: window ``i`` starts at
    ``starts[i]`` seconds, lasts ``clip_seconds``, and ``probabilities[i][j]`` is the model's
    probability of ``labels[j]`` there (rounded to 3 decimals). ``silent[i]``: the window held
    no audible signal and was left out of the track's tags."""

    clip_seconds: float = Field(gt=0)
    labels: list[str] = Field(min_length=1)
    starts: list[float] = Field(min_length=1, max_length=TIMELINE_MAX_WINDOWS)
    probabilities: list[list[float]] = Field(min_length=1, max_length=TIMELINE_MAX_WINDOWS)
    silent: list[bool] = Field(min_length=1, max_length=TIMELINE_MAX_WINDOWS)

    @model_validator(mode="after")
    def _consistent(self) -> Timeline:
        n = len(self.starts)
        if len(self.probabilities) != n or len(self.silent) != n:
            raise ValueError("starts, probabilities and silent need one entry per window")
        if any(len(row) != len(self.labels) for row in self.probabilities):
            raise ValueError("every probabilities row needs one value per label")
        if any(not 0.0 <= p <= 1.0 for row in self.probabilities for p in row):
            raise ValueError("timeline probabilities must be in [0, 1]")
        if any(s < 0 for s in self.starts) or self.starts != sorted(self.starts):
            raise ValueError("window starts must be >= 0 and ascending")
        return self


class TagRecord(Contract):
    """Multilabel genre tags of one track by one model version."""

    schema_version: Literal[1] = SCHEMA_VERSION
    track_id: str = Field(pattern=TRACK_ID_PATTERN)
    model_version: str = Field(min_length=1)
    probabilities: dict[str, float] = Field(description="Genre → probability in [0, 1].")
    labels: list[str] = Field(description="Genres over their threshold, most probable first.")
    primary_genre: str | None = Field(
        default=None, description="The most probable label of kind genre, whatever the "
        "thresholds: every tagged track has one (None only in records written before it).")
    processed_at: AwareDatetime = Field(default_factory=utcnow)
    duration_s: float | None = Field(default=None, ge=0)
    uri: str | None = None
    timeline: Timeline | None = Field(
        default=None, description="Per-window probabilities and start times (whole-track tagging).")

    @model_validator(mode="after")
    def _labels_are_known(self) -> TagRecord:
        for genre, p in self.probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probabilities[{genre!r}]={p} is outside [0, 1]")
        unknown = [label for label in self.labels if label not in self.probabilities]
        if unknown:
            raise ValueError(f"labels {unknown} have no probability")
        if self.primary_genre is not None and self.primary_genre not in self.probabilities:
            raise ValueError(f"primary_genre {self.primary_genre!r} has no probability")
        return self
