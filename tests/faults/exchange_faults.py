"""Faults injected into the libav decoder exchange, at every step, to show no file ever gets
another file's result.

:func:`install` wraps the I/O steps of :class:`genretag.core.audio.libav.exchange.DecoderProcess`
(``_send``, ``_wait_readable``, ``_read_chunk``) in this process; the production code runs
unchanged around them, on real decoder processes. The first exchange about each file (told by its
inode, in the request) meets the next fault of the plan, in turn; later exchanges about that file
meet none, so the pool's retry on a fresh process can succeed. In a real worker process the faults
suite installs it through :data:`PRELOAD` (``WorkerProc(..., python_code=PRELOAD)``) with the plan
in the ``EXCHANGE_FAULTS`` environment variable.

The faults, one per step of an exchange:

- ``send_cut``: half the request line reaches the process, then the pipe breaks;
- ``wait_emfile``: waiting for the reply fails with EMFILE (this process out of descriptors:
  the very failure that once left a reply unread for the next file);
- ``wait_timeout``: no reply within the timeout (the wait gives up);
- ``short_read``: half the reply is read, then the read fails (EIO);
- ``garbage``: a line of garbage arrives before the reply;
- ``stale_reply``: the process's previous reply arrives again before this one (a reply for
  another request);
- ``wrong_id``: the reply names another request;
- ``dies_mid_reply``: the process is SIGKILLed after half its reply was read;
- ``too_many_samples``: the reply claims more samples than the shared buffer holds.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
from collections import Counter

from genretag.core.audio.libav.exchange import DecoderProcess

FAULTS = ("send_cut", "wait_emfile", "wait_timeout", "short_read", "garbage", "stale_reply",
          "wrong_id", "dies_mid_reply", "too_many_samples")
#: ``python -c`` code that installs the plan of ``EXCHANGE_FAULTS`` and runs ``genretag``.
PRELOAD = ("import os, runpy, sys; import tests.faults.exchange_faults as f; "
           "f.install(os.environ['EXCHANGE_FAULTS'].split(',')); sys.argv[0] = 'genretag'; "
           "runpy.run_module('genretag.cli', run_name='__main__')")

_lock = threading.Lock()
_plan: list[str] = []
_every = [False]
_faulted: set[tuple[int, ...]] = set()
#: Faults injected so far, by name (in this process).
injected: Counter[str] = Counter()
_original = {name: getattr(DecoderProcess, name)
             for name in ("_send", "_wait_readable", "_read_chunk")}


def install(plan: list[str] | tuple[str, ...] = FAULTS, every_exchange: bool = False) -> None:
    """Inject ``plan``'s faults, in turn, into the first exchange about each file (into every
    exchange with ``every_exchange``: then no retry can succeed)."""
    unknown = set(plan) - set(FAULTS)
    if unknown or not plan:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
    with _lock:
        _plan[:] = list(plan)
        _every[0] = every_exchange
        _faulted.clear()
        injected.clear()
    DecoderProcess._send = _send  # type: ignore[method-assign]
    DecoderProcess._wait_readable = _wait_readable  # type: ignore[method-assign]
    DecoderProcess._read_chunk = _read_chunk  # type: ignore[method-assign]


def uninstall() -> None:
    """Back to the plain I/O steps."""
    for name, method in _original.items():
        setattr(DecoderProcess, name, method)


def _next_fault(line: bytes) -> str | None:
    identity = tuple(json.loads(line).get("identity") or ())
    with _lock:
        if not identity or (identity in _faulted and not _every[0]):
            return None
        _faulted.add(identity)
        fault = _plan[(len(_faulted) - 1) % len(_plan)]
        injected[fault] += 1
        return fault


def _send(self: DecoderProcess, line: bytes) -> None:
    self._fault = _next_fault(line)  # type: ignore[attr-defined]
    if self._fault == "send_cut":  # type: ignore[attr-defined]
        _original["_send"](self, line[: len(line) // 2])
        raise BrokenPipeError(errno.EPIPE, "injected: the request was cut short")
    _original["_send"](self, line)


def _wait_readable(self: DecoderProcess, fd: int, timeout_s: float) -> bool:
    fault = getattr(self, "_fault", None)
    if fault == "wait_emfile":
        self._fault = None  # type: ignore[attr-defined]
        raise OSError(errno.EMFILE, "Too many open files (injected)")
    if fault == "wait_timeout":
        self._fault = None  # type: ignore[attr-defined]
        return False
    if fault == "short_read_rest":  # the rest of the reply "is there": reading it fails
        return True
    return _original["_wait_readable"](self, fd, timeout_s)


def _read_chunk(self: DecoderProcess, fd: int) -> bytes:
    fault = getattr(self, "_fault", None)
    if fault == "short_read_rest":
        self._fault = None  # type: ignore[attr-defined]
        raise OSError(errno.EIO, "Input/output error (injected)")
    chunk = _original["_read_chunk"](self, fd)
    while fault in ("stale_reply", "wrong_id", "too_many_samples") and not chunk.endswith(b"\n"):
        more = _original["_read_chunk"](self, fd)  # the whole reply line, to rewrite it
        if not more:
            break
        chunk += more
    previous = getattr(self, "_last_reply", b'{"ready": true}\n')
    if chunk.endswith(b"\n"):
        self._last_reply = chunk  # type: ignore[attr-defined]
    if fault is None or not chunk:
        return chunk
    self._fault = None  # type: ignore[attr-defined]
    if fault == "short_read":
        self._fault = "short_read_rest"  # type: ignore[attr-defined]
        return chunk[: len(chunk) // 2]
    if fault == "garbage":
        return b"\x00\xffnot a reply {\n" + chunk
    if fault == "stale_reply":
        return previous + chunk
    if fault == "dies_mid_reply":
        os.kill(self.pid, signal.SIGKILL)
        return chunk[: len(chunk) // 2]
    reply = json.loads(chunk)
    if fault == "wrong_id":
        reply["id"] = reply["id"] - 1
    elif fault == "too_many_samples" and reply.get("ok"):
        reply["lengths"] = [self.capacity + 1]
    return json.dumps(reply).encode() + b"\n"
