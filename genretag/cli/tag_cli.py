"""``genretag tag FILE_OR_DIR...``: tag local files with a model, no Kafka or Redis needed.

Runs the worker's own vetting, decoding, windowing and model code (:mod:`genretag.worker.oneshot`), so
a user can judge a model on their own files before deploying the stack. Each file's result is
printed as soon as its batch is done (a table row, or a JSON line with ``--jsonl``), with the
file's path; a summary follows on stderr. Exit 1 if any file could not be tagged (its reason is
printed, as the worker would dead-letter it); Ctrl-C prints what finished and exits 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from genretag.core.audio.formats import AUDIO_EXTENSIONS
from genretag.core.errors import GET_A_MODEL, ModelNotFound, UsageError
from genretag.worker.settings import WorkerSettings

#: Most files decoded at once (and so per model call) by ``genretag tag``.
MAX_PARALLEL_FILES = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tag``."""
    from genretag.core.settings import WindowSection

    defaults = WindowSection()
    tag = subparsers.add_parser(
        "tag", help="Tag local audio files now, without Kafka or Redis.",
        description="Decode each file's windows over its whole duration, run the model and print "
        "the tags the worker would store, file by file as they are done (folders are searched "
        "for audio files; hidden files and macOS ._* files are skipped). Columns: file, genre "
        "(the most probable genre, whatever the thresholds), labels (the tags over their "
        "thresholds), top probabilities, model. A summary goes to stderr. Exit 0 all tagged, "
        "1 some file not tagged, 2 usage, 130 interrupted (what finished is printed).",
    )
    tag.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    tag.add_argument("--model", type=Path, metavar="PATH",
                     help="The model artifact file [env GENRETAG_MODEL_PATH; default "
                     f"{WorkerSettings.field_info('model_path').default}].")
    out = tag.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="One JSON array at the end (one object per file, with its path).")
    out.add_argument("--jsonl", action="store_true",
                     help="One JSON object per line, each printed as soon as its file is done.")
    tag.add_argument("--timeline", action="store_true",
                     help="Also show each file's timeline: its sections (time ranges with their "
                     "top genres) and every window.")
    tag.add_argument("--include-hidden", action="store_true",
                     help="Also tag hidden files and files in hidden folders found in a folder "
                     "(dot files, macOS ._* AppleDouble metadata).")
    tag.add_argument("--window-every", type=float, metavar="SECONDS",
                     help="Coverage of tracks longer than 10 windows: one window per SECONDS "
                     f"over the whole track (default: the window_every setting, "
                     f"{defaults.every_s:g}; a shorter track is analysed end to end). See "
                     "docs/coverage.md.")
    tag.add_argument("--max-windows", type=int, help="Most windows per track (default: the "
                     f"max_windows setting, {defaults.max_windows}).")
    tag.add_argument("--device", choices=["auto", "cpu", "cuda"], help="Inference device.")
    tag.set_defaults(func=run_tag)


def audio_files(paths: list[str], include_hidden: bool = False) -> tuple[list[Path], int]:
    """The files named, and the audio files under the folders named (sorted, no duplicates),
    and how many hidden files the folders held (left out unless ``include_hidden``)."""
    from genretag.producer.sources import audio_under

    out: list[Path] = []
    hidden = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for found, is_hidden in audio_under(path, AUDIO_EXTENSIONS, include_hidden):
                hidden += is_hidden
                if not is_hidden:
                    out.append(found)
        elif path.exists():
            out.append(path)
        else:
            raise UsageError(f"no such file or folder: {raw}")
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))], hidden


def run_tag(args: argparse.Namespace) -> int:
    from genretag.core.settings import load_settings
    from genretag.core.trackids import path_track_id
    from genretag.worker.oneshot import tag_stream

    files, hidden = audio_files(args.paths, args.include_hidden)
    if hidden:
        print(f"skipped {hidden} hidden file(s) (--include-hidden tags them)", file=sys.stderr)
    if not files:
        raise UsageError("no audio files found in " + ", ".join(args.paths))
    roots = sorted({str(p.resolve().parent) for p in files})
    parallel = min(MAX_PARALLEL_FILES, len(files))
    # One pool task per file (not chunks), so a small batch still decodes in parallel.
    settings = load_settings(WorkerSettings, model_path=args.model, allowed_roots=roots,
                             max_windows=args.max_windows, window_every=args.window_every,
                             device=args.device, decode_workers=parallel, decode_grouped=False)
    if not settings.model.path.is_file():
        raise ModelNotFound(f"model file not found: {settings.model.path} (--model PATH or "
                            f"GENRETAG_MODEL_PATH): {GET_A_MODEL}")
    ids = [path_track_id(p) for p in files]
    printer = Printer(args, len(files))
    stream = tag_stream(list(zip(ids, files, strict=True)), settings, batch=parallel)
    try:
        for k, outcome in stream:
            printer.show(files[k], ids[k], outcome)
    except KeyboardInterrupt:
        stream.close()
        printer.finish(interrupted=True)
        return 130
    printer.finish()
    return 1 if printer.failed else 0


class Printer:
    """Prints each file's outcome as it comes (a table row, a JSON line, or a JSON array at the
    end) and the run's summary on stderr."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.args = args
        self.total = total
        self.started = time.monotonic()
        self.rows: list[dict] = []  # --json: printed at the end
        self.tagged = 0
        self.failed: Counter = Counter()  # reason → files
        self.genres: Counter = Counter()  # primary genre → files
        self.header_shown = False

    def show(self, path: Path, track_id: str, outcome) -> None:
        """One file's record or error, printed at once (kept for the array with --json)."""
        rec = outcome.record
        if rec is None:
            self.failed[outcome.dead.reason.value] += 1
        else:
            self.tagged += 1
            self.genres[rec.primary_genre or "-"] += 1
        if self.args.json or self.args.jsonl:
            row = self._json(path, track_id, outcome)
            if self.args.json:
                self.rows.append(row)
            else:
                print(json.dumps(row), flush=True)
            return
        self._table_row(path, track_id, outcome)

    def _json(self, path: Path, track_id: str, outcome) -> dict:
        if outcome.record is None:
            return {"path": str(path), "track_id": track_id,
                    "error": {"reason": outcome.dead.reason.value, "detail": outcome.dead.detail}}
        exclude = set() if self.args.timeline else {"timeline"}
        return {"path": str(path), **outcome.record.model_dump(mode="json", exclude=exclude)}

    def _table_row(self, path: Path, track_id: str, outcome) -> None:
        from genretag.cli.display import printable, shorten_middle
        from genretag.cli.read_cli import TRACK_WIDTH, table_header, table_row
        from genretag.cli.timeline_view import format_timeline

        if not self.header_shown:
            print(table_header(by_path=True))
            self.header_shown = True
        if outcome.record is None:
            dead = outcome.dead
            print(f"{shorten_middle(str(path), TRACK_WIDTH):<{TRACK_WIDTH}} not tagged: "
                  f"{dead.reason.value}: {printable(' '.join(dead.detail.split())[:200])}",
                  flush=True)
            return
        print(table_row(track_id, outcome.record, str(path)), flush=True)
        if self.args.timeline:
            print("\n" + format_timeline(outcome.record, title=str(path)) + "\n", flush=True)

    def finish(self, interrupted: bool = False) -> None:
        """The --json array (what finished), then the summary line on stderr."""
        if self.args.json:
            print(json.dumps(self.rows, indent=2), flush=True)
        seconds = time.monotonic() - self.started
        done = self.tagged + sum(self.failed.values())
        parts = [f"tagged {self.tagged} of {self.total} file(s) in {seconds:.1f} s"]
        if self.failed:
            reasons = ", ".join(f"{r} {n}" for r, n in self.failed.most_common())
            parts.append(f"{sum(self.failed.values())} not tagged ({reasons})")
        if self.genres:
            parts.append("genres: " + ", ".join(f"{g} {n}" for g, n in self.genres.most_common(8)))
        if interrupted:
            parts.insert(0, f"interrupted after {done} of {self.total} file(s)")
        print("; ".join(parts), file=sys.stderr, flush=True)
