"""Artifacts that disagree with themselves are refused at load, before any track meets them.

Before, an artifact whose manifest listed one label more than the model outputs (weights
untouched, so the checksum passed) loaded fine, and then every track was dead-lettered
``internal`` and committed: a service drained its whole topic into the DLQ. An artifact giving
NaN for every input did the same. Now the worker exits 1 with one line, nothing consumed.
Servers: the shared session stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genretag.core.artifact import load_artifact, save_artifact, weights_sha256
from genretag.core.store import connect
from tests.faults.config import SIZES
from tests.faults.harness import fault_settings, read_state, send_tracks
from tests.integration.helpers import committed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]


class Scaled(torch.nn.Module):
    """The demo model's output times a constant (NaN: every output NaN; 5: not probabilities)."""

    def __init__(self, inner: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.inner = inner
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def bad_artifacts(demo_model: Path, out: Path) -> dict[str, tuple[Path, str]]:
    """name → (artifact, what the refusal must say)."""
    module, manifest = load_artifact(demo_model)
    made: dict[str, tuple[Path, str]] = {}
    extra = manifest.model_copy(update={
        "labels": [*manifest.labels, "polka"],
        "thresholds": {**manifest.thresholds, "polka": 0.5}})
    made["manifest lists one label more than the model outputs"] = (
        save_artifact(module, extra, out / "extra-label.pt"), "manifest lists")
    for name, factor, says in (("model returns NaN for every input", float("nan"), "non-finite"),
                               ("model returns values above 1 (no activation)", 5.0,
                                "not probabilities")):
        scripted = torch.jit.script(Scaled(module, factor))
        fixed = manifest.model_copy(update={"sha256": weights_sha256(scripted)})
        made[name] = (save_artifact(scripted, fixed, out / f"{says.replace(' ', '-')}.pt"), says)
    return made


def test_an_artifact_that_disagrees_with_itself_is_refused_at_load(
    stack, demo_model, fault_clips, audio_root, workers, tmp_path, figures
) -> None:
    cases = bad_artifacts(demo_model, tmp_path)
    results = {}
    for name, (artifact, says) in cases.items():
        settings = fault_settings(stack, artifact, [audio_root])
        tracks = {f"art-{i}": str(p) for i, p in enumerate(fault_clips[:3])}
        send_tracks(settings, tracks)
        worker = workers.start(settings, "artifact", until_idle=True)
        rc = worker.wait(240)
        state = read_state(connect(settings.redis), settings.redis.key_prefix)
        lines = [line for line in worker.lines if line.startswith("genretag work:")]
        results[name] = dict(rc=rc, lines=lines, says=says, consumed=committed(settings),
                             dead=len(state.dlq), tagged=len(state.tracks), tail=worker.tail())
    figures("artifacts that disagree with themselves", bad_inputs=len(cases), tracks=3 * len(cases),
            lost=sum(len(r["consumed"]) for r in results.values()),
            cases=[{"name": name, "expected": ["refused at load (exit 1)"],
                    "got": f"exit {r['rc']}" + (" refused at load" if r["lines"] else "")}
                   for name, r in results.items()])
    for name, r in results.items():
        assert r["rc"] == 1, (name, r["tail"])
        assert len(r["lines"]) == 1 and r["says"] in r["lines"][0], (name, r["lines"], r["tail"])
        assert not r["consumed"] and not r["dead"] and not r["tagged"], (name, r)
