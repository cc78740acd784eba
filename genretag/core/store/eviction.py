"""Redis that may evict keys: refused at start, and evictions noticed afterwards.

A Redis set up as a cache (``maxmemory-policy allkeys-lru``, ``allkeys-lfu``,
``allkeys-random``) drops any key under memory pressure, committed tags included, and says
nothing. The tag store never sets a TTL, so the ``volatile-*`` policies never pick its keys
(like ``noeviction``, a full Redis then refuses writes, which the worker retries).
"""

from __future__ import annotations

import time

import redis
import redis.exceptions

from genretag.core.errors import FatalError
from genretag.core.logs import get_logger
from genretag.core.settings import RedisSection

log = get_logger(__name__)

#: Policies under which Redis may evict keys that have no TTL (all of ours).
EVICTING_POLICIES = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})
#: Seconds between two looks at ``INFO stats`` (one round trip; cheap, but not per batch).
EVICTION_CHECK_S = 5.0


class EvictingRedis(FatalError):
    """Redis may evict the keys we commit: tags would vanish silently."""

    exit_code = 3  # Redis is not usable for us, as with credentials and ACLs


def check_eviction_policy(client: redis.Redis, section: RedisSection) -> str | None:
    """The server's ``maxmemory-policy``; raises :class:`EvictingRedis` for a policy that can
    evict our keys unless ``redis_allow_eviction`` is set. None (logged) when the server will
    not say: ``CONFIG`` refused by an ACL, or renamed away."""
    try:
        reply = client.config_get("maxmemory-policy")
    except (redis.exceptions.NoPermissionError, redis.exceptions.ResponseError) as exc:
        log.warning("store.eviction_policy_unknown", extra={
            "url": section.url, "why": f"{type(exc).__name__}: {str(exc)[:200]}",
            "consequence": "cannot tell whether Redis may evict tags; going on"})
        return None
    policy = str(reply.get("maxmemory-policy") or "") or None
    if policy in EVICTING_POLICIES:
        if not section.allow_eviction:
            raise EvictingRedis(
                f"Redis at {section.url} may evict committed tags (maxmemory-policy {policy}): "
                "set maxmemory-policy noeviction on the server, or "
                "GENRETAG_REDIS_ALLOW_EVICTION=true (--redis-allow-eviction) to run anyway")
        log.warning("store.eviction_allowed", extra={"url": section.url, "policy": policy})
    return policy


class EvictionWatch:
    """Counts keys Redis evicted (``INFO stats`` ``evicted_keys``, server-wide) since the last
    look, looking at most every ``interval_s``; off for good if ``INFO`` is refused."""

    def __init__(self, client: redis.Redis, interval_s: float = EVICTION_CHECK_S) -> None:
        self.client = client
        self.interval_s = interval_s
        self.next_at = 0.0
        self.enabled = True
        self.seen = self._evicted()

    def _evicted(self) -> int | None:
        try:
            return int(self.client.info("stats").get("evicted_keys", 0))
        except (redis.exceptions.NoPermissionError, redis.exceptions.ResponseError) as exc:
            if self.enabled:
                log.warning("store.eviction_watch_off", extra={"why": str(exc)[:200]})
            self.enabled = False
            return None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return None  # down for now: the writes retry; look again next time

    def new_evictions(self) -> int:
        """Keys evicted since the last look (0 when it is not time to look yet)."""
        now = time.monotonic()
        if not self.enabled or now < self.next_at:
            return 0
        self.next_at = now + self.interval_s
        count = self._evicted()
        if count is None:
            return 0
        if self.seen is None or count < self.seen:  # first look, or the server restarted
            self.seen = count
            return 0
        new, self.seen = count - self.seen, count
        return new
