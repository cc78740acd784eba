"""What the client's list queries return: one page of scored tracks, purge results, counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ScoredTrack:
    """A track of a label's sorted set: its id and the label's probability for it."""

    track_id: str
    score: float


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, best first; ``next_offset`` is the offset of the next page (None:
    this is the last one). Pass it back as ``offset=`` to read on."""

    items: list[T]
    offset: int
    next_offset: int | None

    def __iter__(self):  # noqa: ANN204 - iterate the items directly: `for t in client.tracks(..)`
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class PurgeResult:
    """Dead letters found for a purge, and how many were deleted (a letter replaced by a newer
    failure meanwhile is kept)."""

    found: int
    purged: int
    dry_run: bool = False

    @property
    def kept(self) -> int:
        return self.found - self.purged


@dataclass(frozen=True)
class Stats:
    """Tagged tracks, tracks per genre and per model version (labels and versions no track has
    any more are left out), dead letters by reason; each count largest first."""

    tracks: int
    genres: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of `genretag stats --json`."""
        return {
            "tracks": self.tracks, "genres": self.genres, "models": self.models,
            "dead_letters": {"total": self.dead_letters, "by_reason": self.dead_letters_by_reason},
        }
