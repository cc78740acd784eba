"""The tag record the worker writes to Redis for one track."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas._base import Contract, utcnow
from schemas.messages import SCHEMA_VERSION, TRACK_ID_PATTERN


class TagRecord(Contract):
    """Multilabel genre tags of one track by one model version."""

    schema_version: Literal[1] = SCHEMA_VERSION
    track_id: str = Field(pattern=TRACK_ID_PATTERN)
    model_version: str = Field(min_length=1)
    probabilities: dict[str, float] = Field(description="Genre → probability in [0, 1].")
    labels: list[str] = Field(description="Genres over their threshold, most probable first.")
    processed_at: AwareDatetime = Field(default_factory=utcnow)
    duration_s: float | None = Field(default=None, ge=0)
    uri: str | None = None

    @model_validator(mode="after")
    def _labels_are_known(self) -> TagRecord:
        for genre, p in self.probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probabilities[{genre!r}]={p} is outside [0, 1]")
        unknown = [label for label in self.labels if label not in self.probabilities]
        if unknown:
            raise ValueError(f"labels {unknown} have no probability")
        return self
