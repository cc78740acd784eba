"""The error taxonomy: one root, three branches (transient, permanent, fatal).

Keep the retryable set in one tuple (``TRANSIENT_ERRORS``) so the policy is data, not scattered
``except`` clauses.
"""

from __future__ import annotations

import redis.exceptions
from kafka import errors as kafka_errors

from schemas import ReasonCode


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

    exit_code = 1

    def __init__(self, message: str = "", **kwargs: object) -> None:
        super().__init__(message, stage=str(kwargs.pop("stage", "setup")), **kwargs)  # type: ignore[arg-type]


class UsageError(FatalError):
    """The command was called wrongly (bad flag combination, missing source)."""

    exit_code = 2


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
    kafka_errors.KafkaTimeoutError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.RetriableError,
    kafka_errors.KafkaConnectionError,
)
