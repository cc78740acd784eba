"""The ``genretag`` command: one entry point, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function. This is
the top layer: it imports the services' command modules, never the reverse, and those modules
import nothing heavy at import time (torch loads only where a command needs it).

Exit status of every command: 0 done, 1 failed or nothing found, 2 usage or settings error,
3 the broker or Redis unreachable or refusing us, 4 (`work --until-idle`) every track
dead-lettered, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from genretag.core.errors import GenretagError
from genretag.core.logs import configure_logging
from genretag.core.reach import HINT
from genretag import __version__
from genretag.cli import events_cli, read_cli, stack_cli, tag_cli
from genretag.producer import cli as producer_cli
from genretag.training import cli as training_cli
from genretag.training import fma_cli, models_cli
from genretag.worker import cli as worker_cli
from genretag.schemas import describe_errors

#: Modules whose ``register(subparsers)`` adds subcommands, in --help order.
COMMAND_MODULES = (stack_cli, producer_cli, worker_cli, tag_cli, training_cli, fma_cli,
                   models_cli, read_cli, events_cli)

#: Global flags accepted anywhere on the line (before or after the subcommand).
_GLOBAL_SWITCHES = ("--plain-logs", "--debug")
_GLOBAL_VALUED = ("--log-level",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genretag",
        description="Tag music tracks with genres: catalog → Kafka → worker → Redis.",
        epilog="Settings come from flags, GENRETAG_* env vars, .env, and the stack file "
        "written by `genretag stack up`. `genretag COMMAND --help` lists each command's settings. "
        "--log-level, --plain-logs and --debug may also follow the subcommand. Exit status: "
        "0 done, 1 failed or nothing found, 2 usage, 3 broker/Redis unreachable or refusing, "
        "4 `work --until-idle` dead-lettered every track.",
    )
    parser.add_argument("--version", action="version", version=f"genretag {__version__}")
    parser.add_argument("--log-level", default="INFO", help="Log level (default: INFO).")
    parser.add_argument("--plain-logs", action="store_true", help="Human-readable logs, not JSON.")
    parser.add_argument("--debug", action="store_true",
                        help="Show the traceback of an error instead of one line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move global flags given after the subcommand to the front, where argparse wants them."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in _GLOBAL_SWITCHES:
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(argv):
            front += [arg, argv[i + 1]]
            i += 1
        elif arg.split("=", 1)[0] in _GLOBAL_VALUED and "=" in arg:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(hoist_global_flags(list(sys.argv[1:] if argv is None else argv)))
    configure_logging(args.log_level, json_logs=not args.plain_logs)
    name = f"genretag {args.command}"
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:  # bad settings: one clear line per field, no traceback
        if args.debug:
            raise
        problems = describe_errors(exc, "settings")
        print(f"{name}: invalid settings: {problems}", file=sys.stderr)
        return 2
    except GenretagError as exc:  # an expected failure: one line, the branch's exit status
        if args.debug:
            raise
        print(f"{name}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a connection failure no command translated: still one line
        if args.debug or not _is_connection_error(exc):
            raise
        print(f"{name}: {type(exc).__name__}: {exc}: {HINT}", file=sys.stderr)
        return 3


def _is_connection_error(exc: BaseException) -> bool:
    import redis.exceptions
    from kafka import errors as kafka_errors

    from genretag.core.errors import FATAL_ERRORS

    if isinstance(exc, FATAL_ERRORS):  # wrong credentials: the stack is up, the login is wrong
        return False
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            kafka_errors.KafkaConnectionError))


if __name__ == "__main__":
    sys.exit(main())
