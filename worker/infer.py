"""Inference: run the TorchScript artifact on window batches and turn probabilities into tags.

The MFCC frontend and the activation are inside the artifact, so the worker only moves
waveform windows to the device. CUDA when available (pinned host memory, non-blocking copies,
optional float16 autocast), CPU otherwise with ``torch_threads`` intra-op threads. A batch with
more windows than ``max_windows_per_call`` runs in chunks, which bounds device memory; on CPU
small chunks are also faster (the TD-CNN runs ~2x more windows/s at 1-8 windows per call than
at 64: its activations stay in cache), so the default chunk depends on the device. On CPU the
loaded module is also frozen and passed through ``torch.jit.optimize_for_inference`` (batch-norm
folded into convolutions, oneDNN kernels): 1.1-1.4x more windows/s, same outputs to ~1e-6.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.logs import get_logger
from schemas import ModelManifest
from core.artifact import load_artifact
from core.audio.windows import average_by_owner, stack_windows
from core.device import pick_device

log = get_logger(__name__)

#: Default windows per model call by device (``max_windows_per_call=0``); see bench/model.py.
AUTO_MAX_WINDOWS = {"cpu": 8, "cuda": 64}


def auto_max_windows(device: torch.device) -> int:
    """Windows per model call that suit ``device``: small on CPU (cache), large on GPU."""
    return AUTO_MAX_WINDOWS.get(device.type, AUTO_MAX_WINDOWS["cuda"])


def optimize_for_cpu(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Freeze ``module`` (weights become constants) and fold/fuse it for CPU inference.

    The result only runs inference (no ``train()``, no ``state_dict`` of the original names), which
    is all the worker asks of it; the file on disk stays device-neutral.
    """
    return torch.jit.optimize_for_inference(torch.jit.freeze(module.eval()))


@dataclass
class Tagger:
    """A loaded model on its device; ``predict`` maps per-track windows to probabilities."""

    module: torch.jit.ScriptModule
    manifest: ModelManifest
    device: torch.device
    half: bool = False
    max_windows_per_call: int = 64

    @classmethod
    def load(
        cls, path: Path, device: str = "auto", torch_threads: int = 0, *, half: bool = False,
        max_windows_per_call: int = 0, warmup: bool = True, optimize: bool = True,
    ) -> Tagger:
        """Load and verify the artifact (manifest sha256) on the chosen device, then warm it up.

        ``torch_threads=0`` keeps torch's default; ``max_windows_per_call=0`` picks
        :func:`auto_max_windows` for the device; ``optimize`` applies
        :func:`optimize_for_cpu` on CPU (after the checksum was verified on the file's weights).
        """
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        dev = pick_device(device)
        module, manifest = load_artifact(path, map_location=dev)
        optimized = optimize and dev.type == "cpu"
        if optimized:
            module = optimize_for_cpu(module)
        tagger = cls(module=module, manifest=manifest, device=dev,
                     half=half and dev.type == "cuda",
                     max_windows_per_call=max_windows_per_call or auto_max_windows(dev))
        if warmup:
            tagger.warmup()
        log.info(
            "model.loaded",
            extra={"path": str(path), "version": manifest.version, "device": str(dev),
                   "half": tagger.half, "optimized": optimized,
                   "torch_threads": torch.get_num_threads(),
                   "max_windows_per_call": tagger.max_windows_per_call,
                   "labels": len(manifest.labels), "sha256": manifest.sha256},
        )
        return tagger

    def warmup(self, calls: int = 2) -> None:
        """Run silent windows through the model so the first real batch pays no JIT profiling."""
        zeros = np.zeros((1, self.manifest.clip_samples), dtype=np.float32)
        for _ in range(calls):
            self.predict([zeros])

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.half:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def predict(self, per_track_windows: list[np.ndarray]) -> np.ndarray:
        """``[(n_i, clip_samples)]`` → ``(n_tracks, n_labels)`` probabilities (windows averaged)."""
        if not per_track_windows:
            return np.zeros((0, len(self.manifest.labels)), dtype=np.float32)
        windows, owner = stack_windows(per_track_windows)
        with torch.inference_mode():
            probs = self._run(windows)
            return average_by_owner(probs, owner, len(per_track_windows)).cpu().numpy()

    def predict_windows(self, per_track_windows: list[np.ndarray]) -> list[np.ndarray]:
        """``[(n_i, clip_samples)]`` → ``[(n_i, n_labels)]``: every window's probabilities, per
        track (for the timeline and for aggregations other than the plain mean)."""
        if not per_track_windows:
            return []
        windows, _ = stack_windows(per_track_windows)
        with torch.inference_mode():
            probs = self._run(windows).cpu().numpy()
        bounds = np.cumsum([0] + [len(w) for w in per_track_windows])
        return [probs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _run(self, windows: torch.Tensor) -> torch.Tensor:
        """The model on ``windows`` in chunks of ``max_windows_per_call`` (inference mode on)."""
        cuda = self.device.type == "cuda"
        with self._autocast():
            outputs = []
            for chunk in windows.split(self.max_windows_per_call):
                if cuda:
                    chunk = chunk.pin_memory().to(self.device, non_blocking=True)
                outputs.append(self.module(chunk).float())
            return torch.cat(outputs)

    def labels_over_threshold(self, probs: np.ndarray) -> list[str]:
        """Labels whose probability reaches their threshold, most probable first."""
        labels = self.manifest.labels
        chosen = [
            (float(p), label)
            for label, p in zip(labels, probs, strict=True)
            if p >= self.manifest.thresholds[label]
        ]
        return [label for _, label in sorted(chosen, key=lambda x: (-x[0], x[1]))]
