"""The ``genretag`` command: one entry point, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function. This is
the top layer: it imports the services' command modules, never the reverse, and those modules
import nothing heavy at import time (torch loads only where a command needs it).

Exit statuses come from one table, :data:`genretag.core.exits.EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from genretag.core.errors import GenretagError
from genretag.core.exits import Exit, exit_summary
from genretag.core.logs import LOG_FORMATS, configure_logging, wants_json
from genretag.core.reach import HINT
from genretag.core.settings import STATE_DIR_ENV
from genretag import __version__
from genretag.cli import read_cli, similar_cli, stack_cli
from genretag.cli.extras import MissingExtra, missing_extra_error
from genretag.producer import cli as producer_cli
from genretag.training import fma_cli, models_cli
from genretag.worker import cli as worker_cli
from genretag.schemas import describe_errors

# Commands that need an extra at import time: on the light install they say which to install.
try:
    from genretag.cli import tag_cli
except ModuleNotFoundError as _exc:
    tag_cli = MissingExtra(("tag",), _exc)  # type: ignore[assignment]
try:
    from genretag.training import cli as training_cli
except ModuleNotFoundError as _exc:
    training_cli = MissingExtra(("train",), _exc)  # type: ignore[assignment]

#: Modules whose ``register(subparsers)`` adds subcommands, in --help order.
COMMAND_MODULES = (stack_cli, producer_cli, worker_cli, tag_cli, training_cli, fma_cli,
                   models_cli, read_cli, similar_cli)

#: Global flags accepted anywhere on the line (before or after the subcommand).
_GLOBAL_SWITCHES = ("--plain-logs", "--debug")
_GLOBAL_VALUED = ("--log-level", "--log-format", "--state-dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genretag",
        description="Tag music tracks with genres: catalog → Kafka → worker → Redis.",
        epilog="Settings come from flags, GENRETAG_* env vars, .env, and the stack file "
        "written by `genretag stack up`. `genretag COMMAND --help` lists each command's settings. "
        "--log-level, --log-format, --state-dir and --debug may also follow the subcommand. "
        f"Exit status: {exit_summary()}.",
    )
    parser.add_argument("--version", action="version", version=f"genretag {__version__}")
    parser.add_argument("--log-level", default="INFO", help="Log level (default INFO).")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                        help="Logs on stderr: json (one object per line), plain (LEVEL logger: "
                        "event key=value), or auto (default): plain on a terminal; otherwise "
                        "JSON for the services (work, produce), plain for the other commands.")
    parser.add_argument("--plain-logs", dest="log_format", action="store_const", const="plain",
                        help="Same as --log-format plain.")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help=f"The local stack's folder (sets {STATE_DIR_ENV}; default: the "
                        "checkout's .genretag/ inside one, see `genretag stack --help`).")
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
    args, unknown = parser.parse_known_args(
        hoist_global_flags(list(sys.argv[1:] if argv is None else argv)))
    if unknown and not getattr(args, "accepts_unknown", False):  # a command of a missing extra
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # takes any: it won't run
    configure_logging(args.log_level, json_logs=wants_json(args.log_format, args.command))
    if args.state_dir is not None:  # the environment carries it to child processes too
        os.environ[STATE_DIR_ENV] = str(args.state_dir.expanduser().resolve())
    name = f"genretag {args.command}"
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `genretag dlq list --json | head`: the reader went away
        _silence_stdout()
        return Exit.BROKEN_PIPE
    except ValidationError as exc:  # bad settings: one clear line per field, no traceback
        if args.debug:
            raise
        problems = describe_errors(exc, "settings")
        print(f"{name}: invalid settings: {problems}", file=sys.stderr)
        return Exit.USAGE
    except GenretagError as exc:  # an expected failure: one line, the branch's exit status
        if args.debug:
            raise
        print(f"{name}: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", Exit.FAILED))
    except SystemExit as exc:  # `raise SystemExit("why")` anywhere below: a usage error
        if not isinstance(exc.code, str):
            raise
        print(f"{name}: {exc.code}", file=sys.stderr)
        return Exit.USAGE
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except ModuleNotFoundError as exc:  # the light install running a command of an extra
        error = missing_extra_error(exc, args.command)
        if args.debug or error is None:
            raise
        print(f"{name}: {error}", file=sys.stderr)
        return int(error.exit_code)
    except Exception as exc:  # a connection failure no command translated: still one line
        if args.debug or not _is_connection_error(exc):
            raise
        print(f"{name}: {type(exc).__name__}: {exc}: {HINT}", file=sys.stderr)
        return Exit.UNREACHABLE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing to flush
        pass


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
