"""Redis up but refusing: running workers retry, stay up and unready, and lose nothing.

OOM (``maxmemory``), READONLY (a failover made it a replica) and MISCONF (persistence failing)
are error replies, not connection errors; a stale key of the wrong type for one track belongs
to that track only. Redis down at start must end a batch run with one clear line. Kafka is the
shared session stack; Redis is each module's own server (tests/faults/refusals.py).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from genretag.core.store import connect
from genretag.cli.stack import free_port
from tests.faults.config import SIZES
from tests.faults.harness import (
    agreement_problems,
    all_committed,
    assign,
    committed,
    consistency_problems,
    end_offsets_of,
    fault_settings,
    read_state,
    read_topic,
    send_tracks,
    wait_until,
)
from tests.faults.refusals import REFUSALS, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path_factory.mktemp("refusals-redis"))
    yield running
    running.close()


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not serving yet
        return 0, str(exc)


def refusals_counted(port: int, code: str) -> float:
    _, text = probe(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(f'genretag_redis_refusals_total{{code="{code}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("code", ["OOM", "READONLY", "MISCONF"])
def test_redis_refusing_writes_keeps_the_worker_up_unready_and_loses_nothing(
    server, stack, demo_model, fault_clips, audio_root, reference, workers, figures, code
) -> None:
    """The refusal starts under a ready worker; nothing is committed while it lasts, /readyz
    is red and the refusals are counted; once an operator lifts it, every track is tagged."""
    port = free_port()
    settings = fault_settings(stack, demo_model, [audio_root], redis_url=server.url,
                              batch_size=2, metrics_port=port, metrics_host="127.0.0.1")
    worker = workers.start(settings, f"refusal-{code}")
    wait_until(lambda: probe(port, "/readyz")[0] == 200 or not worker.alive(), 180,
               "the worker to be ready", diagnose=worker.tail)
    refusal = REFUSALS[code]
    refusal.enter(server)
    started = time.monotonic()
    tracks = assign(f"refused-{code.lower()}", 6, fault_clips)
    ends = end_offsets_of(list(send_tracks(settings, tracks).values()))
    try:
        wait_until(lambda: refusals_counted(port, code) >= 3 or not worker.alive(), 180,
                   f"the worker to retry {code} writes", diagnose=worker.tail)
        status, body = probe(port, "/readyz")
        during = committed(settings)
        alive_during = worker.alive()
    finally:
        refusal.leave(server)
    refused_s = time.monotonic() - started
    wait_until(lambda: all_committed(settings, ends) or not worker.alive(), 180,
               "the run to complete once Redis accepts writes", diagnose=worker.tail)
    ready_after = wait_until(lambda: probe(port, "/readyz")[0] == 200, 30, "ready again")
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    lost, problems = agreement_problems(state, tracks, reference)
    problems += consistency_problems(state)
    counted = refusals_counted(port, code)
    worker.signal(signal.SIGTERM)
    rc = worker.wait(60)
    figures(f"Redis refusing writes ({code})", outages=1, tracks=len(tracks), lost=len(lost),
            refused_s=round(refused_s, 1), refusals_counted=int(counted),
            ready_again_s=round(ready_after, 1))
    assert alive_during, worker.tail()
    assert status == 503 and f'"redis_refusing": "' in body and code in body, body
    assert not during, f"offsets committed while Redis refused writes: {during}"
    assert not lost, lost
    assert not problems, problems[:10]
    assert rc == 0, worker.tail()


def test_a_stale_wrong_type_key_dead_letters_its_track_and_the_worker_goes_on(
    server, stack, demo_model, fault_clips, audio_root, reference, workers, figures
) -> None:
    """One track's hash key is a plain string (left by something else): that track alone is
    dead-lettered (stage ``store``, the key named), the others are tagged, the run ends 0."""
    settings = fault_settings(stack, demo_model, [audio_root], redis_url=server.url)
    tracks = assign("stale", 6, fault_clips)
    bad = "stale-0003"
    bad_key = f"{settings.redis.key_prefix}track:{bad}"
    server.client.set(bad_key, "left over")
    send_tracks(settings, tracks)
    worker = workers.start(settings, "stale-key", until_idle=True)
    rc = worker.wait(240)
    untouched = server.client.get(bad_key) == "left over"  # never overwritten blindly
    server.client.delete(bad_key)  # the harness reads every track key as a hash
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    good = {t: u for t, u in tracks.items() if t != bad}
    lost, problems = agreement_problems(state, good, reference)
    problems += consistency_problems(state)
    letter = state.dlq.get(bad)
    on_topic = [json.loads(r.value) for r in read_topic(settings, settings.kafka.dlq_topic, 2,
                                                        timeout_s=5)]
    figures("A track's Redis key of the wrong type", bad_inputs=1, tracks=len(tracks),
            lost=len(lost), worker_exit_code=rc)
    assert rc == 0, worker.tail()
    assert letter is not None, (state.dlq, worker.tail())
    assert letter["stage"] == "store" and letter["reason"] == "internal", letter
    assert f"TRACKKEY {bad_key} holds a string" in letter["detail"], letter
    assert [d["track_id"] for d in on_topic] == [bad], on_topic
    assert untouched
    assert not lost and not problems, (lost, problems[:10])


@pytest.mark.parametrize("down", ["redis", "broker", "redis refusing"])
def test_until_idle_gives_up_when_a_server_is_down_at_start_with_one_clear_line(
    server, stack, demo_model, audio_root, workers, figures, down
) -> None:
    """``work --until-idle`` with Redis (or the broker) unreachable, or Redis answering but
    refusing every command (MASTERDOWN), exits 3 within ``startup_timeout_s`` (plus the model
    load), naming the address and how to check the stack."""
    closed = f"127.0.0.1:{free_port()}"
    over: dict = {
        "redis": {"redis_url": f"redis://{closed}/0"},
        "broker": {"kafka_bootstrap_servers": [closed], "kafka_request_timeout_ms": 1000},
        "redis refusing": {"redis_url": server.url},
    }[down]
    where = f"127.0.0.1:{server.port}" if down == "redis refusing" else closed
    settings = fault_settings(stack, demo_model, [audio_root], startup_timeout_s=3.0, **over)
    refusal = REFUSALS["MASTERDOWN"]
    if down == "redis refusing":
        refusal.enter(server)
    try:
        worker = workers.start(settings, f"down-{down.replace(' ', '-')}", until_idle=True)
        rc = worker.wait(120)
    finally:
        if down == "redis refusing":
            refusal.leave(server)
    took = time.monotonic() - worker.started
    last = worker.output.strip().splitlines()[-1]
    name = {"redis": "Redis down", "broker": "Broker down",
            "redis refusing": "Redis refusing (MASTERDOWN)"}[down]
    figures(f"{name} at start, --until-idle", outages=1, exit_code=rc,
            exited_after_s=round(took, 1))
    assert rc == 3, worker.tail()
    assert last.startswith("genretag work: "), worker.tail()
    assert where in last and "is the stack up? `genretag stack status`" in last, last
    if down == "redis refusing":
        assert "MASTERDOWN" in last, last
