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
    """The demo model's output times a constant (NaN: every output NaN; 5: not probabilities);
    ``embedding_scale``/``embedding_cut`` spoil its contract-v2 embedding instead (NaN, or
    fewer values than the manifest's size). The artifact keeps every method v2 asks for."""

    def __init__(self, inner: torch.nn.Module, factor: float = 1.0,
                 embedding_scale: float = 1.0, embedding_cut: int = 0) -> None:
        super().__init__()
        self.inner = inner
        self.factor = factor
        self.embedding_scale = embedding_scale
        self.embedding_cut = embedding_cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner.embed(x) * self.embedding_scale
        return z[:, : z.shape[1] - self.embedding_cut]

    @torch.jit.export
    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.head(z) * self.factor

    @torch.jit.export
    def tag(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, z = self.inner.tag(x)
        z = z * self.embedding_scale
        return probs * self.factor, z[:, : z.shape[1] - self.embedding_cut]


def bad_artifacts(demo_model: Path, out: Path) -> dict[str, tuple[Path, str]]:
    """name → (artifact, what the refusal must say)."""
    module, manifest = load_artifact(demo_model)
    made: dict[str, tuple[Path, str]] = {}
    extra = manifest.model_copy(update={
        "labels": [*manifest.labels, "polka"],
        "thresholds": {**manifest.thresholds, "polka": 0.5}})
    made["manifest lists one label more than the model outputs"] = (
        save_artifact(module, extra, out / "extra-label.pt"), "manifest lists")
    nan = float("nan")
    for name, bug, says in (
            ("model returns NaN for every input", dict(factor=nan), "non-finite outputs"),
            ("model returns values above 1 (no activation)", dict(factor=5.0),
             "not probabilities"),
            ("model's embedding is NaN", dict(embedding_scale=nan), "embedding is (2, "),
            ("model's embedding is shorter than its manifest says", dict(embedding_cut=1),
             "promises")):
        if "embedding" in name and manifest.embedding is None:
            continue  # a schema-1 demo model has no embedding to spoil
        scripted = torch.jit.script(Scaled(module, **bug))
        fixed = manifest.model_copy(update={"sha256": weights_sha256(scripted)})
        file = out / f"{name.replace(' ', '-').replace(chr(39), '')}.pt"
        made[name] = (save_artifact(scripted, fixed, file), says)
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
