"""Fixtures of the faults suite: short clips, a clean reference run, worker pools, and the
figures collector that writes the suite's JSON at the end (sizes: ``tests/faults/config.py``).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from genretag.cli.stack import LocalStack
from genretag.core.store import connect
from tests.faults.config import FULL, REPORT, SEED, SIZES, Sizes
from tests.faults.figures import FiguresCollector
from tests.faults.harness import (
    Reference,
    WorkerPool,
    consistency_problems,
    fault_settings,
    read_state,
    send_tracks,
)

COLLECTOR = FiguresCollector(REPORT, "full" if FULL else "default", SEED)


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return SIZES


@pytest.fixture(scope="session", autouse=True)
def _write_figures() -> Iterator[None]:
    """Write the collected figures once every faults test has run."""
    yield
    COLLECTOR.write()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            status = "xfailed (known bug)" if report.skipped else "xpassed"
        else:
            status = report.outcome
        COLLECTOR.outcome(item.nodeid, status, report.duration)


class Figures:
    """Records one test's figures under a scenario name."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def __call__(self, scenario: str, **values: object) -> None:
        COLLECTOR.record(scenario, self.nodeid, **values)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.nodeid)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Seeded per test, so a failing run replays with GENRETAG_FAULTS_SEED=<seed>."""
    return random.Random(SEED ^ zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerPool]:
    """Worker processes of one test; any left running are SIGKILLed at teardown."""
    pool = WorkerPool(tmp_path)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def fault_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Short synthetic mp3s (2.5 s, 4 genres): fast to decode, longer than the 1 s minimum."""
    from genretag.training.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("fault-audio")
    clips = make_synth_dataset(root, per_class=SIZES.clips_per_genre, seconds=2.5, seed=7,
                               workers=2)
    return [c.path for c in clips]


@pytest.fixture(scope="session")
def audio_root(fault_clips: list[Path]) -> Path:
    return fault_clips[0].parent.parent


@pytest.fixture(scope="session")
def reference(stack: LocalStack, demo_model: Path, fault_clips: list[Path], audio_root: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One clean, fault-free worker run over every clip: the tags every scenario must reproduce."""
    from genretag.core.artifact import read_manifest

    settings = fault_settings(stack, demo_model, [audio_root])
    tracks = {f"ref-{i:03d}": str(p) for i, p in enumerate(fault_clips)}
    send_tracks(settings, tracks)
    pool = WorkerPool(tmp_path_factory.mktemp("reference-logs"))
    try:
        worker = pool.start(settings, "reference", until_idle=True)
        assert worker.wait(240) == 0, worker.tail()
    finally:
        pool.close()
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    assert not consistency_problems(state), consistency_problems(state)
    assert set(state.tracks) == set(tracks), "the clean reference run lost tracks"
    manifest = read_manifest(demo_model)
    return Reference(
        by_uri={tracks[tid]: tags for tid, tags in state.tracks.items()},
        thresholds=dict(manifest.thresholds), version=manifest.version,
    )
