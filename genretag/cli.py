"""The ``genretag`` command: one entry point, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function. This is
the top layer: it imports the services' command modules, never the reverse, and those modules
import nothing heavy at import time (torch loads only where a command needs it).
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

import producer.cli
import training.cli
import training.fma_cli
import worker.cli
from core.errors import GenretagError
from core.logs import configure_logging
from genretag import read_cli, stack_cli, tag_cli
from schemas import describe_errors

#: Modules whose ``register(subparsers)`` adds subcommands, in --help order.
COMMAND_MODULES = (stack_cli, producer.cli, worker.cli, tag_cli, training.cli, training.fma_cli,
                   read_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genretag",
        description="Tag music tracks with genres: catalog → Kafka → worker → Redis.",
        epilog="Settings come from flags, GENRETAG_* env vars, .env, and the stack file "
        "written by `genretag stack up`. `genretag COMMAND --help` lists each command's settings.",
    )
    parser.add_argument("--log-level", default="INFO", help="Log level (default: INFO).")
    parser.add_argument("--plain-logs", action="store_true", help="Human-readable logs, not JSON.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json_logs=not args.plain_logs)
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:  # bad settings: one clear line per field, no traceback
        problems = describe_errors(exc, "settings")
        print(f"genretag {args.command}: invalid settings: {problems}", file=sys.stderr)
        return 2
    except GenretagError as exc:  # an expected failure: one line, the branch's exit status
        print(f"genretag {args.command}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
