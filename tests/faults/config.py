"""Sizes and switches of the faults suite, read from the environment once at import.

``GENRETAG_FAULTS_FULL=1`` selects the published sizes (``scripts/faults.sh``);
``GENRETAG_FAULTS_SEED`` replays a run's random kill points; ``GENRETAG_FAULTS_REPORT`` is where
the figures go (default ``build/faults.json``). Read at import, before the per-test fixture of
``tests/conftest.py`` clears ``GENRETAG_*`` variables.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("GENRETAG_FAULTS_FULL", "") == "1"
SEED = int(os.environ.get("GENRETAG_FAULTS_SEED") or time.time_ns() % 1_000_000)
REPORT = Path(os.environ.get("GENRETAG_FAULTS_REPORT") or REPO_ROOT / "build" / "faults.json")


@dataclass(frozen=True)
class Sizes:
    """How hard each scenario pushes: small for CI, the published figures with FULL."""

    crash_tracks: int
    crash_kills: int
    takeover_tracks: int
    outage_tracks: int
    redis_outage_s: float
    broker_tracks: int
    clips_per_genre: int
    test_timeout_s: int


SIZES = (
    Sizes(crash_tracks=300, crash_kills=20, takeover_tracks=200, outage_tracks=200,
          redis_outage_s=30.0, broker_tracks=60, clips_per_genre=10, test_timeout_s=1800)
    if FULL else
    Sizes(crash_tracks=60, crash_kills=5, takeover_tracks=40, outage_tracks=40,
          redis_outage_s=8.0, broker_tracks=12, clips_per_genre=4, test_timeout_s=600)
)
