"""The one splitter: which split each item belongs to, and the items of each split.

``stratified_split`` assigns splits to datasets without an official one, deterministically:
items are ordered by a seeded hash inside each stratum and cut 80/10/10 (by default), whole
groups (album, artist) at a time so no group straddles splits. ``by_split`` groups items for
decoding and training.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from genretag.core.fma.layout import SPLITS

#: Default split fractions for datasets without an official split (training, validation, test).
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


class _HasSplit(Protocol):
    item_id: str
    split: str


T = TypeVar("T", bound=_HasSplit)


def by_split(items: Iterable[T]) -> dict[str, list[T]]:
    """Items per split name (every one of ``SPLITS`` present, possibly empty), input order kept.

    An item with another split name is an error, never silently left out of training.
    """
    out: dict[str, list[T]] = {s: [] for s in SPLITS}
    for item in items:
        if item.split not in out:
            raise ValueError(f"item {item.item_id!r} has split {item.split!r}; expected one of "
                             f"{', '.join(SPLITS)}")
        out[item.split].append(item)
    return out


def stratified_split(
    keys: Sequence[str],
    labels: Sequence[Sequence[str]],
    groups: Sequence[str | None] | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[str]:
    """Deterministic split name per item, stratified by label and never splitting a group.

    Items without a group are their own group. Each group is filed under its rarest label
    (so rare classes reach every split), groups are ordered by ``sha1(seed:group)`` inside
    their stratum, and consecutive groups are cut at the ``fractions`` (training, validation,
    test) of the stratum's item count. Same inputs and seed → same split, on any machine.
    """
    if len(labels) != len(keys) or (groups is not None and len(groups) != len(keys)):
        raise ValueError("keys, labels and groups must have the same length")
    fr = _check_fractions(fractions)
    counts = Counter(label for ls in labels for label in set(ls))
    unit_of = [
        f"group:{groups[i]}" if groups is not None and groups[i] else f"item:{keys[i]}"
        for i in range(len(keys))
    ]
    members: dict[str, list[int]] = defaultdict(list)
    for i, unit in enumerate(unit_of):
        members[unit].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for unit, idx in members.items():
        unit_labels = Counter(label for i in idx for label in set(labels[i]))
        if unit_labels:
            # the group's rarest label overall; ties → its most frequent label, then by name
            stratum = min(unit_labels, key=lambda lb: (counts[lb], -unit_labels[lb], lb))
        else:
            stratum = ""
        strata[stratum].append(unit)
    bounds = (fr[0], fr[0] + fr[1])
    result = [""] * len(keys)
    for units in strata.values():
        units.sort(key=lambda u: (_hash(seed, u), u))
        total = sum(len(members[u]) for u in units)
        done = 0
        for unit in units:
            size = len(members[unit])
            mid = (done + size / 2) / total
            split = SPLITS[0] if mid < bounds[0] else SPLITS[1] if mid < bounds[1] else SPLITS[2]
            for i in members[unit]:
                result[i] = split
            done += size
    return result


def _hash(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 "
                         f"(training, validation, test), got {tuple(fractions)}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))
