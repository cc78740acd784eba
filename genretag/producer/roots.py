"""Warn before sending tracks the worker will refuse: local paths outside its allowed roots.

The worker dead-letters such a track as ``disallowed_uri``; the producer reads the same setting
(``GENRETAG_ALLOWED_ROOTS``) and says so up front — or, with ``--strict``, refuses the row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from genretag.core.settings import expand_path
from genretag.producer.sources import Source, SourceRow

SETTING = "GENRETAG_ALLOWED_ROOTS"


def local_path(uri: object) -> Path | None:
    """The local file a uri names (plain path or ``file://``), None for remote or non-strings."""
    if not isinstance(uri, str) or not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:
        return None
    return Path(uri)


def outside(path: Path, roots: list[Path]) -> bool:
    """True when ``path`` (symlinks resolved, as the worker does) is under none of ``roots``."""
    if not path.is_absolute():  # the worker refuses relative paths ("~/x" too): so do we
        return True
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError):
        return False  # the worker will report it with its own reason
    return not any(resolved.is_relative_to(root) for root in roots)


@dataclass
class RootCheck:
    """Counts (and with ``strict`` rejects) rows whose file lies outside the allowed roots."""

    roots: list[Path]
    strict: bool = False
    count: int = 0
    first: str | None = None
    _seen: set[str] = field(default_factory=set)

    @classmethod
    def from_setting(cls, roots: Iterable[str], strict: bool = False) -> RootCheck:
        return cls([Path(expand_path(r)).resolve() for r in roots], strict)

    def rows(self, rows: Iterable[SourceRow]) -> Iterator[SourceRow]:
        """``rows`` unchanged, except outside ones become errors when strict; counts them once."""
        for row in rows:
            path = local_path(row.data.get("uri")) if row.error is None else None
            if path is None or not outside(path, self.roots):
                yield row
                continue
            if row.where not in self._seen:  # --strict reads a source twice
                self._seen.add(row.where)
                self.count += 1
                self.first = self.first or str(path)
            yield replace(row, error=self.problem(path)) if self.strict else row

    def wrap(self, source: Iterable[SourceRow]) -> Iterable[SourceRow]:
        """The same source (re-readable when it was) with every read going through the check."""
        if isinstance(source, Source):
            return Source(source.name, lambda: self.rows(source.open()), source.rereadable)
        return self.rows(source)

    def problem(self, path: Path) -> str:
        return (f"{path} is outside the worker's allowed roots "
                f"({', '.join(map(str, self.roots))}): set {SETTING}")

    def warning(self) -> str | None:
        """One line for stderr after the run, or None when every track was inside the roots."""
        if not self.count:
            return None
        return (f"warning: {self.count} track(s) outside the worker's allowed roots "
                f"({', '.join(map(str, self.roots))}), e.g. {self.first}; the worker will "
                f"dead-letter them as disallowed_uri unless it runs with {SETTING} including "
                "their folder (--strict refuses them here)")
