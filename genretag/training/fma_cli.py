"""``genretag fma download`` and ``genretag fma info``: get the FMA archives and inspect them.

Only argparse wiring lives here; the work is imported lazily from ``training.download`` and
``core.fma`` so ``genretag --help`` stays fast (no torch anywhere on this path).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from genretag.core.fma.layout import SUBSETS

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fma`` command and its ``download`` / ``info`` actions."""
    fma = subparsers.add_parser(
        "fma", help="Download and inspect the Free Music Archive (FMA) dataset.",
        description="Download, verify and extract the official FMA archives, or summarise an "
        "extracted copy (tracks per split and genre, audio files present).",
    )
    actions = fma.add_subparsers(dest="fma_command", metavar="ACTION", required=True)

    dl = actions.add_parser(
        "download", help="Download, verify (SHA-1) and extract fma_metadata + one audio subset.",
        description="Resumable download of fma_metadata.zip and fma_<subset>.zip into DEST "
        "(sizes: small 7.2 GiB, medium 22 GiB, large 93 GiB). Re-running resumes an "
        "interrupted download and skips what is already extracted.",
    )
    dl.add_argument("--subset", choices=SUBSETS, default="small",
                    help="Audio subset to fetch (default: small).")
    dl.add_argument("--dest", type=Path, required=True, metavar="DIR",
                    help="Folder that will hold fma_metadata/ and fma_<subset>/.")
    dl.add_argument("--base-url", default=None, metavar="URL",
                    help="Mirror to download from (default: the official FMA server).")
    dl.add_argument("--no-metadata", action="store_true",
                    help="Skip fma_metadata.zip (342 MiB).")
    dl.add_argument("--keep-archives", action="store_true",
                    help="Keep the verified zip files after extracting them.")
    dl.set_defaults(func=_download)

    info = actions.add_parser(
        "info", help="Summarise an extracted FMA copy: tracks per split / genre, audio present.",
        description="Read fma_metadata/tracks.csv under FMA_DIR and print, for SUBSET, the "
        "tracks per official split and per genre_top, and how many audio files are present.",
    )
    info.add_argument("--fma-dir", type=Path, required=True, metavar="DIR",
                      help="Folder holding fma_metadata/ and fma_<subset>/.")
    info.add_argument("--subset", choices=SUBSETS, default="small",
                      help="Subset to summarise (inclusive: medium counts small too).")
    info.set_defaults(func=_info)


def _download(args: argparse.Namespace) -> int:
    """Run ``fma download``; returns a process exit code."""
    from genretag.training.download import FMA_BASE_URL, DownloadError, download_fma

    try:
        paths = download_fma(args.subset, args.dest, base_url=args.base_url or FMA_BASE_URL,
                             metadata=not args.no_metadata, keep_archives=args.keep_archives)
    except (DownloadError, OSError) as exc:
        print(f"fma download failed: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    """Run ``fma info``; returns a process exit code."""
    from genretag.core.fma import (
        SPLITS,
        FmaFormatError,
        audio_path,
        format_malformed,
        load_tracks,
        metadata_dir,
        select,
        subset_audio_dir,
    )

    tracks_csv = metadata_dir(args.fma_dir) / "tracks.csv"
    try:
        tracks = load_tracks(tracks_csv)
    except FmaFormatError as exc:
        print(f"fma info: {exc}", file=sys.stderr)
        return 1
    chosen = select(tracks, args.subset)
    print(f"{tracks_csv}: {len(tracks)} tracks, {len(tracks.malformed)} malformed row(s)")
    if tracks.malformed:
        print(format_malformed(tracks.malformed, limit=10))
    print(f"subset {args.subset}: {len(chosen)} tracks")

    per_split = Counter(t.split for t in chosen)
    print("\nsplit        tracks")
    for split in SPLITS:
        print(f"{split:<12} {per_split[split]:>6}")

    genres = Counter((t.genre_top or "(none)", t.split) for t in chosen)
    names = sorted({g for g, _ in genres})
    width = max([len("genre_top"), *map(len, names)])
    print(f"\n{'genre_top':<{width}} {'tracks':>6} " + " ".join(f"{s:>10}" for s in SPLITS))
    for name in names:
        counts = [genres[(name, s)] for s in SPLITS]
        print(f"{name:<{width}} {sum(counts):>6} " + " ".join(f"{c:>10}" for c in counts))

    audio_dir = subset_audio_dir(args.fma_dir, args.subset)
    present = missing = empty = 0
    for t in chosen:
        path = audio_path(audio_dir, t.track_id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            missing += 1
            continue
        if size == 0:
            empty += 1
        else:
            present += 1
    print(f"\naudio in {audio_dir}: {present} present, {missing} missing, {empty} empty")
    if not audio_dir.is_dir():
        print(f"({audio_dir} does not exist: run `genretag fma download --subset "
              f"{args.subset} --dest {args.fma_dir}`)")
    return 0
