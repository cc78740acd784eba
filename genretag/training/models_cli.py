"""``genretag models pull|list|info``: pretrained taggers as artifacts, and what a model file holds.

Argparse wiring only; torch and the converter load when a command runs (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from genretag.core.settings import MODELS_DIR_ENV, user_models_dir


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genretag"


def default_model_path(name: str) -> Path:
    """Where ``models pull NAME`` writes without ``--out``: ``MODELS_DIR/NAME.pt``."""
    return user_models_dir() / f"{name}.pt"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command and its ``pull`` / ``list`` / ``info`` actions."""
    models = subparsers.add_parser(
        "models", help="Get pretrained taggers (musicnn, MTG/UPF) or inspect a model file.",
        description="Pretrained musicnn/vgg taggers converted from the musicnn==0.1.0 wheel "
        "(ISC licence) into genretag artifacts, and the manifest of any model file.",
    )
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    pull = actions.add_parser(
        "pull", help="Fetch the musicnn wheel (sha256-verified), convert a model, write it.",
        description="Download musicnn==0.1.0 with pip (no install, no dependencies) into the "
        "cache, check its sha256, convert NAME's checkpoint to a TorchScript artifact at OUT "
        f"(default: the models folder, ${MODELS_DIR_ENV} or $XDG_DATA_HOME/genretag/models, "
        f"here {user_models_dir()}, as NAME.pt). Running it again does nothing when OUT "
        "already holds this model's version.",
    )
    pull.add_argument("name", metavar="NAME",
                      help="musicnn-msd (recommended), musicnn-mtt, vgg-msd or vgg-mtt.")
    pull.add_argument("--out", type=Path, default=None, metavar="PATH",
                      help="Artifact to write (default: MODELS_DIR/NAME.pt, see above).")
    pull.add_argument("--cache", type=Path, default=None, metavar="DIR",
                      help="Where the wheel is kept (default: $XDG_CACHE_HOME/genretag).")
    pull.add_argument("--wheel", type=Path, default=None, metavar="FILE",
                      help="Use this musicnn-0.1.0 wheel instead of downloading (still verified).")
    pull.add_argument("--threshold", type=float, default=None,
                      help="Decision threshold of every tag (default 0.25).")
    pull.add_argument("--force", action="store_true", help="Convert again even if OUT is current.")
    pull.set_defaults(func=_pull)

    listing = actions.add_parser("list", help="The pretrained models `pull` can build.",
                                 description="Names, architecture, training data, tag counts.")
    listing.set_defaults(func=_list)

    info = actions.add_parser(
        "info", help="Print a model file's manifest (labels and their kinds, version, source).",
        description="Load PATH (checksum verified) and print its embedded manifest.",
    )
    info.add_argument("path", type=Path, metavar="PATH")
    info.add_argument("--json", action="store_true", help="The whole manifest as JSON.")
    info.set_defaults(func=_info)


def _pull(args: argparse.Namespace) -> int:
    from genretag.training.pretrained.pull import DEFAULT_THRESHOLD, pull

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    out = args.out or default_model_path(args.name)
    manifest, written = pull(args.name, out, args.cache or _default_cache(), args.wheel,
                             threshold, args.force)
    state = "written" if written else "up to date"
    print(f"{out}: {manifest.name} {manifest.version} ({len(manifest.labels)} tags), {state}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from genretag.training.pretrained.catalog import MODELS

    print(f"{'name':<14} {'arch':<8} {'tags':>4}  trained on")
    for spec in MODELS.values():
        print(f"{spec.name:<14} {spec.arch:<8} {len(spec.tags):>4}  {spec.dataset}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from genretag.core.artifact import read_manifest

    manifest = read_manifest(args.path)
    if args.json:
        print(json.dumps(manifest.model_dump(mode="json"), indent=2))
        return 0
    print(f"name:        {manifest.name}")
    print(f"version:     {manifest.version}")
    print(f"dataset:     {manifest.dataset or '-'}")
    print(f"input:       {manifest.sample_rate} Hz, {manifest.clip_seconds:g} s windows, "
          f"{manifest.activation} outputs, frontend {getattr(manifest.frontend, 'kind', 'mfcc')}")
    print(f"sha256:      {manifest.sha256}")
    by_kind: dict[str, list[str]] = {}
    for label in manifest.labels:
        by_kind.setdefault(manifest.kind_of(label), []).append(label)
    for kind, labels in by_kind.items():
        print(f"{kind + ':':<12} {', '.join(labels)}")
    return 0
