"""A Redis client from the ``redis`` settings section (ACL user/password, TLS via rediss://)."""

from __future__ import annotations

import redis

from genretag.core.settings import RedisSection


def connect(section: RedisSection, encoding_errors: str = "strict",
            socket_timeout_s: float | None = None, binary: bool = False) -> redis.Redis:
    """A client; ``socket_timeout_s`` overrides the section's (short timeouts for probes).

    Readers pass ``encoding_errors="backslashreplace"`` so a value that is not UTF-8 is shown
    escaped instead of crashing the command. ``binary`` replies bytes (the stored vectors).
    """
    timeout = socket_timeout_s or section.socket_timeout_s
    kwargs: dict[str, object] = {
        "encoding_errors": encoding_errors,
        "username": section.username,
        "password": section.password.get_secret_value() if section.password else None,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": not binary,
    }
    if section.url.startswith("rediss://") and section.ssl_ca_certs:
        kwargs["ssl_ca_certs"] = section.ssl_ca_certs
    return redis.Redis.from_url(section.url, **kwargs)
