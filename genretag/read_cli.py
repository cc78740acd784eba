"""Read-side commands: ``genretag tags``, ``genretag stats`` and ``genretag dlq list|replay``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli_settings import add_settings_arguments, settings_from_args
from core.settings import ReaderSettings
from schemas import ReasonCode

_REASONS = [r.value for r in ReasonCode] + ["unreadable"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tags``, ``stats`` and ``dlq`` (with ``list`` and ``replay``)."""
    tags = subparsers.add_parser(
        "tags",
        help="Show stored tags of tracks, or the top tracks of a genre.",
        description="`genretag tags ID...` prints each track's tags (exit 1 if one has none); "
        "`genretag tags --genre G` lists the tracks tagged G, most probable first.",
    )
    tags.add_argument("track_ids", nargs="*", metavar="TRACK_ID")
    tags.add_argument("--genre", help="List tracks of this genre instead.")
    tags.add_argument("--min-score", type=float, default=0.0, help="With --genre: lowest score.")
    tags.add_argument("--limit", type=_positive, default=20,
                      help="With --genre: how many (default 20).")
    tags.add_argument("--json", action="store_true", help="JSON output.")
    tags.add_argument("--timeline", action="store_true",
                      help="Show each track's genre timeline (per-window probabilities).")
    tags.add_argument("--plot", type=Path, metavar="FILE.png",
                      help="Draw the track's timeline as a genres × time heat map.")
    add_settings_arguments(tags, ReaderSettings)
    tags.set_defaults(func=run_tags)

    stats = subparsers.add_parser(
        "stats", help="Tracks per genre and per model version, dead letters by reason.",
        description="Counts from Redis: tagged tracks, tracks per genre (tagged with it), per "
        "model version (current tags), and dead letters by reason.",
    )
    stats.add_argument("--json", action="store_true", help="JSON output.")
    add_settings_arguments(stats, ReaderSettings)
    stats.set_defaults(func=run_stats)

    dlq = subparsers.add_parser(
        "dlq", help="List or replay dead letters.",
        description="Dead letters stored in Redis (one per track, the latest failure).",
    )
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="List dead letters.",
                                 description="List dead letters, optionally of one reason.")
    listing.add_argument("--reason", choices=_REASONS, help="Only this reason.")
    listing.add_argument("--limit", type=_positive, default=None,
                         help="At most this many (newest first).")
    listing.add_argument("--json", action="store_true", help="JSON output (one array).")
    add_settings_arguments(listing, ReaderSettings)
    listing.set_defaults(func=run_dlq_list)

    replay = actions.add_parser(
        "replay", help="Re-enqueue dead letters' original TrackRefs onto the tracks topic.",
        description="Send the original TrackRef of each dead letter (of --reason) to the tracks "
        "topic; a letter is removed from Redis only after the broker acknowledged it. Letters "
        "without a TrackRef (not JSON, wrong schema) are reported and kept. Exit 1 if a "
        "message was not acknowledged.",
    )
    replay.add_argument("--reason", choices=_REASONS, help="Only this reason.")
    replay.add_argument("--dry-run", action="store_true", help="Report, send nothing.")
    replay.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_settings_arguments(replay, ReaderSettings)
    replay.set_defaults(func=run_dlq_replay)


def _store(args: argparse.Namespace):
    from core.tagstore import TagStore, connect

    settings = settings_from_args(ReaderSettings, args)
    return settings, TagStore(connect(settings), settings.redis_key_prefix)


def run_tags(args: argparse.Namespace) -> int:
    _, store = _store(args)
    if args.genre:
        rows = store.top(args.genre, args.min_score, args.limit)
        if args.json:
            print(json.dumps([{"track_id": t, "score": s} for t, s in rows]))
        else:
            print(f"{'track_id':<40} score")
            for tid, score in rows:
                print(f"{tid:<40} {score:.3f}")
        return 0
    if not args.track_ids:
        print("genretag tags: give TRACK_IDs or --genre", file=sys.stderr)
        return 2
    found = store.get_many(args.track_ids)
    if args.timeline or args.plot:
        from genretag.timeline_view import show_timelines

        return show_timelines(found, args.json, args.plot)
    if args.json:
        print(json.dumps({tid: (rec.model_dump(mode="json", exclude={"timeline"}) if rec else None)
                          for tid, rec in found.items()}, indent=2))
    else:
        print(format_table(found))
    return 0 if all(found.values()) else 1


def format_table(found: dict) -> str:
    """A plain table: track, labels, top probabilities, model version."""
    lines = [f"{'track_id':<36} {'labels':<24} {'top probabilities':<40} model"]
    for tid, rec in found.items():
        if rec is None:
            lines.append(f"{tid:<36} {'(no tags)':<24}")
            continue
        top = sorted(rec.probabilities.items(), key=lambda kv: -kv[1])[:3]
        probs = ", ".join(f"{k} {v:.2f}" for k, v in top)
        lines.append(f"{tid:<36} {','.join(rec.labels) or '-':<24} {probs:<40} {rec.model_version}")
    return "\n".join(lines)


def run_stats(args: argparse.Namespace) -> int:
    _, store = _store(args)
    stats = store.stats()
    if args.json:
        print(json.dumps(stats.as_dict(), indent=2))
        return 0
    lines = [f"tracks tagged: {stats.tracks}", "", f"{'genre':<32} tracks"]
    lines += [f"{g:<32} {n}" for g, n in stats.genres.items()] or ["(none)"]
    lines += ["", f"{'model version':<32} tracks"]
    lines += [f"{v:<32} {n}" for v, n in stats.models.items()] or ["(none)"]
    lines += ["", f"{'dead letters by reason':<32} count"]
    lines += [f"{r:<32} {n}" for r, n in stats.dead_letters_by_reason.items()]
    lines.append(f"{'total':<32} {stats.dead_letters}")
    print("\n".join(lines))
    return 0


def run_dlq_list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    entries = sorted(store.scan_dead_letters(args.reason), key=_newest_first)[: args.limit]
    if args.json:
        print(json.dumps([
            {"key": e.key, **(e.letter.model_dump(mode="json") if e.letter else
                              {"reason": "unreadable", "raw": e.raw})}
            for e in entries
        ], indent=2))
        return 0
    print(f"{'key':<36} {'reason':<15} {'stage':<9} {'failed_at':<20} detail")
    for e in entries:
        if e.letter is None:
            print(f"{e.key:<36} {'unreadable':<15}")
            continue
        d = e.letter
        when = d.failed_at.strftime("%Y-%m-%d %H:%M:%S")
        detail = " ".join(d.detail.split())[:70]
        print(f"{e.key:<36} {d.reason.value:<15} {d.stage:<9} {when:<20} {detail}")
    return 0


def _newest_first(entry) -> tuple:
    """Sort key: most recent failure first, unreadable entries last, then by key."""
    if entry.letter is None:
        return (1, 0.0, entry.key)
    return (0, -entry.letter.failed_at.timestamp(), entry.key)


def run_dlq_replay(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from producer.replay import replay_dead_letters

    settings, store = _store(args)
    try:
        report = replay_dead_letters(store, settings, args.reason, dry_run=args.dry_run)
    except KafkaError as exc:
        print(f"genretag dlq replay: Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for error in report.errors[:20]:
        print(f"error: {error}", file=sys.stderr)
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    return 0 if report.ok else 1
