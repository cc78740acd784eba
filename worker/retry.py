"""The worker's retry policy, as data: which errors are retried and how long to wait between tries.

Capped exponential backoff with jitter: every wait is drawn from ``[(1 - jitter) * base, base]``
where ``base = min(initial_s * factor ** attempt, max_s)``, so waits never exceed the cap and
replicas that met the same outage do not retry in lockstep. Which exceptions are transient or
fatal is data too, in :mod:`core.errors` (``TRANSIENT_ERRORS`` minus ``FATAL_ERRORS``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from core.errors import FATAL_ERRORS, TRANSIENT_ERRORS, GenretagError
from core.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class GaveUp(GenretagError):
    """Stopping, and a dependency stayed down: the batch is left uncommitted (redelivered)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: capped exponential backoff with downward jitter."""

    initial_s: float
    max_s: float
    factor: float = 2.0
    jitter: float = 0.2  # fraction of each wait drawn at random (0 = lockstep)
    retryable: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    fatal: tuple[type[BaseException], ...] = FATAL_ERRORS

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter < 1, got {self.factor}, "
                             f"{self.jitter}")

    def is_retryable(self, exc: BaseException) -> bool:
        """Transient, and not one of the errors that retrying cannot fix (auth, ACL)."""
        return isinstance(exc, self.retryable) and not isinstance(exc, self.fatal)

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
          on_retry: Callable[[str, BaseException, float], None] | None = None) -> T | None:
    """Run ``action`` until it succeeds, waiting ``policy.delay`` after each transient error.

    Non-retryable errors propagate at once. Returns None when ``abandon()`` turns true during a
    wait (someone else finished or dropped the work). Raises :class:`GaveUp` when ``stopping()``
    and the backoff has reached its cap.
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
            wait(delay)
            if abandon():
                return None
            attempt += 1
