"""Backfill: re-enqueue tracks whose stored tags are missing or come from another model version.

Two ways, both reading Redis incrementally (SSCAN of the model sets, pipelined HMGETs in
chunks, never KEYS): with a catalog source, ``stale_chooser`` keeps only the source's tracks
that have no tags or stale ones; without one, ``stale_rows`` lists the stale tagged tracks
themselves, re-using the uri stored in their hash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from genretag.core.logs import get_logger
from genretag.core.store import TagReader
from genretag.producer.publish import Chooser
from genretag.producer.sources import SourceRow
from genretag.schemas import TrackRef

log = get_logger(__name__)

#: Skip reasons counted in the produce summary.
UP_TO_DATE = "up_to_date"
NO_URI = "no_uri"

_CHUNK = 500


def stale_chooser(store: TagReader, model_version: str) -> Chooser:
    """Keep a catalog track that has no tags, or tags not from ``model_version``."""

    def choose(refs: Sequence[TrackRef]) -> list[str | None]:
        stored = store.stored_versions([r.track_id for r in refs])
        return [UP_TO_DATE if stored[r.track_id] == model_version else None for r in refs]

    return choose


def stale_rows(store: TagReader, model_version: str) -> Iterator[SourceRow]:
    """Every tagged track whose tags are not from ``model_version``, as a row to re-enqueue.

    Tracks are found through the model sets (one SSCAN per other version); a track whose hash
    has no uri is yielded as a skipped row (``no_uri``): only a catalog source can enqueue it.
    """
    for version in store.models():
        if version == model_version:
            continue
        chunk: list[str] = []
        for track_id in store.scan_model_track_ids(version):
            chunk.append(track_id)
            if len(chunk) >= _CHUNK:
                yield from _rows_for(store, chunk, model_version)
                chunk = []
        yield from _rows_for(store, chunk, model_version)


def _rows_for(store: TagReader, track_ids: list[str], model_version: str) -> Iterator[SourceRow]:
    for track_id, fields in store.track_fields(track_ids, ("model_version", "uri")).items():
        if fields is None or fields["model_version"] == model_version:
            continue  # re-tagged or deleted since the set was scanned
        origin = f"redis:{store.keys.track(track_id)}"
        if not fields["uri"]:
            yield SourceRow({"track_id": track_id}, origin, skip=NO_URI)
            continue
        yield SourceRow(
            {"track_id": track_id, "uri": fields["uri"],
             "metadata": {"source": "backfill", "previous_model_version": fields["model_version"]}},
            origin,
        )


def version_of_model(path) -> str:
    """The model version recorded in a model file's embedded manifest."""
    from genretag.core.artifact import read_manifest

    return read_manifest(path).version


def check_version(settings, version: str, models_dir: str = "models") -> None:
    """Refuse a backfill to ``version`` when no tagged track and no model file has it.

    A typo would otherwise re-enqueue the whole catalog. ``--force`` skips this check.
    """
    from pathlib import Path

    from genretag.core.artifact import ArtifactError
    from genretag.core.errors import UsageError
    from genretag.core.store import KeyLayout, connect

    store = TagReader(connect(settings.redis), KeyLayout(settings.redis.key_prefix))
    stored = store.models()
    if version in stored:
        return
    files = sorted(Path(models_dir).glob("*.pt")) if Path(models_dir).is_dir() else []
    for path in files:
        try:
            if version_of_model(path) == version:
                return
        except ArtifactError:
            continue
    known = ", ".join(stored) or "none"
    raise UsageError(
        f"no tagged track and no model file under {models_dir}/ has version {version!r} "
        f"(versions in Redis: {known}); give --model PATH, or --force to backfill anyway"
    )
