"""Read-side commands: ``genretag tags`` (per track or per genre)."""

from __future__ import annotations

import argparse
import json

from genretag.cli_settings import add_settings_arguments, settings_from_args
from genretag.settings import ReaderSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tags",
        help="Show stored tags of tracks, or the top tracks of a genre.",
        description="`genretag tags ID...` prints each track's tags; `genretag tags --genre G` "
        "lists the tracks tagged G, most probable first.",
    )
    parser.add_argument("track_ids", nargs="*", metavar="TRACK_ID")
    parser.add_argument("--genre", help="List tracks of this genre instead.")
    parser.add_argument("--min-score", type=float, default=0.0, help="With --genre: lowest score.")
    parser.add_argument("--limit", type=int, default=20, help="With --genre: how many (default 20).")
    parser.add_argument("--json", action="store_true", help="JSON output.")
    add_settings_arguments(parser, ReaderSettings)
    parser.set_defaults(func=run_tags)


def run_tags(args: argparse.Namespace) -> int:
    from genretag.tagstore import TagStore, connect

    settings = settings_from_args(ReaderSettings, args)
    store = TagStore(connect(settings), settings.redis_key_prefix)
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
        raise SystemExit("genretag tags: give TRACK_IDs or --genre")
    found = store.get_many(args.track_ids)
    if args.json:
        print(json.dumps({tid: (rec.model_dump(mode="json") if rec else None)
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
