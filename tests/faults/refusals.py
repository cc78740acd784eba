"""A dedicated redis-server and the ways it refuses writes while up (OOM, READONLY, MISCONF...).

Each :class:`Refusal` puts the server into one refusing state with standard commands
(``CONFIG SET``, ``REPLICAOF``, a failing ``BGSAVE``, a script that runs too long) and takes it
out again, as an operator would. The server is the test's own (protected configs enabled), so
the session stack other tests share is never touched.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from genretag.cli.stack import free_port, redis_binary


class RedisServer:
    """A redis-server on a free loopback port with its own data dir; ``close`` stops it."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--enable-protected-configs", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class Refusal:
    """One refusing state: its reply code, how to enter it and how an operator leaves it."""

    code: str
    enter: Callable[[RedisServer], None]
    leave: Callable[[RedisServer], None]


def _closed_port() -> int:
    return free_port()  # nothing listens there: a master that never answers


def _bgsave_status(server: RedisServer) -> str:
    return str(server.client.info("persistence")["rdb_last_bgsave_status"])


def _wait_bgsave(server: RedisServer, status: str) -> None:
    deadline = time.monotonic() + 20
    while _bgsave_status(server) != status or server.client.info("persistence")[
            "rdb_bgsave_in_progress"]:
        assert time.monotonic() < deadline, f"BGSAVE status never became {status}"
        time.sleep(0.05)


def _misconf_enter(server: RedisServer) -> None:
    """Persistence fails (the RDB file cannot be renamed onto a directory), writes stop."""
    (server.dir / "blocked.rdb").mkdir(exist_ok=True)
    c = server.client
    c.config_set("save", "3600 1")
    c.config_set("dbfilename", "blocked.rdb")
    c.bgsave()
    _wait_bgsave(server, "err")


def _misconf_leave(server: RedisServer) -> None:
    c = server.client
    c.config_set("dbfilename", "dump.rdb")
    c.bgsave()
    _wait_bgsave(server, "ok")


def _replica_enter(server: RedisServer, stale: str = "yes") -> None:
    server.client.config_set("replica-serve-stale-data", stale)
    server.client.replicaof("127.0.0.1", _closed_port())


def _replica_leave(server: RedisServer) -> None:
    server.client.replicaof("NO", "ONE")
    server.client.config_set("replica-serve-stale-data", "yes")


_busy: dict[int, threading.Thread] = {}


def _busy_enter(server: RedisServer) -> None:
    """A read-only script that never ends: every other command is answered BUSY."""
    server.client.config_set("busy-reply-threshold", 50)

    def spin() -> None:
        other = redis.Redis(port=server.port, socket_timeout=None)
        try:
            other.eval("local i = 0 while true do i = i + 1 end", 0)
        except redis.exceptions.ResponseError:
            pass  # killed by leave()
        finally:
            other.close()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    _busy[server.port] = thread
    time.sleep(0.3)


def _busy_leave(server: RedisServer) -> None:
    quick = redis.Redis(port=server.port, socket_timeout=5)
    deadline = time.monotonic() + 10
    while True:
        try:
            quick.script_kill()
            break
        except redis.exceptions.ResponseError as exc:
            if "NOTBUSY" in str(exc) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    _busy.pop(server.port).join(10)


#: Every refusing state these tests can produce on a single server, by its reply code.
REFUSALS: dict[str, Refusal] = {
    "OOM": Refusal("OOM", lambda s: s.client.config_set("maxmemory", 1),
                   lambda s: s.client.config_set("maxmemory", 0)),
    "READONLY": Refusal("READONLY", _replica_enter, _replica_leave),
    "MASTERDOWN": Refusal("MASTERDOWN", lambda s: _replica_enter(s, stale="no"), _replica_leave),
    "MISCONF": Refusal("MISCONF", _misconf_enter, _misconf_leave),
    "NOREPLICAS": Refusal("NOREPLICAS", lambda s: s.client.config_set("min-replicas-to-write", 1),
                          lambda s: s.client.config_set("min-replicas-to-write", 0)),
    "BUSY": Refusal("BUSY", _busy_enter, _busy_leave),
}
