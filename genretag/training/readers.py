"""Readers of custom datasets: a folder per label (GTZAN layout) and ``--labels`` CSVs.

Both yield ``LabelledItem`` lists like the FMA reader; rows without a split get one from the
shared ``stratified_split``. Every problem in a CSV is collected and reported together.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from genretag.core.audio.formats import AUDIO_EXTENSIONS, normalise_extensions
from genretag.core.errors import FatalError
from genretag.core.fma.layout import SPLITS
from genretag.core.lines import MAX_CSV_LINE_BYTES, bounded_text_lines
from genretag.core.settings import expand_path
from genretag.training.items import LabelledItem, distinct_labels
from genretag.training.splits import DEFAULT_FRACTIONS, stratified_split

log = logging.getLogger(__name__)

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
    exts = normalise_extensions(extensions)
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


_Row = tuple[str, Path, list[str], str | None, str | None]


def _read_labels_rows(path: Path, base: Path, check_files: bool) -> tuple[list[_Row], list[str]]:
    """Parse a labels CSV into ``(id, path, labels, split or None, group or None)`` rows and
    a list of problems (with line numbers); a bad header raises ``LabelsFileError``."""
    problems: list[str] = []
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    with path.open("rb") as f:  # physical lines bounded before csv sees them
        reader = csv.reader(bounded_text_lines(f, MAX_CSV_LINE_BYTES, str(path), "utf-8-sig"))
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
            file_path = Path(expand_path(file_text))
            if not file_path.is_absolute():
                file_path = base / file_path
            if check_files and not file_path.is_file():
                problems.append(f"line {line}: file not found: {file_path}")
                continue
            rows.append((item_id, file_path, labels, split, cell("group") or None))
    return rows, problems


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
             len(distinct_labels(items)), dict(sorted(per_split.items())))
