"""Read-side commands: ``genretag tags``, ``genretag stats`` and ``genretag dlq list|purge|replay``.

Each lists only the settings it uses (Redis; Kafka too for ``dlq replay``). Exit status:
0 done, 1 nothing found (``tags``), 2 usage, 3 Redis or the broker unreachable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from genretag.core.cli_settings import add_settings_arguments, settings_from_args
from genretag.core.errors import GenretagError
from genretag.core.reach import reaching
from genretag.core.settings import ReaderSettings, RedisSettings
from genretag.schemas import TAG_KINDS, ReasonCode

_REASONS = [r.value for r in ReasonCode] + ["unreadable"]
#: Upper bound of --limit: Redis takes a signed 64-bit count, and no terminal wants more.
MAX_LIMIT = 1_000_000


class NothingFound(GenretagError):
    """A lookup found nothing (exit 1, distinct from an unreachable Redis: exit 3)."""

    exit_code = 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (ANSI escapes, newlines) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tags``, ``stats`` and ``dlq`` (with ``list``, ``purge`` and ``replay``)."""
    tags = subparsers.add_parser(
        "tags",
        help="Show stored tags of tracks, or the top tracks of a genre.",
        description="`genretag tags ID...` (or --uri PATH...) prints each track's tags; "
        "`genretag tags --genre G` lists the tracks tagged G, most probable first (--tag T: "
        "the same for a mood, era, instrument or voice tag; --kind K: the labels of a kind). "
        "Exit 0 found, 1 a track has no tags or the genre is unknown, 3 Redis unreachable.",
    )
    tags.add_argument("track_ids", nargs="*", metavar="TRACK_ID")
    tags.add_argument("--uri", action="append", default=[], metavar="PATH",
                      help="Look up the track enqueued from this file path (repeatable).")
    tags.add_argument("--genre", help="List tracks of this genre instead.")
    tags.add_argument("--tag", help="List tracks of this mood/era/instrument/voice/other tag "
                      "(labels a model's manifest does not call genres).")
    tags.add_argument("--kind", choices=TAG_KINDS,
                      help="List the stored labels of this kind with their track counts.")
    tags.add_argument("--min-score", type=_score, default=0.0,
                      help="With --genre/--tag: lowest score.")
    tags.add_argument("--limit", type=_positive, default=20,
                      help=f"With --genre: how many (default 20, at most {MAX_LIMIT}).")
    tags.add_argument("--json", action="store_true", help="JSON output.")
    tags.add_argument("--timeline", action="store_true",
                      help="Show each track's genre timeline (per-window probabilities).")
    tags.add_argument("--plot", type=Path, metavar="FILE.png",
                      help="Draw the track's timeline as a genres × time heat map.")
    add_settings_arguments(tags, RedisSettings)
    tags.set_defaults(func=run_tags)

    stats = subparsers.add_parser(
        "stats", help="Tracks per genre and per model version, dead letters by reason.",
        description="Counts from Redis: tagged tracks, tracks per genre (tagged with it), per "
        "model version (current tags), and dead letters by reason. Genres and versions no "
        "track has any more are left out.",
    )
    stats.add_argument("--json", action="store_true", help="JSON output.")
    add_settings_arguments(stats, RedisSettings)
    stats.set_defaults(func=run_stats)

    dlq = subparsers.add_parser(
        "dlq", help="List, purge or replay dead letters.",
        description="Dead letters stored in Redis (one per track, the latest failure).",
    )
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="List dead letters.",
                                 description="List dead letters, optionally of one reason.")
    listing.add_argument("--reason", choices=_REASONS, help="Only this reason.")
    listing.add_argument("--limit", type=_positive, default=None,
                         help="At most this many (newest first).")
    listing.add_argument("--json", action="store_true", help="JSON output (one array).")
    add_settings_arguments(listing, RedisSettings)
    listing.set_defaults(func=run_dlq_list)

    purge = actions.add_parser(
        "purge", help="Delete dead letters (all, or of one reason).",
        description="Delete the stored dead letters of --reason (all without it). A letter "
        "replaced by a newer failure while purging is kept.",
    )
    purge.add_argument("--reason", choices=_REASONS, help="Only this reason.")
    purge.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")
    add_settings_arguments(purge, RedisSettings)
    purge.set_defaults(func=run_dlq_purge)

    replay = actions.add_parser(
        "replay", help="Re-enqueue dead letters' original TrackRefs onto the tracks topic.",
        description="Send the original TrackRef of each dead letter (of --reason) to the tracks "
        "topic; a letter is removed from Redis only after the broker acknowledged it. Letters "
        "without a TrackRef (not JSON, wrong schema) are reported and kept. Exit 1 if a "
        "message was not acknowledged.",
    )
    replay.add_argument("--reason", choices=_REASONS, help="Only this reason.")
    replay.add_argument("--dry-run", action="store_true",
                        help="Say what would be replayed, send nothing.")
    replay.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_settings_arguments(replay, ReaderSettings)
    replay.set_defaults(func=run_dlq_replay)


def _store(args: argparse.Namespace, cls: type[RedisSettings] = RedisSettings):
    """Settings, the tag reader and the dead-letter store of the command's Redis."""
    from genretag.core.store import DeadLetterStore, KeyLayout, TagReader, connect

    settings = settings_from_args(cls, args)
    client = connect(settings.redis, encoding_errors="backslashreplace")
    keys = KeyLayout(settings.redis.key_prefix)
    return settings, TagReader(client, keys), DeadLetterStore(client, keys)


def run_tags(args: argparse.Namespace) -> int:
    settings, store, _ = _store(args)
    with reaching(redis_url=settings.redis.url):
        return _tags(args, store)


def _tags(args: argparse.Namespace, store) -> int:
    from genretag.producer.ids import path_track_id

    if args.kind:
        counts = store.labels_of_kind(args.kind)
        if args.json:
            print(json.dumps(counts))
        else:
            print(f"{args.kind:<32} tracks")
            for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                print(f"{printable(label):<32} {n}")
        return 0
    if args.genre or args.tag:
        rows = (store.top(args.genre, args.min_score, args.limit) if args.genre
                else store.top(args.tag, args.min_score, args.limit, genre=False))
        if not rows and args.genre and args.genre not in (known := store.genres()):
            other = next((k for k in TAG_KINDS if k != "genre"
                          and args.genre in store.labels_of_kind(k)), None)
            if other:
                raise NothingFound(f"{printable(args.genre)!r} is a {other} tag, not a genre: "
                                   f"`genretag tags --tag {printable(args.genre)}`")
            raise NothingFound(f"unknown genre {args.genre!r}; genres with tracks: "
                               f"{', '.join(map(printable, known)) or '(none yet)'}")
        if args.json:
            print(json.dumps([{"track_id": t, "score": s} for t, s in rows]))
        else:
            print(f"{'track_id':<40} score")
            for tid, score in rows:
                print(f"{printable(tid):<40} {score:.3f}")
        return 0
    ids = list(args.track_ids) + [path_track_id(Path(p).expanduser()) for p in args.uri]
    if not ids:
        print("genretag tags: give TRACK_IDs, --uri PATH, --genre, --tag or --kind",
              file=sys.stderr)
        return 2
    every = store.get_every_model(ids)  # the first model's ("") and a model set's others
    found = {tid: models[""] for tid, models in every.items()}
    if args.timeline or args.plot:
        from genretag.cli.timeline_view import show_timelines

        return show_timelines(found, args.json, args.plot)
    if args.json:
        print(json.dumps({tid: as_json(models) for tid, models in every.items()}, indent=2))
    else:
        print(format_table(every))
    return 0 if all(found.values()) else 1


def as_json(models: dict) -> dict | None:
    """A track's record as JSON; a model set's further models under ``models`` by namespace."""
    def dump(rec):
        return rec.model_dump(mode="json", exclude={"timeline"}) if rec else None

    first = dump(models[""])
    more = {ns: dump(rec) for ns, rec in models.items() if ns}
    if not more:
        return first
    return {**(first or {}), "models": more}


def format_table(every: dict) -> str:
    """A plain table: track, labels, top probabilities, model version; one row per model of a
    model set (the further ones' track column says ``[namespace]``)."""
    lines = [f"{'track_id':<36} {'labels':<24} {'top probabilities':<40} model"]
    for tid, models in every.items():
        for ns, rec in (models.items() if isinstance(models, dict) else [("", models)]):
            name = printable(tid) if not ns else f"  [{printable(ns)}]"
            lines.append(_row(name, rec))
    return "\n".join(lines)


def _row(name: str, rec) -> str:
    if rec is None:
        return f"{name:<36} {'(no tags)':<24}"
    top = sorted(rec.probabilities.items(), key=lambda kv: -kv[1])[:3]
    probs = ", ".join(f"{printable(k)} {v:.2f}" for k, v in top)
    labels = printable(",".join(rec.labels)) or "-"
    return f"{name:<36} {labels:<24} {probs:<40} {printable(rec.model_version)}"


def run_stats(args: argparse.Namespace) -> int:
    settings, store, dead_letters = _store(args)
    with reaching(redis_url=settings.redis.url):
        stats = store.stats(dead_letters.count_by_reason())
    # A genre or version whose last track moved on keeps an empty entry in Redis: hide it.
    stats.genres = {g: n for g, n in stats.genres.items() if n > 0}
    stats.models = {v: n for v, n in stats.models.items() if n > 0}
    if args.json:
        print(json.dumps(stats.as_dict(), indent=2))
        return 0
    lines = [f"tracks tagged: {stats.tracks}", "", f"{'genre':<32} tracks"]
    lines += [f"{printable(g):<32} {n}" for g, n in stats.genres.items()] or ["(none)"]
    lines += ["", f"{'model version':<32} tracks"]
    lines += [f"{printable(v):<32} {n}" for v, n in stats.models.items()] or ["(none)"]
    lines += ["", f"{'dead letters by reason':<32} count"]
    lines += [f"{r:<32} {n}" for r, n in stats.dead_letters_by_reason.items()]
    lines.append(f"{'total':<32} {stats.dead_letters}")
    print("\n".join(lines))
    return 0


def run_dlq_list(args: argparse.Namespace) -> int:
    settings, _, dead_letters = _store(args)
    with reaching(redis_url=settings.redis.url):
        entries = sorted(dead_letters.scan(args.reason), key=_newest_first)[: args.limit]
    if args.json:
        print(json.dumps([
            {"key": e.key, **(e.letter.model_dump(mode="json") if e.letter else
                              {"reason": "unreadable", "raw": e.raw})}
            for e in entries
        ], indent=2))
        return 0
    print(f"{'key':<36} {'reason':<15} {'stage':<9} {'failed_at':<20} detail")
    for e in entries:
        key = printable(e.key)
        if e.letter is None:
            print(f"{key:<36} {'unreadable':<15}")
            continue
        d = e.letter
        when = d.failed_at.strftime("%Y-%m-%d %H:%M:%S")
        detail = printable(" ".join(d.detail.split())[:70])
        print(f"{key:<36} {d.reason.value:<15} {printable(d.stage):<9} {when:<20} {detail}")
    return 0


def _newest_first(entry) -> tuple:
    """Sort key: most recent failure first, unreadable entries last, then by key."""
    if entry.letter is None:
        return (1, 0.0, entry.key)
    return (0, -entry.letter.failed_at.timestamp(), entry.key)


def run_dlq_purge(args: argparse.Namespace) -> int:
    settings, _, dead_letters = _store(args)
    with reaching(redis_url=settings.redis.url):
        entries = list(dead_letters.scan(args.reason))
        if args.dry_run:
            print(f"dry run: {len(entries)} dead letter(s) would be purged; nothing deleted")
            return 0
        purged = sum(dead_letters.remove_if_unchanged(e) for e in entries)
    kept = len(entries) - purged
    print(f"purged {purged} dead letter(s)"
          + (f"; {kept} kept (replaced by a newer failure meanwhile)" if kept else ""))
    return 0


def run_dlq_replay(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from genretag.core.reach import check_kafka
    from genretag.producer.replay import replay_dead_letters

    settings, _, dead_letters = _store(args, ReaderSettings)
    with reaching(redis_url=settings.redis.url, kafka=settings.kafka.bootstrap_servers):
        if not args.dry_run:
            check_kafka(settings.kafka.bootstrap_servers)
        try:
            report = replay_dead_letters(dead_letters, settings, args.reason,
                                         dry_run=args.dry_run)
        except KafkaError as exc:
            print(f"genretag dlq replay: Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    for error in report.errors[:20]:
        print(f"error: {printable(error)}", file=sys.stderr)
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    return 0 if report.ok else 1
