"""The ``genretag`` command: one entry point, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function, so this
module only wires them together and imports nothing heavy (torch loads only where needed).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pydantic import ValidationError

from genretag.logs import configure_logging
from schemas import describe_errors

#: Modules whose ``register(subparsers)`` adds subcommands, in --help order.
COMMAND_MODULES = (
    "genretag.stack_cli",
    "producer.cli",
    "worker.cli",
    "training.cli",
    "training.fma_cli",
    "genretag.read_cli",
)


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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside the module, not a missing module
                raise
            continue
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
