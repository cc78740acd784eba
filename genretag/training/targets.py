"""The one target encoder: labels of items → class list → the arrays the loss and metrics take.

``single``: one label per item, int64 class indices (softmax). ``multi``: float32 multi-hot rows
(sigmoid); labels with fewer than ``min_count`` training items are left out of the classes on
purpose and then ignored when encoding, while a label the encoder never saw is an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, get_args

import numpy as np

from genretag.training.config import Objective

OBJECTIVES: tuple[str, ...] = get_args(Objective)


class Labelled(Protocol):
    """What the encoder needs of an item: its id (for errors), labels and split."""

    item_id: str
    labels: list[str]
    split: str


@dataclass(frozen=True)
class TargetEncoder:
    """Classes of one objective and the encoding of items into targets for them.

    ``ignored`` holds labels deliberately not made classes (rarer than ``min_count``).
    """

    classes: tuple[str, ...]
    objective: Objective = "single"
    ignored: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        dupes = sorted(name for name, n in Counter(self.classes).items() if n > 1)
        if dupes:
            raise ValueError(f"duplicate class names {dupes} in {list(self.classes)}")

    @classmethod
    def fit(cls, items: Sequence[Labelled], objective: Objective = "single",
            min_count: int = 1) -> TargetEncoder:
        """Classes from ``items``: every label (single), or labels on ≥ ``min_count``
        training items (multi; the others become ``ignored``). Sorted by name."""
        if objective == "single":
            _check_one_label(items)
            return cls(tuple(sorted({item.labels[0] for item in items})), "single")
        counts = Counter(name for item in items if item.split == "training"
                         for name in set(item.labels))
        classes = sorted(name for name, n in counts.items() if n >= min_count)
        seen = {name for item in items for name in item.labels}
        return cls(tuple(classes), objective, frozenset(seen.difference(classes)))

    @property
    def labels(self) -> list[str]:
        """The class names as a list (model outputs, manifest labels)."""
        return list(self.classes)

    def encode(self, items: Sequence[Labelled]) -> np.ndarray:
        """Targets for the loss: class indices (single) or multi-hot rows (multi)."""
        return self.indices(items) if self.objective == "single" else self.multi_hot(items)

    def indices(self, items: Sequence[Labelled]) -> np.ndarray:
        """int64 class index of each item's only label."""
        _check_one_label(items)
        index = self._index()
        self._check_known(item.labels[0] for item in items)
        return np.fromiter((index[item.labels[0]] for item in items), dtype=np.int64,
                           count=len(items))

    def multi_hot(self, items: Sequence[Labelled]) -> np.ndarray:
        """float32 ``(n_items, n_classes)``, 1 where the item has the label (metrics of both
        objectives use it); ``ignored`` labels are skipped."""
        index = self._index()
        self._check_known(name for item in items for name in item.labels)
        hot = np.zeros((len(items), len(self.classes)), dtype=np.float32)
        for row, item in enumerate(items):
            for name in item.labels:
                if name in index:
                    hot[row, index[name]] = 1.0
        return hot

    def _index(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.classes)}

    def _check_known(self, names: Iterable[str]) -> None:
        known = set(self.classes) | self.ignored
        unknown = sorted({name for name in names if name not in known})
        if unknown:
            raise ValueError(f"label(s) {unknown} are not among the classes {list(self.classes)}")


def _check_one_label(items: Sequence[Labelled]) -> None:
    bad = [item.item_id for item in items if len(item.labels) != 1]
    if bad:
        raise ValueError(f"{len(bad)} item(s) do not have exactly one label (e.g. {bad[:5]}); "
                         "use the multilabel objective")
