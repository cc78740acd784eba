"""Inference: run the TorchScript artifact on window batches and turn probabilities into tags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genretag.logs import get_logger
from schemas import ModelManifest
from worker.artifact import load_artifact
from worker.batch import average_by_owner, stack_windows

log = get_logger(__name__)


def pick_device(requested: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is a clear error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but CUDA is not available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass
class Tagger:
    """A loaded model on its device; ``predict`` maps per-track windows to probabilities."""

    module: torch.jit.ScriptModule
    manifest: ModelManifest
    device: torch.device

    @classmethod
    def load(cls, path: Path, device: str = "auto", torch_threads: int = 0) -> Tagger:
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        dev = pick_device(device)
        module, manifest = load_artifact(path, map_location=dev)
        log.info(
            "model.loaded",
            extra={"path": str(path), "version": manifest.version, "device": str(dev),
                   "labels": len(manifest.labels), "sha256": manifest.sha256},
        )
        return cls(module=module, manifest=manifest, device=dev)

    def predict(self, per_track_windows: list[np.ndarray]) -> np.ndarray:
        """``[(n_i, clip_samples)]`` → ``(n_tracks, n_labels)`` probabilities (windows averaged)."""
        if not per_track_windows:
            return np.zeros((0, len(self.manifest.labels)), dtype=np.float32)
        windows, owner = stack_windows(per_track_windows)
        with torch.inference_mode():
            if self.device.type == "cuda":
                windows = windows.pin_memory().to(self.device, non_blocking=True)
            probs = self.module(windows).float()
            return average_by_owner(probs, owner, len(per_track_windows)).cpu().numpy()

    def labels_over_threshold(self, probs: np.ndarray) -> list[str]:
        """Labels whose probability reaches their threshold, most probable first."""
        labels = self.manifest.labels
        chosen = [
            (float(p), label)
            for label, p in zip(labels, probs, strict=True)
            if p >= self.manifest.thresholds[label]
        ]
        return [label for _, label in sorted(chosen, key=lambda x: (-x[0], x[1]))]
