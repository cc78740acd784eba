"""The worker's retry policy, as data: which errors are retried and how long to wait between tries.

Capped exponential backoff with jitter: every wait is drawn from ``[(1 - jitter) * base, base]``
where ``base = min(initial_s * factor ** attempt, max_s)``, so waits never exceed the cap and
replicas that met the same outage do not retry in lockstep. Which exceptions are transient or
fatal is data too, in :mod:`genretag.core.errors`: by class (``TRANSIENT_ERRORS`` minus ``FATAL_ERRORS``)
and, for Redis error replies, by their code (``REDIS_RETRY_CODES``, ``REDIS_FATAL_CODES``).
A retry may also have a deadline (startup): past it, :class:`Unreachable` says which
dependency at which address stayed down.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from genretag.core.errors import (
    FATAL_ERRORS,
    REDIS_FATAL_CODES,
    REDIS_RETRY_CODES,
    TRANSIENT_ERRORS,
    GenretagError,
    redis_error_code,
)
from genretag.core.reach import UnreachableError
from genretag.core.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class GaveUp(GenretagError):
    """Stopping, and a dependency stayed down: the batch is left uncommitted (redelivered)."""


class Unreachable(UnreachableError):
    """A dependency stayed down (or refusing) past a deadline: one line, exit 3."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: capped exponential backoff with downward jitter."""

    initial_s: float
    max_s: float
    factor: float = 2.0
    jitter: float = 0.2  # fraction of each wait drawn at random (0 = lockstep)
    retryable: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    fatal: tuple[type[BaseException], ...] = FATAL_ERRORS
    retryable_codes: frozenset[str] = REDIS_RETRY_CODES  # Redis error replies, by code
    fatal_codes: frozenset[str] = REDIS_FATAL_CODES

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter < 1, got {self.factor}, "
                             f"{self.jitter}")

    def is_retryable(self, exc: BaseException) -> bool:
        """Transient (by class or Redis reply code), and not one that retrying cannot fix."""
        code = redis_error_code(exc)
        if isinstance(exc, self.fatal) or code in self.fatal_codes:
            return False
        return isinstance(exc, self.retryable) or code in self.retryable_codes

    def base(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0-based) without jitter, capped."""
        return min(self.initial_s * self.factor ** min(attempt, 64), self.max_s)

    def at_cap(self, attempt: int) -> bool:
        """The backoff has grown to its cap (stopping gives up from here on)."""
        return self.base(attempt) >= self.max_s

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``attempt``: uniform in ``[(1 - jitter) * base, base]``."""
        base = self.base(attempt)
        return base * (1 - self.jitter * (rng or random).random())


def retry(action: Callable[[], T], policy: RetryPolicy, *, what: str,
          wait: Callable[[float], None], stopping: Callable[[], bool],
          abandon: Callable[[], bool] = lambda: False,
          on_retry: Callable[[str, BaseException, float], None] | None = None,
          deadline: float | None = None, unreachable: str = "") -> T | None:
    """Run ``action`` until it succeeds, waiting ``policy.delay`` after each transient error.

    Non-retryable errors propagate at once. Returns None when ``abandon()`` turns true during a
    wait (someone else finished or dropped the work). Raises :class:`GaveUp` when ``stopping()``
    and the backoff has reached its cap, and :class:`Unreachable` (``unreachable`` + the last
    error) when a transient error comes after ``deadline`` (``time.monotonic()``).
    """
    attempt = 0
    while True:
        try:
            return action()
        except Exception as exc:
            if not policy.is_retryable(exc):
                raise
            delay = policy.delay(attempt)
            if on_retry is not None:
                on_retry(what, exc, delay)
            if stopping() and policy.at_cap(attempt):
                raise GaveUp(f"{what}: {type(exc).__name__}: {exc}") from exc
            if deadline is not None and time.monotonic() >= deadline:
                raise Unreachable(f"{unreachable or what} (last error: {type(exc).__name__}: "
                                  f"{str(exc)[:300]})") from exc
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            wait(delay)
            if abandon():
                return None
            attempt += 1
