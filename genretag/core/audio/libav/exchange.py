"""One decoder process and its exchanges: a request line out, its reply line in, its samples copied.

A reply always belongs to its request. Each request carries a fresh id that the process echoes;
a reply with another id, one that is not a well-formed answer, one that claims more samples than
the shared buffer holds, or any failure at any step (writing, waiting, reading, copying: a dead
process, a timeout, this process out of descriptors) kills the decoder process on the spot, so
an unread or half-read reply can never be taken for the next file's. A killed process is never
reused: :class:`genretag.core.audio.libav.pool.DecoderPool` starts another in its place.

Waiting uses ``poll(2)``, which needs no descriptor of its own (an epoll selector did, and a
worker out of descriptors then lost track of a reply). The I/O steps are small methods
(:meth:`DecoderProcess._send`, :meth:`~DecoderProcess._wait_readable`,
:meth:`~DecoderProcess._read_chunk`) so tests can inject faults at each of them.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from genretag.schemas import ReasonCode

#: Seconds a process may take to start (import numpy and PyAV) before the pool gives up on it.
START_TIMEOUT_S = 120.0
#: Longest reply line accepted (a track's reply is a few hundred bytes).
REPLY_LIMIT = 64 << 10
#: The repository root: the process imports this checkout's package, whatever is installed.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[4])
_REQUEST_IDS = itertools.count(1)  # one sequence per worker process: ids never repeat
_REASONS = frozenset(r.value for r in ReasonCode)
FailureKind = Literal["died", "hung", "garbled", "local"]


class ExchangeFailed(Exception):
    """An exchange went wrong and the decoder process has been killed. ``kind``: it ``died``,
    ``hung`` (no reply in time), answered ``garbled`` (not this request's well-formed reply), or
    this process failed ``local``-ly (out of descriptors or memory: the file was not judged)."""

    def __init__(self, kind: FailureKind, why: str) -> None:
        super().__init__(why)
        self.kind = kind


class StartFailed(RuntimeError):
    """The decoder process exited or hung while starting: a deployment problem (no PyAV?)."""


class DecoderProcess:
    """One decoder process (:mod:`genretag.core.audio.libav.child`) and its shared output buffer
    of ``capacity`` float32 samples (a memfd both map)."""

    def __init__(self, capacity: int, cmd: Sequence[str]) -> None:
        self.capacity = capacity
        self.killed = False
        self._buf = b""
        self.ready = False
        nbytes = capacity * 4
        self.fd = os.memfd_create("genretag-decode", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, nbytes)
            self.shared = mmap.mmap(self.fd, nbytes)
            try:
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                    p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
                self.proc = subprocess.Popen(
                    [*cmd, str(self.fd), str(nbytes)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=[self.fd],
                    env=env)
            except BaseException:
                self.shared.close()
                raise
        except BaseException:  # out of descriptors or memory: leave nothing open behind
            os.close(self.fd)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Not killed and still running: the only state in which a process is asked anything."""
        return not self.killed and self.proc.poll() is None

    def exchange(self, fields: dict, timeout_s: float) -> tuple[dict, list[np.ndarray]]:
        """Send ``fields`` as one request; returns its reply and the samples it names.

        Raises :class:`ExchangeFailed` (the process is killed first) or :class:`StartFailed`.
        """
        try:
            if not self.ready:
                self._await_ready()
            request_id = next(_REQUEST_IDS)
            self._send(json.dumps({**fields, "id": request_id}).encode() + b"\n")
            reply = self._reply(time.monotonic() + timeout_s)
            _check(reply, request_id, self.capacity)
            return reply, self._samples(reply["lengths"]) if reply["ok"] else []
        except ExchangeFailed:
            self.kill()
            raise
        except (BrokenPipeError, ConnectionResetError):
            raise ExchangeFailed("died", f"decoder process died ({_exit_text(self.kill())})"
                                 ) from None
        except OSError as exc:
            self.kill()
            raise ExchangeFailed("local", f"exchange with the decoder process failed here: "
                                          f"{exc.strerror or exc}") from None
        except BaseException:
            self.kill()
            raise

    def _await_ready(self) -> None:
        try:
            reply = self._reply(time.monotonic() + START_TIMEOUT_S)
        except ExchangeFailed as exc:
            self.kill()
            if exc.kind == "local":
                raise
            raise StartFailed(f"the decoder process did not start ({exc}): is PyAV (`av`) "
                              "installed?") from None
        if reply != {"ready": True}:
            raise ExchangeFailed("garbled", f"decoder process said {str(reply)[:200]} at start")
        self.ready = True

    def _reply(self, deadline: float) -> dict:
        """The next reply line, parsed; ``ExchangeFailed`` if none comes whole and in time."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._wait_readable(fd, remaining):
                raise ExchangeFailed("hung", "decoder process did not answer in time")
            chunk = self._read_chunk(fd)
            if not chunk:
                raise ExchangeFailed("died", f"decoder process died ({_exit_text(self.kill())})")
            self._buf += chunk
            if len(self._buf) > REPLY_LIMIT:
                raise ExchangeFailed("garbled", f"decoder reply longer than {REPLY_LIMIT} bytes")
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            raise ExchangeFailed("garbled", f"decoder reply is not JSON: {line[:80]!r}") from None
        if self._buf:  # a second line nobody asked for
            raise ExchangeFailed("garbled", "decoder process answered more than it was asked")
        if not isinstance(reply, dict):
            raise ExchangeFailed("garbled", f"decoder reply is not an object: {line[:80]!r}")
        return reply

    # -- the I/O steps (small on purpose: tests wrap them to inject faults) ------------------
    def _send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def _wait_readable(self, fd: int, timeout_s: float) -> bool:
        poller = select.poll()  # no descriptor of its own, unlike epoll
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000) + 1)))

    def _read_chunk(self, fd: int) -> bytes:
        return os.read(fd, 65536)

    def _samples(self, lengths: list[int]) -> list[np.ndarray]:
        """Copy the spans of the reply out of the shared buffer (one copy each)."""
        view = np.frombuffer(self.shared, dtype=np.float32)
        out, at = [], 0
        for n in lengths:
            out.append(view[at: at + n].copy())
            at += n
        return out

    def kill(self) -> int | None:
        """Stop the process (SIGKILL if needed) and free the buffer; returns its exit code.
        Idempotent; a killed process is never asked anything again."""
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if not self.shared.closed:
            self.shared.close()
            os.close(self.fd)
        return code


def _check(reply: dict, request_id: int, capacity: int) -> None:
    """``reply`` answers request ``request_id`` and is well formed, or ``ExchangeFailed``."""
    if reply.get("id") != request_id:
        raise ExchangeFailed("garbled", f"decoder reply to request {reply.get('id')!r} came for "
                                        f"request {request_id}")
    if reply.get("ok") is True:
        lengths = reply.get("lengths")
        if (not isinstance(lengths, list)
                or not all(isinstance(n, int) and n >= 0 for n in lengths)
                or sum(lengths) > capacity):
            raise ExchangeFailed("garbled", "decoder reply claims samples its buffer does not "
                                            f"hold: {str(lengths)[:80]}")
    elif reply.get("ok") is not False or reply.get("reason") not in _REASONS:
        raise ExchangeFailed("garbled", f"decoder reply is malformed: {str(reply)[:120]}")


def _exit_text(code: int | None) -> str:
    return f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
