"""The exit status of every ``genretag`` command: one table, read by the error classes, the CLI
and the documentation (``docs/reference/exit-codes.md`` is generated from it)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Exit(IntEnum):
    """Exit statuses by meaning; :data:`EXIT_CODES` says what each means to a user."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    ALL_DEAD_LETTERED = 4
    INTERRUPTED = 130
    BROKEN_PIPE = 141


@dataclass(frozen=True)
class ExitCode:
    """One row of the table: the status, its name and what it means."""

    code: Exit
    meaning: str
    examples: str


#: The documented exit statuses, in order.
EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(Exit.OK, "done", "every command that did its job"),
    ExitCode(Exit.FAILED, "failed, or nothing found",
             "`tags`: a track has no tags, an unknown genre; `produce`: a message not "
             "acknowledged, or `--strict` found bad rows; `tag`: a file could not be tagged; "
             "`dlq replay`: a message not acknowledged; `stack status`: the stack is down"),
    ExitCode(Exit.USAGE, "usage or settings error",
             "a bad flag or flag combination, an invalid setting, a missing or unreadable "
             "input named on the line or in the settings (source, model file, backbone)"),
    ExitCode(Exit.UNREACHABLE, "the broker or Redis unreachable, or refusing us",
             "nothing answers at the configured address (`is the stack up? genretag stack "
             "status`), wrong credentials, an ACL, a Redis reply no retry fixes"),
    ExitCode(Exit.ALL_DEAD_LETTERED, "every track was dead-lettered",
             "`work --until-idle`: tracks came and none could be tagged (`genretag dlq list` "
             "says why)"),
    ExitCode(Exit.INTERRUPTED, "interrupted", "Ctrl-C (SIGINT); a second signal to a worker "
             "exits at once with 128 + the signal"),
    ExitCode(Exit.BROKEN_PIPE, "the reader of the output went away",
             "`genretag dlq list --json | head`: the output is cut short without a traceback, "
             "as a shell reports a command ended by SIGPIPE"),
)


def exit_table_markdown() -> str:
    """The table as Markdown (for the docs and ``genretag --help``'s epilog source)."""
    rows = ["| status | meaning | when |", "|---:|---|---|"]
    rows += [f"| {row.code.value} | {row.meaning} | {row.examples} |" for row in EXIT_CODES]
    return "\n".join(rows) + "\n"


def exit_summary() -> str:
    """One line for ``--help``: ``0 done, 1 failed…``."""
    return ", ".join(f"{row.code.value} {row.meaning}" for row in EXIT_CODES)
