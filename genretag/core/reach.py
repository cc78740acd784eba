"""One clear line when the broker or Redis cannot be reached, instead of a timeout traceback.

Commands wrap their work in :func:`reaching`; a connection failure becomes
:class:`UnreachableError` naming the address, which the CLI prints in one line (exit 3).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions
from kafka import errors as kafka_errors

from genretag.core.errors import FatalError, is_redis_refusal, redis_error_code
from genretag.core.exits import Exit

HINT = "is the stack up? `genretag stack status`"

#: Kafka client errors that mean "no broker answered" (kafka-python raises these at bootstrap).
_KAFKA_DOWN: tuple[type[BaseException], ...] = (
    kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError,
    *(e for e in (getattr(kafka_errors, "NoBrokersAvailable", None),) if e is not None),
)
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class UnreachableError(FatalError):
    """The broker or Redis did not answer at its configured address."""

    exit_code = Exit.UNREACHABLE


def redis_unreachable(url: str) -> UnreachableError:
    return UnreachableError(f"Redis at {url} is unreachable: {HINT}")


def kafka_unreachable(servers: list[str]) -> UnreachableError:
    return UnreachableError(f"Kafka broker at {','.join(servers)} is unreachable: {HINT}")


def _tcp_answers(server: str, timeout_s: float) -> bool:
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
            return True
    except (OSError, ValueError):
        return False


def check_kafka(servers: list[str], timeout_s: float = 3.0) -> None:
    """Fail fast (seconds, not the client's 30 s bootstrap) when no bootstrap server listens."""
    if not any(_tcp_answers(s, timeout_s) for s in servers):
        raise kafka_unreachable(servers)


@contextmanager
def reaching(*, redis_url: str | None = None, kafka: list[str] | None = None) -> Iterator[None]:
    """Turn a connection failure to ``redis_url`` / ``kafka`` raised inside into one line.

    Wrong credentials (AuthenticationError is a ConnectionError in redis-py) are not
    "unreachable" and pass through unchanged.
    """
    from genretag.core.errors import FATAL_ERRORS

    try:
        yield
    except FATAL_ERRORS:
        raise
    except _REDIS_DOWN as exc:
        if redis_url is None:
            raise
        raise redis_unreachable(redis_url) from exc
    except redis.exceptions.ResponseError as exc:  # up, but refusing for now (MASTERDOWN, BUSY...)
        if redis_url is None or not is_redis_refusal(exc):
            raise
        raise UnreachableError(f"Redis at {redis_url} refuses commands ({redis_error_code(exc)}): "
                               f"{HINT}") from exc
    except _KAFKA_DOWN as exc:
        if kafka is None:
            raise
        raise kafka_unreachable(kafka) from exc
