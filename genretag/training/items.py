"""What every dataset reader yields: one ``LabelledItem`` per audio file, whatever the source."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Item(Protocol):
    """What the trainer needs of a labelled item (FMA track, folder file, CSV row, demo clip)."""

    item_id: str
    path: Path
    labels: list[str]
    split: str


@dataclass(frozen=True)
class LabelledItem:
    """One audio file with its label(s) and split, whatever dataset it came from."""

    item_id: str
    path: Path
    labels: list[str]
    split: str
    group: str | None = None


def distinct_labels(items: Iterable[LabelledItem]) -> list[str]:
    """Sorted distinct labels of ``items``."""
    return sorted({label for item in items for label in item.labels})
