"""Counts of one worker run (printed by ``genretag work`` when it exits)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WorkerStats:
    """Counts of one run (also printed by ``genretag work`` when it exits)."""

    tagged: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits: int = 0
    commit_failures: int = 0
    retries: int = 0
    dropped: int = 0
    abandoned: int = 0
    max_inflight: int = 0
    longest_batch_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
