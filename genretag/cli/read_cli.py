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

from genretag.cli.display import printable, shorten_middle
from genretag.core.cli_settings import add_settings_arguments, settings_from_args
from genretag.core.errors import GenretagError, UsageError
from genretag.core.exits import Exit
from genretag.core.reach import reaching
from genretag.core.settings import ReaderSettings, RedisSettings
from genretag.schemas import TAG_KINDS, ReasonCode

_REASONS = [r.value for r in ReasonCode] + ["unreadable"]
#: Upper bound of --limit: Redis takes a signed 64-bit count, and no terminal wants more.
MAX_LIMIT = 1_000_000


class NothingFound(GenretagError):
    """A lookup found nothing (exit 1, distinct from an unreachable Redis: exit 3)."""

    exit_code = Exit.FAILED


def limit_argument(text: str) -> int:
    """argparse type of a ``--limit``: a whole number from 1 to :data:`MAX_LIMIT`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_LIMIT * 1000:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_LIMIT * 1000}, got {value}")
    return value


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tags``, ``stats`` and ``dlq`` (with ``list``, ``purge`` and ``replay``)."""
    tags = subparsers.add_parser(
        "tags",
        help="Show stored tags of tracks, or the top tracks of a genre.",
        description="`genretag tags ID...` (or --uri PATH...) prints each track's tags; "
        "`genretag tags --genre G` lists the tracks tagged G, most probable first (--tag T: "
        "the same for a mood, era, instrument or voice tag; --kind K: the labels of a kind). "
        "Exit 0 found; 1 nothing found (a track without tags, or an empty --genre, --tag or "
        "--kind answer: stderr says what exists instead; --json still prints valid JSON); "
        "3 Redis unreachable.",
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
    tags.add_argument("--limit", type=limit_argument, default=20,
                      help=f"With --genre/--tag: how many (default 20, at most {MAX_LIMIT}).")
    tags.add_argument("--offset", type=_offset, default=0,
                      help="With --genre/--tag: skip this many of the best first (pagination; "
                      "default 0).")
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
    listing.add_argument("--limit", type=limit_argument, default=None,
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


def _client(args: argparse.Namespace, cls: type[RedisSettings] = RedisSettings):
    """The command's settings and a :class:`~genretag.client.TagClient` of its Redis."""
    from genretag.client import TagClient

    settings = settings_from_args(cls, args)
    return settings, TagClient.from_section(settings.redis)


def run_tags(args: argparse.Namespace) -> int:
    settings, client = _client(args)
    with client, reaching(redis_url=settings.redis.url):
        return _tags(args, client)


def _tags(args: argparse.Namespace, client) -> int:
    if args.kind:
        counts = client.labels(args.kind)
        if not counts:
            _nothing(args, {}, f"no track is tagged with any {args.kind} label yet (a label must "
                     f"reach its threshold); {_kinds_with_tracks(client)}")
        if args.json:
            print(json.dumps(counts))
        else:
            print(f"{args.kind:<32} tracks")
            for label, n in counts.items():
                print(f"{printable(label):<32} {n}")
        return 0
    if args.genre or args.tag:
        label, as_genre = (args.genre, True) if args.genre else (args.tag, False)
        rows = client.tracks(label, kind="genre" if as_genre else "other",
                             min_score=args.min_score, limit=args.limit,
                             offset=args.offset).items
        if not rows:
            _nothing(args, [], _why_no_tracks(client, label, as_genre, args.min_score))
        if args.json:
            print(json.dumps([{"track_id": r.track_id, "score": r.score} for r in rows]))
        else:
            print(f"{'track_id':<40} score")
            for row in rows:
                print(f"{shorten_middle(row.track_id, 40):<40} {row.score:.3f}")
        return 0
    ids = list(args.track_ids) + [client.track_id_of(p) for p in args.uri]
    if not ids:
        raise UsageError("give TRACK_IDs, --uri PATH, --genre, --tag or --kind")
    every = client.tags_every_model(ids)  # the first model's ("") and a model set's others
    found = {tid: models[""] for tid, models in every.items()}
    if args.timeline or args.plot:
        from genretag.cli.timeline_view import show_timelines

        return show_timelines(found, args.json, args.plot)
    if args.json:
        print(json.dumps({tid: as_json(models) for tid, models in every.items()}, indent=2))
    else:
        print(format_every_model(every))
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


def format_every_model(every: dict) -> str:
    """The track table with one row per model of a model set: the first model's under the
    track id, each further model's as ``[namespace]`` below it."""
    lines = [table_header()]
    for tid, models in every.items():
        for ns, rec in models.items():
            lines.append(table_row(tid if not ns else f"  [{ns}]", rec))
    return "\n".join(lines)


def _nothing(args: argparse.Namespace, empty: object, why: str) -> None:
    """An empty answer: with --json the empty JSON value still goes to stdout (a pipe always
    reads valid JSON); then exit 1 with ``why`` (what exists instead) on stderr."""
    if args.json:
        print(json.dumps(empty))
    raise NothingFound(why)


def _kinds_with_tracks(client) -> str:
    """Which kinds have tagged tracks, for an empty answer's message."""
    have = {k: len(client.labels(k)) for k in TAG_KINDS}
    listed = ", ".join(f"{k} ({n} label{'s' * (n != 1)})" for k, n in have.items() if n)
    return f"kinds with tagged tracks: {listed or '(none yet)'}"


def _why_no_tracks(client, label: str, as_genre: bool, min_score: float) -> str:
    """Why ``--genre``/``--tag LABEL`` found nothing: another kind's label, a score floor above
    every track's, or a label no track has (with the labels that do)."""
    shown = printable(label)
    kinds = [k for k in TAG_KINDS if label in client.labels(k)]
    if as_genre and kinds and "genre" not in kinds:
        return f"{shown!r} is a {kinds[0]} tag, not a genre: `genretag tags --tag {shown}`"
    if not as_genre and kinds == ["genre"]:
        return f"{shown!r} is a genre: `genretag tags --genre {shown}`"
    if kinds:
        return f"no track has {shown!r} with a score of at least {min_score:g}"
    if as_genre:
        known = client.genres()
        return (f"unknown genre {shown!r}; genres with tracks: "
                f"{', '.join(map(printable, known)) or '(none yet)'}")
    others = sorted({t for k in TAG_KINDS if k != "genre" for t in client.labels(k)})
    return (f"unknown tag {shown!r}; tags with tracks: "
            f"{', '.join(map(printable, others)) or '(none yet)'}")


def _top_probabilities(probabilities: dict[str, float], width: int, most: int = 3) -> str:
    """The most probable labels with their probabilities, as many (up to ``most``) as fit."""
    shown = ""
    for label, p in sorted(probabilities.items(), key=lambda kv: -kv[1])[:most]:
        item = f"{shorten_middle(label, width - 5)} {p:.2f}"
        joined = f"{shown}, {item}" if shown else item
        if len(joined) > width:
            break
        shown = joined
    return shown


def format_table(found: dict, paths: dict[str, str] | None = None) -> str:
    """A plain table: track (id, or the file's path), genre (the best genre-kind tag, whatever
    the thresholds), labels (over their thresholds), top probabilities, model version."""
    lines = [table_header(paths is not None)]
    for tid, rec in found.items():
        lines.append(table_row(tid, rec, (paths or {}).get(tid)))
    return "\n".join(lines)


#: Widths of the track table's columns (long names are shortened in the middle).
TRACK_WIDTH, GENRE_WIDTH, LABELS_WIDTH, TOP_WIDTH = 36, 16, 24, 40


def table_header(by_path: bool = False) -> str:
    """The track table's header line."""
    first = "file" if by_path else "track_id"
    return (f"{first:<{TRACK_WIDTH}} {'genre':<{GENRE_WIDTH}} {'labels':<{LABELS_WIDTH}} "
            f"{'top probabilities':<{TOP_WIDTH}} model")


def table_row(track_id: str, rec, path: str | None = None) -> str:
    """One track's row (``path`` shown instead of the id when given; both shortened in the
    middle so the columns stay aligned)."""
    name = shorten_middle(path if path is not None else track_id, TRACK_WIDTH)
    if rec is None:
        return f"{name:<{TRACK_WIDTH}} {'(no tags)'}"
    probs = _top_probabilities(rec.probabilities, TOP_WIDTH)
    labels = shorten_middle(",".join(rec.labels), LABELS_WIDTH) or "-"
    genre = shorten_middle(rec.primary_genre or "-", GENRE_WIDTH)
    return (f"{name:<{TRACK_WIDTH}} {genre:<{GENRE_WIDTH}} {labels:<{LABELS_WIDTH}} "
            f"{probs:<{TOP_WIDTH}} {printable(rec.model_version)}")


def run_stats(args: argparse.Namespace) -> int:
    settings, client = _client(args)
    with client, reaching(redis_url=settings.redis.url):
        stats = client.stats()
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
    settings, client = _client(args)
    with client, reaching(redis_url=settings.redis.url):
        entries = client.dead_letters(args.reason, args.limit)
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


def run_dlq_purge(args: argparse.Namespace) -> int:
    settings, client = _client(args)
    with client, reaching(redis_url=settings.redis.url):
        result = client.purge_dead_letters(args.reason, dry_run=args.dry_run)
    if result.dry_run:
        print(f"dry run: {result.found} dead letter(s) would be purged; nothing deleted")
        return 0
    print(f"purged {result.purged} dead letter(s)"
          + (f"; {result.kept} kept (replaced by a newer failure meanwhile)" if result.kept
             else ""))
    return 0


def run_dlq_replay(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from genretag.core.reach import check_kafka
    from genretag.producer.replay import replay_dead_letters

    settings, client = _client(args, ReaderSettings)
    with client, reaching(redis_url=settings.redis.url, kafka=settings.kafka.bootstrap_servers):
        if not args.dry_run:
            check_kafka(settings.kafka.bootstrap_servers)
        try:
            report = replay_dead_letters(client.dead_letter_store, settings, args.reason,
                                         dry_run=args.dry_run)
        except KafkaError as exc:
            print(f"genretag dlq replay: Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    for error in report.errors[:20]:
        print(f"error: {printable(error)}", file=sys.stderr)
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    return 0 if report.ok else 1
