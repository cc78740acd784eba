"""worker/health.py and worker/metrics.py over real HTTP: the startup probe, the startup bound of
liveness, and the standard process_* series on /metrics (what deploy/k8s probes and scrapes)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from genretag.worker.health import MAX_STARTUP_S, HealthServer, HealthState
from genretag.worker.metrics import WorkerMetrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _probe(port: int, path: str) -> tuple[int, dict]:
    code, body = _get(port, path)
    return code, json.loads(body)


@pytest.fixture
def serve():
    servers: list[HealthServer] = []

    def start(health: HealthState, metrics: WorkerMetrics | None = None) -> int:
        server = HealthServer("127.0.0.1", 0, metrics or WorkerMetrics("w-1"), health).start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.close()


def test_startupz_fails_until_the_consume_loop_starts(serve) -> None:
    health = HealthState(max_loop_age_s=30)
    port = serve(health)
    # Model loaded, group joined, Redis up: still not started until the loop runs.
    health.model_loaded = health.joined = True
    code, body = _probe(port, "/startupz")
    assert code == 503 and body["ok"] is False and body["loop_started"] is False
    assert body["starting_s"] >= 0
    health.loop_started = True
    health.tick()
    code, body = _probe(port, "/startupz")
    assert code == 200 and body["ok"] is True
    health.stopping = True  # started stays started: the startup probe never runs again anyway
    assert _probe(port, "/startupz")[0] == 200


def test_healthz_fails_when_the_loop_never_starts_within_the_bound(serve) -> None:
    health = HealthState(max_loop_age_s=30, max_startup_s=0.5)
    port = serve(health)
    code, body = _probe(port, "/healthz")
    assert code == 200 and body["loop_started"] is False and body["max_startup_s"] == 0.5
    time.sleep(0.7)  # stuck before the loop (e.g. a hung model load or connect)
    code, body = _probe(port, "/healthz")
    assert code == 503 and body["ok"] is False and body["loop_started"] is False
    # Once the loop runs, the loop-age bound applies instead of the startup bound.
    health.loop_started = True
    health.tick()
    code, body = _probe(port, "/healthz")
    assert code == 200 and body["ok"] is True and body["loop_age_s"] < 30


def test_healthz_allows_a_normal_startup_and_the_default_bound() -> None:
    health = HealthState(max_loop_age_s=30)
    assert health.max_startup_s == MAX_STARTUP_S
    # The k8s startup probe allows 36 x 5 s = 180 s; Docker's HEALTHCHECK start period is
    # 90-120 s: the liveness bound must not fire before either of them would.
    assert MAX_STARTUP_S >= 180
    assert health.live()[0] is True
    with pytest.raises(ValueError, match="max_startup_s=0"):
        HealthState(max_loop_age_s=30, max_startup_s=0)


def test_metrics_expose_the_standard_process_series(serve) -> None:
    metrics = WorkerMetrics("w-1")
    port = serve(HealthState(max_loop_age_s=30), metrics)
    code, text = _get(port, "/metrics")
    assert code == 200
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("process_", "python_")) and "{" not in line
    }
    # ProcessCollector reads /proc: the workers run on Linux (images, CI).
    assert values["process_resident_memory_bytes"] > 1_000_000
    assert values["process_open_fds"] >= 1
    assert abs(values["process_start_time_seconds"] - time.time()) < 7 * 24 * 3600
    assert "process_cpu_seconds_total" in values
    assert 'python_info{implementation="CPython"' in text
    assert "python_gc_objects_collected_total" in text
    # Still this worker's own series next to them, and a second worker's registry is separate.
    assert 'genretag_worker_info{worker_id="w-1"} 1.0' in text
    other = WorkerMetrics("w-2").render()[0].decode()
    assert "process_resident_memory_bytes" in other and 'worker_id="w-1"' not in other
