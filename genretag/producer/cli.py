"""``genretag produce``: enqueue a catalog (directory, FMA tracks.csv, JSONL, stdin) or backfill."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genretag.core.cli_settings import add_settings_arguments, settings_from_args
from genretag.core.errors import UsageError
from genretag.core.fma.layout import SPLITS, SUBSETS
from genretag.producer.settings import ProducerSettings

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="Enqueue tracks to tag (directory, FMA tracks.csv, JSONL, '-' for stdin, backfill).",
        description="Validate each track reference and send it to the tracks topic, keyed by "
        "track id (acks=all). SOURCE is a directory (scanned recursively for audio files), an "
        "FMA tracks.csv (filtered by --subset/--split, audio under --audio-dir), one audio "
        "file, a .jsonl file of TrackRef-shaped objects, or '-' (JSONL or one path per line on "
        "stdin). Bad rows are reported with file and line and skipped (--strict: nothing is "
        "sent). Files outside the worker's allowed roots (GENRETAG_ALLOWED_ROOTS) are warned "
        "about (--strict: refused). --backfill --model-version V (or --model PATH) re-enqueues "
        "only tracks whose tags are missing or not from V: SOURCE's tracks, or without SOURCE "
        "the stale tagged tracks (by their stored uri). Exit status: 0 all sent, 1 some message "
        "not acknowledged or --strict found bad rows, 2 usage error, 3 broker or Redis "
        "unreachable.",
    )
    parser.add_argument("source", nargs="?",
                        help="Directory, audio file, tracks.csv, .jsonl file, or '-'.")
    parser.add_argument("--dry-run", action="store_true", help="Validate and count, send nothing.")
    parser.add_argument("--strict", action="store_true",
                        help="Validate every row first; send nothing if any row is bad.")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="Send at most N tracks.")
    parser.add_argument("--max-rate", type=float, default=None, metavar="PER_S",
                        help="Send at most this many messages per second.")
    parser.add_argument("--no-progress", action="store_true",
                        help="No progress bar (there is none anyway when stderr is not a terminal).")
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    parser.add_argument("--include-hidden", action="store_true",
                        help="A DIRECTORY source: also send hidden files and enter hidden "
                        "folders (skipped by default, counted as 'hidden': dot files, macOS "
                        "._* AppleDouble metadata).")
    fma = parser.add_argument_group("FMA tracks.csv source")
    fma.add_argument("--audio-dir", type=Path, default=None, metavar="DIR",
                     help="Folder with FMA's 000/000002.mp3 layout (default: fma_<subset> next "
                     "to the fma_metadata folder holding tracks.csv).")
    fma.add_argument("--subset", choices=SUBSETS, default="small",
                     help="FMA subset, inclusive: medium includes small (default: small).")
    fma.add_argument("--split", choices=SPLITS, default=None, help="Only this FMA split.")
    backfill = parser.add_argument_group("backfill")
    backfill.add_argument("--backfill", action="store_true",
                          help="Only tracks with no tags or tags from another model version.")
    backfill.add_argument("--model-version", default=None, metavar="V",
                          help="With --backfill: the current model version.")
    backfill.add_argument("--model", type=Path, default=None, metavar="PATH",
                          help="With --backfill: read the current version from this model file.")
    backfill.add_argument("--force", action="store_true",
                          help="With --backfill: accept a version no tagged track and no model "
                          "file under models/ has.")
    add_settings_arguments(parser, ProducerSettings)
    parser.set_defaults(func=run_cli)


def catalog_source(source: str, settings: ProducerSettings, args: argparse.Namespace):
    """The ``Source`` for a SOURCE argument, chosen by what it is (folder, .csv, .jsonl, '-')."""
    from genretag.producer.sources import (
        LINE_FACTOR, Source, directory_source, file_source, jsonl_file_source,
        normalise_extensions, stdin_source,
    )

    max_line = LINE_FACTOR * settings.kafka.max_message_bytes
    if source == "-":
        return Source("<stdin>", lambda: stdin_source(max_line_bytes=max_line), rereadable=False)
    path = Path(source)
    if path.is_dir():
        exts = settings.producer.audio_extensions
        hidden = args.include_hidden
        return Source(str(path), lambda: directory_source(path, exts, hidden))
    if path.is_file() and path.suffix.lower() == ".csv":
        return _fma_source(path, args)
    if path.is_file() and path.suffix.lower() in _JSONL_SUFFIXES:
        return Source(str(path), lambda: jsonl_file_source(path, max_line))
    if path.is_file() and path.suffix.lower() in normalise_extensions(
        settings.producer.audio_extensions
    ):
        return Source(str(path), lambda: file_source(path))
    if not path.exists():
        raise UsageError(f"{source}: no such file or directory")
    raise UsageError(f"{source}: not a directory, audio file, FMA tracks.csv, .jsonl file, "
                     "or '-'")


def _fma_source(path: Path, args: argparse.Namespace):
    from genretag.producer.fma_source import check_header, default_audio_dir, fma_source
    from genretag.producer.sources import Source
    from genretag.core.fma import FmaFormatError

    try:
        check_header(path)
    except FmaFormatError as exc:
        raise UsageError(str(exc)) from None

    audio_dir = args.audio_dir or default_audio_dir(path, args.subset)
    if audio_dir is None:
        raise UsageError(f"{path}: give --audio-dir (the folder holding 000/000002.mp3 ...)")
    if not audio_dir.is_dir():
        raise UsageError(f"--audio-dir {audio_dir}: not a directory")
    return Source(str(path), lambda: fma_source(path, audio_dir, args.subset, args.split))


def run_cli(args: argparse.Namespace) -> int:
    """Run ``genretag produce``; returns the exit status."""
    from kafka.errors import KafkaError
    from redis.exceptions import RedisError

    from genretag.core.descriptors import BASE_DESCRIPTORS, ensure_open_files
    from genretag.core.reach import check_kafka, reaching
    from genretag.producer.publish import publish
    from genretag.producer.roots import RootCheck

    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    if args.max_rate is not None and args.max_rate <= 0:
        raise UsageError("--max-rate must be > 0")
    if args.model is not None and args.model_version:
        raise UsageError("give --model-version V or --model PATH, not both")
    if args.backfill != bool(args.model_version or args.model):
        raise UsageError("--backfill and --model-version (or --model) go together")
    if args.source is None and not args.backfill:
        raise UsageError("give a SOURCE (or --backfill --model-version V)")
    settings = settings_from_args(ProducerSettings, args)
    # Before any connection: a few descriptors short, kafka-python loops instead of failing.
    ensure_open_files(BASE_DESCRIPTORS, "genretag produce")
    roots = RootCheck.from_setting(settings.access.allowed_roots, strict=args.strict)
    rows = catalog_source(args.source, settings, args) if args.source is not None else None
    chooser = None
    try:
        with reaching(redis_url=settings.redis.url, kafka=settings.kafka.bootstrap_servers):
            if not args.dry_run:
                check_kafka(settings.kafka.bootstrap_servers)
            if args.backfill:
                version = _backfill_version(args, settings)
                rows, chooser = _backfill(rows, settings, version)
            report = publish(
                roots.wrap(rows), settings, dry_run=args.dry_run, strict=args.strict,
                limit=args.limit, max_rate=args.max_rate,
                progress=not args.no_progress, chooser=chooser,
            )
    except (OSError, ValueError) as exc:  # unreadable source (FMA header, permissions...)
        raise UsageError(str(exc)) from None
    except KafkaError as exc:
        print(f"genretag produce: Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"genretag produce: Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    shown = report.errors[:20]
    for error in shown:
        print(f"error: {error}", file=sys.stderr)
    if report.error_count > len(shown):
        print(f"... and {report.error_count - len(shown)} more (see the logs)", file=sys.stderr)
    if not args.strict and (warning := roots.warning()):
        print(warning, file=sys.stderr)
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    return 0 if report.ok else 1


def _backfill_version(args: argparse.Namespace, settings: ProducerSettings) -> str:
    """The version to backfill to: --model's manifest, or --model-version if something has it."""
    from genretag.producer.backfill import check_version, version_of_model

    if args.model is not None:
        return version_of_model(args.model)
    if not args.force:
        check_version(settings, args.model_version)
    return args.model_version


def _backfill(rows, settings: ProducerSettings, model_version: str):
    """Rows and chooser of a backfill: the catalog's missing/stale tracks, or Redis's stale ones."""
    from genretag.core.store import KeyLayout, TagReader, connect
    from genretag.producer.backfill import stale_chooser, stale_rows
    from genretag.producer.sources import Source

    store = TagReader(connect(settings.redis), KeyLayout(settings.redis.key_prefix))
    if rows is None:
        return Source("redis", lambda: stale_rows(store, model_version)), None
    return rows, stale_chooser(store, model_version)
