"""Liveness/readiness state of one worker and the small HTTP server that exposes it.

``/metrics`` (Prometheus text), ``/healthz`` (process alive and consume loop ticked recently)
and ``/readyz`` (model loaded, group joined, Redis answering) on ``metrics_port``; a daemon
thread of the standard library's ``ThreadingHTTPServer``, so probes never wait on the loop.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.logs import get_logger
from worker.metrics import WorkerMetrics

log = get_logger(__name__)


class HealthState:
    """Facts the probes report; written by the loop and the rebalance listener, read by HTTP."""

    def __init__(self, max_loop_age_s: float, redis_ping: Callable[[], object] | None = None):
        self.max_loop_age_s = max_loop_age_s
        self.redis_ping = redis_ping
        self.model_loaded = False
        self.joined = False
        self.assigned = 0
        self.stopping = False
        self.loop_started = False  # before the loop runs (model loading, first connects): alive
        self._last_tick = time.monotonic()

    def tick(self) -> None:
        """The consume loop is alive (called on every poll)."""
        self._last_tick = time.monotonic()

    def loop_age_s(self) -> float:
        return time.monotonic() - self._last_tick

    def live(self) -> tuple[bool, dict[str, object]]:
        age = self.loop_age_s()
        ok = not self.loop_started or age <= self.max_loop_age_s
        return ok, {"loop_started": self.loop_started, "loop_age_s": round(age, 3),
                    "max_loop_age_s": self.max_loop_age_s}

    def ready(self) -> tuple[bool, dict[str, object]]:
        redis_ok, redis_error = False, None
        if self.redis_ping is not None:
            try:
                self.redis_ping()
                redis_ok = True
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                redis_error = f"{type(exc).__name__}: {exc}"
        checks: dict[str, object] = {
            "model_loaded": self.model_loaded, "joined": self.joined,
            "assigned_partitions": self.assigned, "redis": redis_ok,
            "stopping": self.stopping,
        }
        if redis_error:
            checks["redis_error"] = redis_error
        return self.model_loaded and self.joined and redis_ok and not self.stopping, checks


def _handler(metrics: WorkerMetrics, health: HealthState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype = metrics.render()
                self._send(200, body, ctype)
            elif path in ("/healthz", "/readyz"):
                ok, checks = health.live() if path == "/healthz" else health.ready()
                body = json.dumps({"ok": ok, **checks}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # probes every few seconds would flood the logs

    return Handler


class HealthServer:
    """``/metrics``, ``/healthz``, ``/readyz`` on a daemon thread; ``close`` stops it."""

    def __init__(self, host: str, port: int, metrics: WorkerMetrics, health: HealthState):
        self.httpd = ThreadingHTTPServer((host, port), _handler(metrics, health))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http",
                                       daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        log.info("worker.metrics_serving", extra={"port": self.port,
                                                  "paths": ["/metrics", "/healthz", "/readyz"]})
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
