"""Training targets and dataset readers: FMA, folder-per-label (GTZAN) and ``--labels`` CSVs.

Every reader yields the same ``LabelledItem`` list so the trainer treats FMA and custom datasets
alike; ``encode_single_label`` / ``encode_multilabel`` turn items into numpy targets. Splits of
custom datasets are deterministic: items are ordered by a seeded hash inside each stratum and
cut 80/10/10 (by default), whole groups (album, artist) at a time so no group straddles splits.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.fma import SPLITS, FmaTrack, GenreTree, audio_path
from core.errors import FatalError

log = logging.getLogger(__name__)

#: Audio file suffixes the folder reader picks up (lower-case).
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".mp3", ".au", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff",
    ".wma",
)
#: Default split fractions for datasets without an official split (training, validation, test).
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
#: Separator of several labels in one ``label`` cell of a labels CSV.
LABEL_SEPARATOR = "|"

_SPLIT_ALIASES = {
    "training": "training", "train": "training",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test",
}
_MAX_LISTED = 20


class LabelsFileError(FatalError, ValueError):
    """A dataset description (labels CSV or folder) is unusable; the message lists every problem."""


@dataclass(frozen=True)
class LabelledItem:
    """One audio file with its label(s) and split, whatever dataset it came from."""

    item_id: str
    path: Path
    labels: list[str]
    split: str
    group: str | None = None


# --------------------------------------------------------------------------- FMA targets


def single_label_classes(tracks: Iterable[FmaTrack]) -> list[str]:
    """Sorted ``genre_top`` titles present in ``tracks`` (8 on fma_small, 16 on fma_medium)."""
    return sorted({t.genre_top for t in tracks if t.genre_top})


def fma_single_label(
    tracks: Sequence[FmaTrack], classes: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Class names and int64 class indices of each track's ``genre_top``.

    ``classes`` defaults to the sorted titles present; pass the training classes to encode
    another split consistently. A track without ``genre_top`` or with an unknown one is an error.
    """
    names = list(classes) if classes is not None else single_label_classes(tracks)
    index = _index(names)
    missing = [t.track_id for t in tracks if not t.genre_top]
    if missing:
        raise ValueError(f"{len(missing)} track(s) have no genre_top (e.g. {missing[:5]}); "
                         "filter them out first (fma_items does)")
    unknown = sorted({t.genre_top for t in tracks if t.genre_top not in index})
    if unknown:
        raise ValueError(f"genre_top value(s) {unknown} are not among the classes {names}")
    y = np.fromiter((index[t.genre_top] for t in tracks), dtype=np.int64, count=len(tracks))
    return names, y


def fma_genre_ids(track: FmaTrack, genres: GenreTree, top_level_only: bool = False) -> list[int]:
    """Sorted genre ids of a track: ``genres_all`` ∪ ``genres`` plus every ancestor.

    With ``top_level_only`` just the top-level genres those belong to.
    """
    ids = set(track.genres_all) | set(track.genres)
    unknown = sorted(i for i in ids if i not in genres)
    if unknown:
        raise ValueError(f"track {track.track_id}: genre id(s) {unknown} are not in "
                         f"{genres.path or 'the genre table'}")
    if top_level_only:
        return sorted({genres.top_level(i) for i in ids})
    return genres.with_ancestors(ids)


def fma_multilabel(
    tracks: Sequence[FmaTrack],
    genres: GenreTree,
    top_level_only: bool = False,
    classes: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Genre titles and a float32 multi-hot matrix ``(n_tracks, n_classes)`` over genres_all.

    Parents are implied by children (a Post-Punk track is also Punk and Rock) even when
    ``genres_all`` omits them. Classes default to the sorted titles present in ``tracks``.
    """
    per_track = [[genres.title(g) for g in fma_genre_ids(t, genres, top_level_only)]
                 for t in tracks]
    titles = [g.title for g in genres]
    dupes = sorted(t for t, n in Counter(titles).items() if n > 1)
    if dupes:
        raise ValueError(f"genre titles are not unique: {dupes}")
    names = list(classes) if classes is not None else sorted({n for ls in per_track for n in ls})
    return names, _multi_hot(per_track, names, what="genre")


def fma_items(
    tracks: Sequence[FmaTrack],
    audio_dir: str | Path,
    genres: GenreTree | None = None,
    multilabel: bool = False,
    top_level_only: bool = False,
) -> list[LabelledItem]:
    """FMA tracks as ``LabelledItem``s: id ``str(track_id)``, official split, artist as group.

    Single-label: ``labels == [genre_top]`` (tracks without one are left out and logged).
    Multilabel (needs ``genres``): titles of genres_all with implied parents (or top levels).
    """
    if multilabel and genres is None:
        raise ValueError("multilabel FMA items need the genre tree (load_genres)")
    items: list[LabelledItem] = []
    skipped: list[int] = []
    for t in tracks:
        if multilabel:
            assert genres is not None
            labels = [genres.title(g) for g in fma_genre_ids(t, genres, top_level_only)]
        elif t.genre_top:
            labels = [t.genre_top]
        else:
            labels = []
        if not labels:
            skipped.append(t.track_id)
            continue
        items.append(LabelledItem(
            item_id=str(t.track_id), path=audio_path(audio_dir, t.track_id), labels=labels,
            split=t.split, group=t.artist or None,
        ))
    if skipped:
        log.warning("left out %d FMA track(s) without %s (e.g. %s)", len(skipped),
                    "genres" if multilabel else "genre_top", skipped[:5])
    return items


# --------------------------------------------------------------------------- generic targets


def label_classes(items: Iterable[LabelledItem]) -> list[str]:
    """Sorted distinct labels of ``items``."""
    return sorted({label for item in items for label in item.labels})


def encode_single_label(
    items: Sequence[LabelledItem], classes: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Class names and int64 indices; every item must have exactly one label."""
    names = list(classes) if classes is not None else label_classes(items)
    index = _index(names)
    bad = [i.item_id for i in items if len(i.labels) != 1]
    if bad:
        raise ValueError(f"{len(bad)} item(s) do not have exactly one label (e.g. {bad[:5]}); "
                         "use encode_multilabel")
    unknown = sorted({i.labels[0] for i in items if i.labels[0] not in index})
    if unknown:
        raise ValueError(f"label(s) {unknown} are not among the classes {names}")
    y = np.fromiter((index[i.labels[0]] for i in items), dtype=np.int64, count=len(items))
    return names, y


def encode_multilabel(
    items: Sequence[LabelledItem], classes: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Class names and a float32 multi-hot matrix ``(n_items, n_classes)``."""
    names = list(classes) if classes is not None else label_classes(items)
    return names, _multi_hot([i.labels for i in items], names, what="label")


def split_items(items: Iterable[LabelledItem]) -> dict[str, list[LabelledItem]]:
    """Items grouped by split, every split name present (possibly empty)."""
    out: dict[str, list[LabelledItem]] = {s: [] for s in SPLITS}
    for item in items:
        out.setdefault(item.split, []).append(item)
    return out


# --------------------------------------------------------------------------- splitting


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


# --------------------------------------------------------------------------- readers


def read_folder_dataset(
    root: str | Path,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[LabelledItem]:
    """Read a folder-per-label dataset (GTZAN layout: ``ROOT/<label>/*.wav``), split 80/10/10.

    Files may sit in sub-folders of a label folder; hidden files and other suffixes are ignored.
    ``item_id`` is the path relative to ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise LabelsFileError(f"{root}: dataset folder not found")
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: list[tuple[str, Path, str]] = []
    stray = 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            stray += entry.suffix.lower() in exts
            continue
        files = sorted(
            p for p in entry.rglob("*")
            if p.is_file() and p.suffix.lower() in exts
            and not any(part.startswith(".") for part in p.relative_to(entry).parts)
        )
        if not files:
            log.warning("%s: label folder %s has no audio files", root, entry.name)
        for p in files:
            found.append((p.relative_to(root).as_posix(), p, entry.name))
    if stray:
        log.warning("%s: %d audio file(s) directly in the root ignored (expected ROOT/<label>/)",
                    root, stray)
    if not found:
        raise LabelsFileError(
            f"{root}: no audio files in label folders; expected ROOT/<label>/<file> with "
            f"suffix {', '.join(sorted(exts))}")
    splits = stratified_split([k for k, _, _ in found], [[lb] for _, _, lb in found],
                              fractions=fractions, seed=seed)
    items = [LabelledItem(item_id=k, path=p, labels=[lb], split=s)
             for (k, p, lb), s in zip(found, splits)]
    _log_summary(str(root), items)
    return items


def read_labels_csv(
    path: str | Path,
    base_dir: str | Path | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    check_files: bool = True,
) -> list[LabelledItem]:
    """Read a ``--labels`` CSV: columns ``path,label`` plus optional ``split``, ``group``, ``id``.

    ``label`` may hold several labels separated by ``|`` (multilabel). Relative paths resolve
    against ``base_dir`` (default: the CSV's folder). Rows without a split get a deterministic
    stratified split that keeps each ``group`` (album, artist) inside one split. Every problem
    (missing cells, unknown split, duplicate ids, missing files) is collected and raised together.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsFileError(f"{path}: labels CSV not found")
    base = Path(base_dir) if base_dir is not None else path.parent
    try:
        rows, problems = _read_labels_rows(path, base, check_files)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise LabelsFileError(f"{path}: unreadable CSV: {exc}") from exc
    if problems:
        listed = "\n".join(f"  {p}" for p in problems[:_MAX_LISTED])
        extra = len(problems) - _MAX_LISTED
        more = f"\n  ... and {extra} more" if extra > 0 else ""
        raise LabelsFileError(f"{path}: {len(problems)} problem(s):\n{listed}{more}")
    if not rows:
        raise LabelsFileError(f"{path}: no rows")
    todo = [i for i, r in enumerate(rows) if r[3] is None]
    assigned: dict[int, str] = {}
    if todo:
        computed = stratified_split(
            [rows[i][0] for i in todo], [rows[i][2] for i in todo],
            [rows[i][4] for i in todo], fractions=fractions, seed=seed,
        )
        assigned = dict(zip(todo, computed))
        _check_given_groups(path, rows, assigned)
    items = [
        LabelledItem(item_id=iid, path=p, labels=lbs, split=split or assigned[i], group=group)
        for i, (iid, p, lbs, split, group) in enumerate(rows)
    ]
    _log_summary(str(path), items)
    return items


# --------------------------------------------------------------------------- internals


_Row = tuple[str, Path, list[str], str | None, str | None]


def _read_labels_rows(path: Path, base: Path, check_files: bool) -> tuple[list[_Row], list[str]]:
    """Parse a labels CSV into ``(id, path, labels, split or None, group or None)`` rows and
    a list of problems (with line numbers); a bad header raises ``LabelsFileError``."""
    problems: list[str] = []
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise LabelsFileError(f"{path}: empty file; expected a header 'path,label"
                                  "[,split][,group][,id]'") from None
        names = [h.strip().lower() for h in header]
        missing = [c for c in ("path", "label") if c not in names]
        if missing:
            raise LabelsFileError(
                f"{path}: header {','.join(header)!r} lacks {', '.join(missing)}; expected "
                "'path,label[,split][,group][,id]'")
        col = {name: i for i, name in enumerate(names)}
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                problems.append(f"line {line}: expected {len(names)} fields, got {len(row)}")
                continue

            def cell(name: str, row: list[str] = row) -> str:
                return row[col[name]].strip() if name in col else ""

            file_text = cell("path")
            labels = _dedupe(lb.strip() for lb in cell("label").split(LABEL_SEPARATOR))
            if not file_text:
                problems.append(f"line {line}: empty path")
                continue
            if not labels:
                problems.append(f"line {line}: {file_text}: empty label")
                continue
            split: str | None = None
            if cell("split"):
                split = _SPLIT_ALIASES.get(cell("split").lower())
                if split is None:
                    problems.append(f"line {line}: split {cell('split')!r} is not one of "
                                    f"{', '.join(SPLITS)} (or train/val/valid/dev)")
                    continue
            item_id = cell("id") or file_text
            if item_id in seen:
                problems.append(f"line {line}: duplicate item {item_id!r} "
                                f"(first on line {seen[item_id]})")
                continue
            seen[item_id] = line
            file_path = Path(file_text).expanduser()
            if not file_path.is_absolute():
                file_path = base / file_path
            if check_files and not file_path.is_file():
                problems.append(f"line {line}: file not found: {file_path}")
                continue
            rows.append((item_id, file_path, labels, split, cell("group") or None))
    return rows, problems


def _index(names: Sequence[str]) -> dict[str, int]:
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {list(names)}")
    return {name: i for i, name in enumerate(names)}


def _multi_hot(per_item: Sequence[Sequence[str]], names: Sequence[str], what: str) -> np.ndarray:
    index = _index(names)
    unknown = sorted({lb for ls in per_item for lb in ls if lb not in index})
    if unknown:
        raise ValueError(f"{what}(s) {unknown} are not among the classes {list(names)}")
    y = np.zeros((len(per_item), len(names)), dtype=np.float32)
    for row, ls in enumerate(per_item):
        for lb in ls:
            y[row, index[lb]] = 1.0
    return y


def _hash(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 "
                         f"(training, validation, test), got {tuple(fractions)}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def _dedupe(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return out


def _check_given_groups(path: Path, rows: Sequence[tuple], assigned: dict[int, str]) -> None:
    """Warn when a group has rows with a given split and rows split automatically."""
    given: dict[str, set[str]] = defaultdict(set)
    auto: dict[str, set[str]] = defaultdict(set)
    for i, (_, _, _, split, group) in enumerate(rows):
        if group:
            (given if split else auto)[group].update({split} if split else {assigned[i]})
    mixed = sorted(g for g in auto if g in given and auto[g] != given[g])
    if mixed:
        log.warning("%s: group(s) %s have rows with and without a split column value and "
                    "ended up in several splits", path, mixed[:5])


def _log_summary(source: str, items: Sequence[LabelledItem]) -> None:
    per_split = Counter(i.split for i in items)
    log.info("%s: %d items, %d labels, splits %s", source, len(items),
             len(label_classes(items)), dict(sorted(per_split.items())))
