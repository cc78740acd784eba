"""A Redis that may evict committed tags (``maxmemory-policy allkeys-lru``, a cache's usual
setting): the worker refuses it at start with one line naming the setting to change; with
``GENRETAG_REDIS_ALLOW_EVICTION`` it runs, and evictions that happen later are an error log
line and a metric. Before, another tenant writing 8 MB evicted every committed track hash
with no word at start or after.

Servers: the shared Tansu; a redis-server of this test's own (its memory policy changes).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from genretag.cli.stack import free_port, redis_binary
from genretag.core.store import connect
from tests.faults.config import SIZES
from tests.faults.harness import (
    all_committed,
    end_offsets_of,
    fault_settings,
    read_state,
    send_tracks,
    wait_until,
)
from tests.integration.helpers import committed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]


@pytest.fixture
def cache_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server set up as a cache: 8 MB, allkeys-lru; a user without CONFIG too."""
    port = free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--maxmemory", "8mb",
         "--maxmemory-policy", "allkeys-lru"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        wait_until(lambda: _pings(client), 30, "the cache redis-server")
        client.acl_setuser("noconfig", enabled=True, passwords=["+pw"], keys=["*"],
                           channels=["*"], commands=["+@all", "-config"])
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def committed_ids(settings, coords: dict[str, tuple[int, int]]) -> set[str]:
    """Track ids the refused worker committed without writing them (lost; must be none)."""
    done = committed(settings)
    return {t for t, (p, o) in coords.items() if done.get(p, 0) > o}


def fill_as_another_tenant(url: str, megabytes: int) -> None:
    client = redis.Redis.from_url(url)
    try:
        blob = b"x" * (64 * 1024)
        for i in range(megabytes * 16):
            client.set(f"tenant:{i}", blob)
    finally:
        client.close()


def test_an_evicting_redis_is_refused_at_start_and_evictions_are_reported(
    stack, demo_model, fault_clips, audio_root, workers, cache_redis, figures
) -> None:
    # 1. refused at start: one line naming the setting, exit 3, nothing consumed
    settings = fault_settings(stack, demo_model, [audio_root], redis_url=cache_redis)
    tracks = {f"ev-{i}": str(p) for i, p in enumerate(fault_clips[:4])}
    coords = send_tracks(settings, tracks)
    started = time.monotonic()
    refused = workers.start(settings, "refused", until_idle=True)
    rc_refused = refused.wait(120)
    refused_after = time.monotonic() - started
    said = [line for line in refused.lines if "maxmemory-policy allkeys-lru" in line]

    # 2. a user that may not run CONFIG: the worker says it cannot tell, and goes on
    blind = settings.updated(redis_username="noconfig", redis_password="pw",
                             group_id=settings.consumer.group_id + "-blind")
    blind_worker = workers.start(blind, "blind", until_idle=True)
    rc_blind = blind_worker.wait(300)
    unknown = blind_worker.count("store.eviction_policy_unknown")

    # 3. allowed: runs; a tenant's 12 MB evicts committed tags; the worker says so
    allowed = settings.updated(redis_allow_eviction=True,
                               group_id=settings.consumer.group_id + "-allowed")
    worker = workers.start(allowed, "allowed")
    wait_until(lambda: all_committed(allowed, end_offsets_of(list(coords.values())))
               or not worker.alive(), 300, "the first tracks committed", diagnose=worker.tail)
    fill_as_another_tenant(cache_redis, 12)
    time.sleep(5.5)  # the eviction watch looks at most every 5 s
    later = {f"ev-later-{i}": str(p) for i, p in enumerate(fault_clips[4:6])}
    more = send_tracks(allowed, later)
    wait_until(lambda: all_committed(allowed, end_offsets_of(list(more.values())))
               or not worker.alive(), 300, "the later tracks committed", diagnose=worker.tail)
    wait_until(lambda: worker.count("worker.redis_evicted_keys") > 0 or not worker.alive(), 30,
               "the eviction report", diagnose=worker.tail)
    reports = worker.events_named("worker.redis_evicted_keys")
    worker.signal(15)
    rc_allowed = worker.wait(60)
    state = read_state(connect(allowed.redis), allowed.redis.key_prefix)

    figures("Redis that evicts keys (maxmemory-policy allkeys-lru)", bad_inputs=1,
            tracks=len(tracks), lost=len(committed_ids(settings, coords)),
            refused_exit_code=rc_refused,
            refused_after_s=round(refused_after, 1), config_refused_worker_exit_code=rc_blind,
            evictions_reported=sum(e.get("evicted", 0) for e in reports),
            track_hashes_left_with_eviction_allowed=len(state.tracks))
    assert rc_refused == 3, refused.tail()
    assert len(said) == 1 and "GENRETAG_REDIS_ALLOW_EVICTION" in said[0], refused.tail()
    assert refused.count("core.audio.windows") == 0 and not committed(settings), refused.tail()
    assert rc_blind == 0 and unknown == 1, blind_worker.tail()
    assert worker.count("store.eviction_allowed") == 1, worker.tail()
    assert reports and all(e["evicted"] > 0 for e in reports), worker.tail()
    assert rc_allowed == 0, worker.tail()
