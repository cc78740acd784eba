"""The benchmark's inputs, built once into a cache dir: a corpus of real mp3s and a model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from genretag.core.logs import get_logger

log = get_logger(__name__)

DEFAULT_CACHE = Path("data/bench")
DEMO_MODEL = Path("models/demo.pt")


@dataclass(frozen=True)
class Corpus:
    """Clip paths (stereo 44.1 kHz 128 kbps mp3s, like FMA clips) and how they were made."""

    root: Path
    paths: list[Path]
    seconds: float
    build_s: float


def make_corpus(cache: Path, per_class: int, seconds: float) -> Corpus:
    """``4 × per_class`` synthetic clips of ``seconds`` under ``cache``; reused when present."""
    from genretag.training.synth import make_synth_dataset

    root = (Path(cache) / f"corpus-{seconds:g}s").resolve()
    started = time.monotonic()
    clips = make_synth_dataset(root, per_class=per_class, seconds=seconds, seed=7, workers=2)
    build_s = time.monotonic() - started
    log.info("bench.corpus", extra={"root": str(root), "clips": len(clips), "build_s": build_s})
    return Corpus(root=root, paths=[c.path for c in clips], seconds=seconds, build_s=build_s)


def ensure_model(cache: Path, model: Path | None = None) -> tuple[Path, str]:
    """The model to serve: ``model``, else models/demo.pt, else a tiny one trained into ``cache``."""
    if model is not None:
        return Path(model).resolve(), "given"
    if DEMO_MODEL.is_file():
        return DEMO_MODEL.resolve(), "models/demo.pt"
    out = (Path(cache) / "model" / "bench.pt").resolve()
    if out.is_file():
        return out, "cached"
    from genretag.schemas import FrontendParams
    from genretag.training.synth import make_synth_dataset
    from genretag.training.train import TrainConfig, train_and_export

    items = make_synth_dataset(Path(cache) / "train-6s", per_class=6, seconds=6.0, seed=3, workers=2)
    cfg = TrainConfig(clip_seconds=6.0, frontend=FrontendParams(chunk_frames=32),
                      channels=(16, 32, 64), epochs=3, batch_size=8, device="cpu",
                      version="bench-1", dataset="synthetic-bench", decode_workers=2)
    train_and_export(items, cfg, out)
    return out, "trained"


#: The corpus's sample rate (:func:`make_corpus`'s mp3s): a null model at this rate makes the
#: decoder processes downmix only, never resample.
CORPUS_RATE = 44100


def ensure_null_model(cache: Path, like: Path, sample_rate: int | None = None) -> Path:
    """An artifact with ``like``'s manifest whose module does no work (see :func:`null_module`).

    Serving it measures the host-side pipeline alone (Kafka, FFmpeg, windowing, Redis): the
    most a worker can reach on these cores once the frontend and model cost nothing on them,
    as on a GPU. With ``sample_rate`` (e.g. :data:`CORPUS_RATE`) the manifest asks for that rate
    instead: the host side left if the resampler, too, ran on the device. Rebuilt only when
    ``like`` changes.
    """
    from genretag.core.artifact import read_manifest, save_artifact, weights_sha256

    manifest = read_manifest(like)
    rate = sample_rate or manifest.sample_rate
    suffix = "" if rate == manifest.sample_rate else f"-{rate}hz"
    out = (Path(cache) / "model" / f"null-{manifest.sha256[:12]}{suffix}.pt").resolve()
    if out.is_file():
        return out
    module = null_module(len(manifest.labels))
    null_manifest = manifest.model_copy(update={"version": f"null-of-{manifest.version}{suffix}",
                                                "sample_rate": rate,
                                                "sha256": weights_sha256(module),
                                                # tags only (schema 1): it has no embedding
                                                "schema_version": 1, "embedding": None})
    return save_artifact(module, null_manifest, out)


def null_module(n_labels: int):
    """TorchScript ``(B, samples) → (B, n_labels)`` of 0.5: an artifact's contract, no compute."""
    import torch

    class NullModel(torch.nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            return torch.full((wave.shape[0], self.n), 0.5, dtype=wave.dtype, device=wave.device)

    return torch.jit.script(NullModel(n_labels))
