"""The error taxonomy: one root, three branches (transient, permanent, fatal).

Keep the retryable set in one tuple (``TRANSIENT_ERRORS``) so the policy is data, not scattered
``except`` clauses.
"""

from __future__ import annotations

import re

import redis.exceptions
from kafka import errors as kafka_errors

from genretag.core.exits import Exit
from genretag.schemas import ReasonCode


class GenretagError(Exception):
    """Root of every genretag error; carries the track and the stage where it happened.

    Three branches say what the caller does: :class:`TransientError` (back off and retry),
    :class:`PermanentError` (this one message is bad: dead-letter it and go on) and
    :class:`FatalError` (the process cannot do its job: one clear line, non-zero exit).
    """

    def __init__(self, message: str = "", *, track_id: str | None = None, stage: str = "decode"):
        super().__init__(message)
        self.track_id = track_id
        self.stage = stage


class PermanentError(GenretagError):
    """Retrying will not help (bad audio, bad message): dead-letter it, commit, go on."""

    def __init__(
        self, reason: ReasonCode, message: str, *, track_id: str | None = None, stage: str = "decode"
    ):
        super().__init__(message, track_id=track_id, stage=stage)
        self.reason = reason


class TransientError(GenretagError):
    """A dependency is unavailable (Redis, broker): back off and retry, never commit meanwhile."""


class FatalError(GenretagError):
    """The process cannot do its job (bad input file, missing model, bad usage): stop and say why.

    ``exit_code`` is what the command line exits with after printing the message in one line.
    """

    exit_code: int = Exit.FAILED

    def __init__(self, message: str = "", **kwargs: object) -> None:
        super().__init__(message, stage=str(kwargs.pop("stage", "setup")), **kwargs)  # type: ignore[arg-type]


class UsageError(FatalError):
    """The command was called wrongly (bad flag combination, missing source)."""

    exit_code = Exit.USAGE


#: How to get a model file, for messages about a missing one (no flag named: callers differ).
GET_A_MODEL = ("`genretag models pull musicnn-msd` (real genre tags) or `genretag train --demo` "
               "writes one")


class ModelNotFound(UsageError):
    """The model file named by a flag or setting does not exist: a usage error wherever it is
    named (``tag --model``, ``work --model``, ``train --backbone``)."""


#: Never worth retrying, although redis-py roots some of them in ConnectionError: wrong
#: credentials or an ACL that forbids a command. The worker exits with a clear error.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthenticationWrongNumberOfArgsError,
    redis.exceptions.NoPermissionError,
)

#: Exceptions that mean "try again later" wherever they are raised (minus FATAL_ERRORS).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,  # MasterDownError too
    kafka_errors.KafkaTimeoutError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.RetriableError,
    kafka_errors.KafkaConnectionError,
)


# -- Redis error replies, classified by their code (the reply's first word) -----------------------
#: Replies of a server that is up but refuses writes until an operator (or time) fixes it:
#: retried with backoff, the worker not ready meanwhile. WRONGTYPE here is a *shared* key of
#: the wrong type (a genre index, the dlq hash): one track's own key reports TRACKKEY instead.
REDIS_RETRY_CODES: frozenset[str] = frozenset({
    "OOM", "READONLY", "MISCONF", "LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN",
    "CLUSTERDOWN", "NOSCRIPT", "UNBLOCKED", "WRONGTYPE",
})
#: Replies about one track's own stored state (``genretag.core.store`` reports them per track): that
#: track is dead-lettered, the rest of its batch is written.
REDIS_TRACK_CODES: frozenset[str] = frozenset({"TRACKKEY"})
#: Replies that retrying cannot fix: credentials and ACLs.
REDIS_FATAL_CODES: frozenset[str] = frozenset({"NOAUTH", "WRONGPASS", "NOPERM"})
#: Any other reply (``ERR unknown command``...) is a server set up wrongly for us: fatal too.

_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)
_CODE = re.compile(r"^([A-Z][A-Z_]+)(?:\s|$)")


def redis_error_code(exc: BaseException) -> str | None:
    """The code of a Redis error reply (``OOM``, ``MISCONF``...), None for other errors.

    redis-py strips the codes it knows into ``status_code`` and leaves the others as the first
    word of the message, after a pipeline's ``Command # n (...) caused error:`` note.
    """
    if not isinstance(exc, redis.exceptions.ResponseError):
        return None
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    text = _PIPELINE_PREFIX.sub("", str(exc.args[0]) if exc.args else "")
    match = _CODE.match(text)
    return match.group(1) if match else None


def is_redis_refusal(exc: BaseException) -> bool:
    """A Redis server that answers but refuses the command for now (OOM, READONLY...)."""
    return redis_error_code(exc) in REDIS_RETRY_CODES


def is_fatal(exc: BaseException) -> bool:
    """Retrying cannot help: wrong credentials, an ACL, or an error reply we do not know."""
    code = redis_error_code(exc)
    if isinstance(exc, FATAL_ERRORS) or code in REDIS_FATAL_CODES:
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and not (
        code in REDIS_RETRY_CODES or code in REDIS_TRACK_CODES
        or isinstance(exc, TRANSIENT_ERRORS))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying after a wait: a dependency is down, slow or refusing for now."""
    if is_fatal(exc):
        return False
    return isinstance(exc, TRANSIENT_ERRORS) or redis_error_code(exc) in REDIS_RETRY_CODES


class RedisUnusable(FatalError):
    """Redis answered with an error no retry fixes (an unknown reply: the server is not set up
    for us); the worker stops with this one line instead of looping."""

    exit_code = Exit.UNREACHABLE  # like credentials and ACLs: Redis refuses us
