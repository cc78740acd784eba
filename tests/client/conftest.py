"""A real redis-server for the client's tests (no broker: the client never talks to Kafka)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from genretag.cli.stack import LocalStack


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stack = LocalStack(tmp_path_factory.mktemp("client-redis"))
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    stack.start_redis()
    try:
        yield stack.redis_url
    finally:
        stack.stop_service("redis")


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own per test."""
    return f"c{uuid.uuid4().hex[:8]}:"
