"""Shared fixtures: the real local stack (Tansu + redis-server), demo audio and a trained model.

Everything heavy is session-scoped and built once; every server is stopped at the end.

Test tiers: a test is ``unit`` (``make test-unit``) unless it is ``integration`` or ``slow``,
is marked ``heavy`` (it spawns FFmpeg, decoder or tool processes, runs TensorFlow or trains a
model), or asks for a
fixture that starts servers, encodes audio or trains a model (:data:`HEAVY_FIXTURES`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genretag.core.settings import load_settings
from genretag.worker.settings import WorkerSettings
from genretag.cli.stack import LocalStack


#: Fixtures that start servers, encode audio or train a model: a test using one is not unit.
HEAVY_FIXTURES = frozenset({"stack", "demo_audio", "demo_model", "worker_settings",
                            "fault_clips", "reference", "musicnn_wheel"})
HEAVY_MARKERS = ("integration", "slow", "heavy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the fast tier (``-m unit``): no stack, no training, no FFmpeg or decoder process."""
    for item in items:
        if any(item.get_closest_marker(m) for m in HEAVY_MARKERS):
            continue
        if HEAVY_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Tansu + redis-server on free loopback ports for the whole session."""
    with LocalStack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def demo_audio(tmp_path_factory: pytest.TempPathFactory):
    """Synthetic labelled mp3s (4 classes × 12 clips, 8 s) in the folder-per-label layout."""
    from genretag.training.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("audio")
    return make_synth_dataset(root / "demo", per_class=12, seconds=8.0, seed=1)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory, demo_audio) -> Path:
    """A small TD-CNN trained on ``demo_audio`` and exported as the serving artifact."""
    from genretag.schemas import FrontendParams
    from genretag.training.train import TrainConfig, train_and_export

    out = tmp_path_factory.mktemp("model") / "demo.pt"
    cfg = TrainConfig(
        clip_seconds=6.0, frontend=FrontendParams(chunk_frames=32), channels=(16, 32, 64),
        epochs=10, batch_size=8, lr=3e-3, seed=0, device="cpu", version="test-1",
        dataset="synthetic-test",
    )
    report = train_and_export(demo_audio, cfg, out)
    assert report.test["accuracy"] >= 0.75, report.test
    return out


@pytest.fixture
def worker_settings(stack: LocalStack, demo_model: Path, tmp_path: Path):
    """Settings for one isolated run: fresh topics, group and key prefix per test."""

    def make(**overrides) -> WorkerSettings:
        run = uuid.uuid4().hex[:8]
        base = dict(
            kafka_bootstrap_servers=stack.bootstrap, redis_url=stack.redis_url,
            kafka_topic=f"tracks-{run}", kafka_dlq_topic=f"dlq-{run}", group_id=f"g-{run}",
            redis_key_prefix=f"t{run}:", model_path=str(demo_model),
            allowed_roots=[str(tmp_path), "/tmp"], idle_exit_s=3.0, decode_workers=2,
            batch_max_wait_ms=100, device="cpu",
        )
        base.update(overrides)
        return load_settings(WorkerSettings, **base)

    return make


@pytest.fixture(autouse=True)
def _isolated_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's .genretag/ stack file."""
    monkeypatch.setenv("GENRETAG_STATE_DIR", str(tmp_path / "state"))
    for key in list(os.environ):
        if key.startswith("GENRETAG_") and key not in ("GENRETAG_STATE_DIR", "GENRETAG_TANSU_BIN"):
            monkeypatch.delenv(key, raising=False)
