"""``genretag tag FILE_OR_DIR...``: tag local files with a model, no Kafka or Redis needed.

Runs the worker's own vetting, decoding, windowing and model code (:mod:`genretag.worker.oneshot`), so
a user can judge a model on their own files before deploying the stack. Exit 1 if any file
could not be tagged (its reason is printed, as the worker would dead-letter it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genretag.core.audio.formats import AUDIO_EXTENSIONS
from genretag.core.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tag``."""
    tag = subparsers.add_parser(
        "tag", help="Tag local audio files now, without Kafka or Redis.",
        description="Decode each file's windows over its whole duration, run the model and print "
        "the tags the worker would store (folders are searched for audio files).",
    )
    tag.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    tag.add_argument("--model", type=Path, help="TorchScript artifact (default: GENRETAG_MODEL_PATH "
                     "or models/demo.pt).")
    tag.add_argument("--json", action="store_true", help="JSON output (one object per file).")
    tag.add_argument("--timeline", action="store_true", help="Also show each file's timeline.")
    tag.add_argument("--max-windows", type=int, help="Windows per track (default: the setting).")
    tag.add_argument("--device", choices=["auto", "cpu", "cuda"], help="Inference device.")
    tag.set_defaults(func=run_tag)


def audio_files(paths: list[str]) -> list[Path]:
    """The files named, and the audio files under the folders named (sorted, no duplicates)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*")
                          if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif path.exists():
            out.append(path)
        else:
            raise UsageError(f"no such file or folder: {raw}")
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def run_tag(args: argparse.Namespace) -> int:
    from genretag.core.settings import load_settings
    from genretag.cli.read_cli import format_table
    from genretag.cli.timeline_view import format_timeline
    from genretag.producer.ids import path_track_id
    from genretag.worker.oneshot import tag_files
    from genretag.worker.settings import WorkerSettings

    files = audio_files(args.paths)
    if not files:
        raise UsageError("no audio files found in " + ", ".join(args.paths))
    roots = sorted({str(p.resolve().parent) for p in files})
    settings = load_settings(WorkerSettings, model_path=args.model, allowed_roots=roots,
                             max_windows=args.max_windows, device=args.device,
                             decode_workers=min(4, len(files)))
    if not settings.model.path.is_file():
        raise UsageError(f"model not found: {settings.model.path} (give --model PATH)")
    ids = [path_track_id(p) for p in files]
    outcomes = tag_files(list(zip(ids, files, strict=True)), settings)
    failed = 0
    if args.json:
        rows = []
        for path, o in zip(files, outcomes, strict=True):
            if o.record is not None:
                rec = o.record.model_dump(mode="json", exclude=set() if args.timeline else {"timeline"})
                rows.append({"path": str(path), **rec})
            else:
                failed += 1
                rows.append({"path": str(path), "error": {"reason": o.dead.reason.value,
                                                          "detail": o.dead.detail}})
        print(json.dumps(rows, indent=2))
        return 1 if failed else 0
    found = {}
    for path, o in zip(files, outcomes, strict=True):
        if o.record is None:
            failed += 1
            print(f"{path}: not tagged: {o.dead.reason.value}: {o.dead.detail}", file=sys.stderr)
        else:
            found[o.record.track_id] = o.record
    if found:
        print(format_table(found))
        if args.timeline:
            for rec in found.values():
                print("\n" + format_timeline(rec))
    return 1 if failed else 0
