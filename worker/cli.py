"""``genretag work``: run a tagging worker (one consumer-group member per process)."""

from __future__ import annotations

import argparse
import json

from genretag.cli_settings import add_settings_arguments, settings_from_args
from genretag.settings import WorkerSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "work",
        help="Consume track references, tag them, write tags to Redis.",
        description="Joins the consumer group, decodes each track with FFmpeg, runs the TorchScript "
        "model in batches (CUDA when available), writes tags to Redis and then commits offsets. "
        "Bad input goes to the dead-letter topic with a reason code. SIGTERM/SIGINT finish the "
        "current batch, commit and leave the group; a second signal exits at once.",
    )
    parser.add_argument("--until-idle", action="store_true",
                        help="Exit once no message arrived for --idle-exit-s (drained topic).")
    add_settings_arguments(parser, WorkerSettings)
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from worker.loop import run

    settings = settings_from_args(WorkerSettings, args)
    stats = run(settings, until_idle=args.until_idle)
    print(json.dumps(stats.__dict__))
    return 0
