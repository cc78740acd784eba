"""The stop flag of a worker: set by SIGTERM/SIGINT (or a caller); a second signal exits at once."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from genretag.core.logs import get_logger

log = get_logger(__name__)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its batches and exits. A second signal exits now."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGTERM/SIGINT (main thread only; elsewhere the caller sets the flag)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            log.warning("worker.forced_exit", extra={"signal": signum})
            os._exit(128 + signum)
        log.info("worker.stopping", extra={"signal": signum})
        self.event.set()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()
