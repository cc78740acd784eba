"""``genretag produce``: enqueue a catalog ingest (directory, JSONL file, or stdin)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genretag.cli_settings import add_settings_arguments, settings_from_args
from genretag.settings import ProducerSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="Enqueue tracks to tag (directory of audio, JSONL, or '-' for stdin).",
        description="Validate each track reference and send it to the tracks topic, keyed by "
        "track id (acks=all). A directory is scanned recursively for audio files; a .jsonl file "
        "holds TrackRef-shaped objects; '-' reads JSONL or paths from stdin. Exits non-zero if "
        "any message was not acknowledged.",
    )
    parser.add_argument("source", help="Directory, .jsonl file, or '-' for stdin.")
    parser.add_argument("--dry-run", action="store_true", help="Validate and count, send nothing.")
    parser.add_argument("--strict", action="store_true", help="Abort before sending if any row is bad.")
    parser.add_argument("--limit", type=int, default=None, help="Send at most N tracks.")
    parser.add_argument("--max-rate", type=float, default=None, help="Messages per second cap.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    add_settings_arguments(parser, ProducerSettings)
    parser.set_defaults(func=run_cli)


def rows_for(source: str, settings: ProducerSettings):
    from producer.sources import directory_source, jsonl_file_source, stdin_source

    if source == "-":
        return stdin_source()
    path = Path(source)
    if path.is_dir():
        return directory_source(path, settings.producer_audio_extensions)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return jsonl_file_source(path)
    raise SystemExit(f"genretag produce: {source}: not a directory, .jsonl file, or '-'")


def run_cli(args: argparse.Namespace) -> int:
    from producer.publish import publish

    settings = settings_from_args(ProducerSettings, args)
    report = publish(
        rows_for(args.source, settings), settings, dry_run=args.dry_run, strict=args.strict,
        limit=args.limit, max_rate=args.max_rate, progress=not args.no_progress,
    )
    for error in report.errors[:20]:
        print(f"error: {error}", file=sys.stderr)
    print(json.dumps(report.as_dict()))
    if report.failed or (args.strict and report.errors):
        return 1
    return 0
