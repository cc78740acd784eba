"""Open-files limits: checked (and raised to the hard limit) before a process connects anywhere.

A process a few descriptors short does not fail cleanly: kafka-python's connections fail with
``EMFILE`` and it marks the coordinator dead and retries in a hot loop (93,000 log lines a
minute, never exiting), or hangs quietly, or every track fails as ``internal``. So the
commands check ``RLIMIT_NOFILE`` first: a soft limit below what they need is raised toward the
hard limit (any process may), and a hard limit below it ends the command with one line naming
``ulimit -n``. Exhaustion later (a leak, a burst) is named wherever it is caught
(:func:`is_exhaustion`).
"""

from __future__ import annotations

import errno
import resource

from genretag.core.errors import FatalError
from genretag.core.logs import get_logger

log = get_logger(__name__)

#: Descriptors of a process before its own work: interpreter, libraries, logs, broker and Redis
#: connections (bootstrap, coordinator, leaders, producer, admin), probes, the health server.
BASE_DESCRIPTORS = 64
#: Per decode worker: its decoder process's pipes, the vetted file, an FFmpeg fallback's pipes.
PER_DECODE_WORKER = 16
#: Soft limit asked for when raising it (within the hard limit): room beyond the bare need.
COMFORTABLE = 4096
EXHAUSTED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
HINT = "raise the open-files limit (`ulimit -n`, or LimitNOFILE= for a systemd unit)"


class TooFewDescriptors(FatalError):
    """The hard open-files limit is below what the command needs."""


def ensure_open_files(needed: int, command: str) -> int:
    """The soft ``RLIMIT_NOFILE`` after making it at least ``needed`` (raised toward the hard
    limit when lower); :class:`TooFewDescriptors` when the hard limit is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft == infinite or soft >= needed:
        return soft
    if hard != infinite and hard < needed:
        raise TooFewDescriptors(
            f"{command}: the open-files limit is {soft} (hard limit {hard}) and it needs at "
            f"least {needed}: {HINT}, e.g. `ulimit -n {max(needed, 1024)}`")
    target = max(needed, COMFORTABLE) if hard == infinite else min(hard, max(needed, COMFORTABLE))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    log.info("process.open_files_raised", extra={"from": soft, "to": target, "needed": needed})
    return target


def is_exhaustion(exc: BaseException | None) -> bool:
    """``exc`` (or an exception it was raised from) is the process or system out of
    descriptors (``EMFILE``/``ENFILE``)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in EXHAUSTED_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
