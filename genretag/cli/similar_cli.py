"""``genretag similar`` ("more like this") and ``genretag index sync|rebuild|status``.

The lookup of a stored track needs Redis and the index only (no torch); a FILE is tagged and
embedded on the fly by the worker's own path (``genretag tag``), then searched. Exit status:
0 found, 1 nothing found (the track has no stored vector), 2 usage, 3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from genretag.cli.read_cli import NothingFound, limit_argument, printable
from genretag.core.cli_settings import add_settings_arguments, settings_from_args
from genretag.core.errors import UsageError
from genretag.core.reach import reaching
from genretag.core.settings import SimilaritySettings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``similar`` and ``index`` (``sync``, ``rebuild``, ``status``)."""
    similar = subparsers.add_parser(
        "similar", help="Tracks that sound like a stored track or a file (nearest embeddings).",
        description="`genretag similar TRACK_ID` lists the stored tracks nearest to that track's "
        "stored embedding (cosine), itself left out; --uri PATH names the track enqueued from "
        "that file; a FILE that exists is tagged and embedded now with --model (like `genretag "
        "tag`) and searched among the stored tracks. Needs a schema-2 model and "
        "GENRETAG_SINKS=tags,embeddings on the workers. The embedded index is brought up to "
        "date first; a Milvus server is synced by `genretag index sync --follow`. Exit 0 found, "
        "1 the track has no stored embedding, 3 Redis unreachable.")
    similar.add_argument("target", nargs="?", metavar="TRACK_ID|FILE")
    similar.add_argument("--uri", metavar="PATH", help="The track enqueued from this path.")
    similar.add_argument("--limit", type=limit_argument, default=10, help="How many (default 10).")
    similar.add_argument("--genre", help="Only tracks of this genre (a label or primary genre).")
    similar.add_argument("--model", type=Path, help="With a FILE: the artifact that embeds it "
                         "(default GENRETAG_MODEL_PATH or models/demo.pt).")
    similar.add_argument("--no-sync", action="store_true",
                         help="Search the index as it is (do not catch up with the store first).")
    similar.add_argument("--json", action="store_true", help="JSON output.")
    add_settings_arguments(similar, SimilaritySettings)
    similar.set_defaults(func=run_similar)

    index = subparsers.add_parser(
        "index", help="Keep the similarity index in step with the stored embeddings.",
        description="The vector index is derived from the embeddings in the tag store (the "
        "source of truth): `sync` adds what was written since its mark, `rebuild` drops it "
        "and fills it again, `status` compares the two.")
    actions = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    sync = actions.add_parser("sync", help="Upsert the embeddings written since the last sync.",
                              description="Upsert every embedding written since the index's "
                              "mark; --follow keeps doing so (the distributed deployment's "
                              "index job) until SIGTERM.")
    sync.add_argument("--follow", action="store_true", help="Keep syncing until stopped.")
    sync.add_argument("--interval", type=float, default=2.0,
                      help="With --follow: seconds between rounds (default 2).")
    rebuild = actions.add_parser("rebuild", help="Drop the index and rebuild it from the store.",
                                 description="Drop every collection of the index and upsert "
                                 "every stored embedding again.")
    status = actions.add_parser("status", help="The index's mark, sizes and lag behind the store.",
                                description="Counts per embedding space, the index's mark and "
                                "how many stored writes it has not seen yet.")
    for parser, func in ((sync, run_index_sync), (rebuild, run_index_rebuild),
                         (status, run_index_status)):
        parser.add_argument("--json", action="store_true", help="JSON output.")
        add_settings_arguments(parser, SimilaritySettings)
        parser.set_defaults(func=func)


def _search(args: argparse.Namespace):
    from genretag.core.similarity import SimilaritySearch

    settings = settings_from_args(SimilaritySettings, args)
    return settings, SimilaritySearch(settings.redis, settings.index)


def run_similar(args: argparse.Namespace) -> int:
    from genretag.producer.ids import path_track_id

    if bool(args.target) == bool(args.uri):
        raise UsageError("give one TRACK_ID, FILE or --uri PATH")
    file = Path(args.target) if args.target and Path(args.target).is_file() else None
    settings, search = _search(args)
    try:
        with reaching(redis_url=settings.redis.url):
            sync = False if args.no_sync else None
            if file is not None:
                vector, space = embed_file(file, args.model)
                hits = search.similar_to_vector(vector, space, args.limit, args.genre,
                                                exclude=[path_track_id(file)], sync=sync)
                query = str(file)
            else:
                query = args.target or path_track_id(Path(args.uri).expanduser())
                hits = search.similar_to_track(query, args.limit, args.genre, sync=sync)
    finally:
        search.close()
    if args.json:
        print(json.dumps({"query": query, "neighbours": [
            {"track_id": h.track_id, "similarity": round(h.similarity, 6),
             "genres": list(h.genres), "model_version": h.model_version} for h in hits]},
            indent=2))
    else:
        print(f"{'track_id':<40} {'similarity':>10}  genres")
        for h in hits:
            print(f"{printable(h.track_id):<40} {h.similarity:>10.4f}  "
                  f"{printable(','.join(h.genres)) or '-'}")
    if not hits:
        raise NothingFound(f"no similar track found for {printable(query)}"
                           + (f" of genre {printable(args.genre)}" if args.genre else ""))
    return 0


def embed_file(path: Path, model: Path | None):
    """The file's track vector and embedding space, by the worker's own path."""
    from genretag.core.settings import load_settings
    from genretag.producer.ids import path_track_id
    from genretag.worker.infer import Tagger
    from genretag.worker.oneshot import tag_files
    from genretag.worker.settings import WorkerSettings

    settings = load_settings(WorkerSettings, model_path=model,
                             allowed_roots=[str(path.resolve().parent)], decode_workers=1)
    if not settings.model.path.is_file():
        raise UsageError(f"model not found: {settings.model.path} (give --model PATH)")
    tagger = Tagger.load(settings.model, calibrate=False)
    if tagger.manifest.embedding is None:
        raise UsageError(f"{settings.model.path} has no embedding output (artifact schema 1): "
                         "pull or train it again")
    [outcome] = tag_files([(path_track_id(path), path)], settings, tagger)
    if outcome.embedding is None:
        reason = outcome.dead.reason.value if outcome.dead else "no embedding"
        detail = outcome.dead.detail if outcome.dead else ""
        raise UsageError(f"{path}: not embedded: {reason}: {detail}")
    return outcome.embedding, tagger.manifest.embedding.space


def run_index_sync(args: argparse.Namespace) -> int:
    settings, search = _search(args)
    stop = threading.Event()
    if args.follow:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with reaching(redis_url=settings.redis.url):
            while True:
                report = search.sync()
                if report.upserted or not args.follow:
                    print(json.dumps(vars(report)) if args.json else report.summary(),
                          flush=True)
                if not args.follow or stop.wait(args.interval):
                    return 0
    except KeyboardInterrupt:
        return 0
    finally:
        search.close()


def run_index_rebuild(args: argparse.Namespace) -> int:
    settings, search = _search(args)
    try:
        with reaching(redis_url=settings.redis.url):
            report = search.syncer.rebuild()
    finally:
        search.close()
    print(json.dumps(vars(report)) if args.json else report.summary())
    return 0


def run_index_status(args: argparse.Namespace) -> int:
    settings, search = _search(args)
    try:
        with reaching(redis_url=settings.redis.url):
            mark, last = search.index.mark(), search.vectors.last_seq()
            counts = {name: search.index.count(name) for name in search.index.spaces()}
            stored = search.vectors.count()
            behind = len(search.vectors.changed_since(mark, limit=1_000_000))
    finally:
        search.close()
    status = {"index_uri": settings.index.uri, "mark": mark, "store_seq": last,
              "stored_vectors": stored, "writes_not_indexed": behind, "collections": counts}
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"index {settings.index.uri}: mark {mark} of store sequence {last}; "
              f"{behind} track(s) written since; {stored} stored vector(s)")
        for name, n in counts.items():
            print(f"  {name:<60} {n}")
    return 0
