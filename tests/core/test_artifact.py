"""The model artifact: export → load round trip, checksum, and a torch-only consumer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genretag.core.artifact import ArtifactError, load_artifact, save_artifact, weights_sha256


def test_round_trip_equals_eager_and_manifest_is_embedded(demo_model: Path) -> None:
    module, manifest = load_artifact(demo_model)
    assert manifest.version == "test-1"
    assert manifest.labels == ["ambient", "chiptune", "noise", "techno"]
    assert manifest.frontend.chunk_frames == 32
    assert set(manifest.thresholds) == set(manifest.labels)
    assert manifest.metrics["test_accuracy"] >= 0.75
    wave = torch.randn(2, manifest.clip_samples) * 0.1
    with torch.inference_mode():
        probs = module(wave)
    assert probs.shape == (2, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2), atol=1e-5, rtol=0)


def test_tampered_weights_fail_the_checksum(demo_model: Path, tmp_path: Path) -> None:
    module, manifest = load_artifact(demo_model)
    with torch.no_grad():
        next(module.parameters()).add_(0.01)
    with pytest.raises(ArtifactError, match="does not match"):
        save_artifact(module, manifest, tmp_path / "x.pt")
    # Write it anyway (bypassing the guard) to prove the loader catches it too.
    torch.jit.save(module, str(tmp_path / "x.pt"),
                   _extra_files={"manifest.json": manifest.model_dump_json()})
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(tmp_path / "x.pt")
    assert weights_sha256(module) != manifest.sha256


def test_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="not a TorchScript"):
        load_artifact(tmp_path / "junk.pt")
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "missing.pt")


def test_loads_in_a_process_that_imports_only_torch(demo_model: Path) -> None:
    code = (
        "import sys, json, torch\n"
        "extra = {'manifest.json': ''}\n"
        f"m = torch.jit.load({str(demo_model)!r}, _extra_files=extra)\n"
        "man = json.loads(extra['manifest.json'])\n"
        "p = m(torch.zeros(1, int(man['sample_rate'] * man['clip_seconds'])))\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('torchaudio', 'genretag')]\n"
        "print(json.dumps({'shape': list(p.shape), 'bad': bad}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"shape": [1, 4], "bad": []}


@pytest.mark.heavy  # a subprocess or external tools
def test_worker_does_not_import_training() -> None:
    code = "import sys, genretag.worker.loop, genretag.worker.cli; print([m for m in sys.modules if m.startswith('genretag.training')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
