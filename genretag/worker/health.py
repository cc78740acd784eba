"""Liveness/readiness state of one worker and the small HTTP server that exposes it.

``/metrics`` (Prometheus text), ``/startupz`` (the consume loop has started), ``/healthz``
(consume loop ticked recently, or still starting within ``max_startup_s``) and ``/readyz`` (model
loaded, group joined, Redis answering and not refusing writes) on ``metrics_port``; a daemon thread of the standard
library's ``ThreadingHTTPServer``, so probes never wait on the loop.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from genretag.core.logs import get_logger
from genretag.worker.metrics import WorkerMetrics

log = get_logger(__name__)

#: Seconds a worker may spend before its consume loop (model load, CUDA init, first connects
#: retried while Kafka or Redis are down) before ``/healthz`` calls it stuck. The k8s startup
#: probe (``/startupz``, 180 s) restarts it earlier; this bound covers Docker's HEALTHCHECK.
MAX_STARTUP_S = 300.0


class HealthState:
    """Facts the probes report; written by the loop and the rebalance listener, read by HTTP."""

    def __init__(self, max_loop_age_s: float, redis_ping: Callable[[], object] | None = None,
                 max_startup_s: float = MAX_STARTUP_S):
        if max_loop_age_s <= 0 or max_startup_s <= 0:
            raise ValueError(f"health bounds must be > 0 s: max_loop_age_s={max_loop_age_s}, "
                             f"max_startup_s={max_startup_s}")
        self.max_loop_age_s = max_loop_age_s
        self.max_startup_s = max_startup_s
        self.redis_ping = redis_ping
        self.model_loaded = False
        self.joined = False
        self.assigned = 0
        self.stopping = False
        self.loop_started = False  # set by the loop on entry; /startupz waits for it
        # Redis answers but refuses writes (OOM, READONLY, MISCONF...): the reply, until a
        # write succeeds again. PING still works then, so readiness needs this fact too.
        self.redis_refusing: str | None = None
        self._created = time.monotonic()
        self._last_tick = self._created

    def tick(self) -> None:
        """The consume loop is alive (called on every poll)."""
        self._last_tick = time.monotonic()

    def loop_age_s(self) -> float:
        return time.monotonic() - self._last_tick

    def started(self) -> tuple[bool, dict[str, object]]:
        """Startup probe: OK once the consume loop runs (model loaded, consumer subscribed)."""
        return self.loop_started, {"loop_started": self.loop_started,
                                   "starting_s": round(time.monotonic() - self._created, 3)}

    def live(self) -> tuple[bool, dict[str, object]]:
        """Liveness: the loop ticked within ``max_loop_age_s``; before it started, within
        ``max_startup_s`` of creation (a worker stuck before its loop is not alive)."""
        age = self.loop_age_s()
        if self.loop_started:
            ok = age <= self.max_loop_age_s
        else:
            ok = time.monotonic() - self._created <= self.max_startup_s
        return ok, {"loop_started": self.loop_started, "loop_age_s": round(age, 3),
                    "max_loop_age_s": self.max_loop_age_s, "max_startup_s": self.max_startup_s}

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
        refusing = self.redis_refusing
        if refusing:
            checks["redis_refusing"] = refusing
        ready = self.model_loaded and self.joined and redis_ok and not refusing
        return ready and not self.stopping, checks


#: Probe path -> the HealthState check it reports (200 when OK, else 503, JSON body either way).
PROBES: dict[str, Callable[[HealthState], tuple[bool, dict[str, object]]]] = {
    "/startupz": HealthState.started,
    "/healthz": HealthState.live,
    "/readyz": HealthState.ready,
}


def _handler(metrics: WorkerMetrics, health: HealthState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype = metrics.render()
                self._send(200, body, ctype)
            elif path in PROBES:
                ok, checks = PROBES[path](health)
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
    """``/metrics`` and the ``PROBES`` paths on a daemon thread; ``close`` stops it."""

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
                                                  "paths": ["/metrics", *PROBES]})
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
