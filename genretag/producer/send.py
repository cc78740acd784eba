"""Sending keyed messages and counting the broker's acknowledgements, without keeping futures.

Each send registers a callback and an errback; the counters (and, for callers that need to
act on each acknowledgement, the ``on_ack`` hook) are all that remain of a sent message, so a
run over millions of tracks holds no per-message state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from genretag.core.kafka import make_producer
from genretag.core.logs import get_logger
from genretag.core.settings import KafkaSection
from genretag.core.errors import TransientError

log = get_logger(__name__)


class BrokerUnavailable(TransientError):
    """The broker did not take a message in time (unreachable, no metadata): stop sending."""


class AckingSender:
    """A producer (acks=all, retries) for one topic that counts what the broker acknowledged.

    ``failed`` counts messages the broker rejected, messages ``send`` refused, and, after
    ``close``, messages never answered within the timeout.
    """

    def __init__(
        self,
        kafka: KafkaSection,
        topic: str,
        *,
        on_ack: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.topic = topic
        self.queued = 0
        self.acked = 0
        self.rejected = 0
        self.refused = 0
        self.unanswered = 0
        self._on_ack = on_ack
        self._on_error = on_error
        self._lock = threading.Lock()
        self._producer = make_producer(kafka, **producer_overrides)

    @property
    def failed(self) -> int:
        return self.rejected + self.refused + self.unanswered

    def send(self, key: str, value: bytes, token: Any = None) -> None:
        """Queue one message; ``token`` is handed to ``on_ack`` once the broker acknowledges it."""
        try:
            future = self._producer.send(self.topic, key=key.encode(), value=value)
        except KafkaTimeoutError as exc:
            self._refused(key, exc)
            raise BrokerUnavailable(f"broker did not accept messages: {exc}") from exc
        except KafkaError as exc:  # e.g. larger than the producer's max_request_size
            self._refused(key, exc)
            return
        with self._lock:
            self.queued += 1
        future.add_callback(self._acked, token)
        future.add_errback(self._rejected, key)

    def _acked(self, token: Any, _metadata: Any) -> None:
        with self._lock:
            self.acked += 1
        if self._on_ack is not None:
            self._on_ack(token)

    def _rejected(self, key: str, exc: BaseException) -> None:
        with self._lock:
            self.rejected += 1
        self._report(key, exc)

    def _refused(self, key: str, exc: BaseException) -> None:
        with self._lock:
            self.refused += 1
        self._report(key, exc)

    def _report(self, key: str, exc: BaseException) -> None:
        log.error("produce.not_acknowledged", extra={"track_id": key, "error": str(exc)})
        if self._on_error is not None:
            self._on_error(f"{key}: not acknowledged: {type(exc).__name__}: {exc}")

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued message is acknowledged or rejected; False on timeout."""
        try:
            self._producer.flush(timeout=timeout_s)
            return True
        except KafkaTimeoutError:
            return False

    def close(self, timeout_s: float) -> None:
        """Flush (up to ``timeout_s``), close, and count whatever is still unanswered as failed."""
        flushed = self.flush(timeout_s)
        self._producer.close(timeout=timeout_s if flushed else 0)
        with self._lock:
            self.unanswered = max(0, self.queued - self.acked - self.rejected)
        if self.unanswered:
            log.error("produce.ack_timeout", extra={"unanswered": self.unanswered})
            if self._on_error is not None:
                self._on_error(f"{self.unanswered} message(s) not acknowledged within "
                               f"{timeout_s:g}s")


class RateLimiter:
    """Paces calls to at most ``rate`` per second (None or 0: no limit), without bursts."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate is not None and rate < 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    def wait(self) -> None:
        """Block until the next call is allowed."""
        if not self.interval:
            return
        now = self._clock()
        if self._next > now:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval
