"""Inference: run the TorchScript artifact on window batches and turn probabilities into tags.

The MFCC frontend and the activation are inside the artifact, so the worker only moves
waveform windows to the device. CUDA when available (pinned host memory, non-blocking copies,
optional float16 autocast), CPU otherwise with ``torch_threads`` intra-op threads. A batch with
more windows than ``max_windows_per_call`` runs in chunks, which bounds device memory.

On CPU the chunk size comes from a measured curve (:func:`measure_call_curve`, at load): the
rate of windows/s falls off a cliff once a call's frontend intermediates outgrow the last-level
cache (a 6 s window's complex STFT, magnitude and power are ~4 MB, so 8 windows are ~35 MB
against a 32 MB L3; the profiler shows the per-window time of ``abs``, ``mul`` and the FFT
rising there, not the convolutions). TorchScript's profiling executor is not the cause: the
optimised graph holds no shape guards or fallback, so other batch sizes reuse it. On CPU the
loaded module is also frozen and passed through ``torch.jit.optimize_for_inference``
(batch-norm folded into convolutions, oneDNN kernels): same outputs to ~1e-6.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from genretag.core.logs import get_logger
from genretag.schemas import ModelManifest
from genretag.core.artifact import EMBEDDING_METHODS, ArtifactError, load_artifact
from genretag.core.audio.windows import average_by_owner, stack_windows
from genretag.core.device import pick_device
from genretag.worker.settings import ModelSection

log = get_logger(__name__)

#: Windows per model call without a measurement (``calibrate=False``), by device.
AUTO_MAX_WINDOWS = {"cpu": 4, "cuda": 64}
#: Call sizes tried on CPU, and how close to the best rate a bigger size may be to win.
CALL_SIZES = (1, 2, 4, 8, 16)
CALL_SIZE_TOLERANCE = 0.05
#: How far outside [0, 1] a probability may stray (float16 and fused kernels round).
PROBABILITY_SLACK = 1e-3
#: Most seconds the call-size measurement may add to a worker's start-up.
CALIBRATION_BUDGET_S = 2.0


def auto_max_windows(device: torch.device) -> int:
    """Windows per model call that suit ``device`` when nothing was measured."""
    return AUTO_MAX_WINDOWS.get(device.type, AUTO_MAX_WINDOWS["cuda"])


def measure_call_curve(module, clip_samples: int, sizes: tuple[int, ...] = CALL_SIZES,
                       min_s: float = 0.02, passes: int = 2,
                       budget_s: float = CALIBRATION_BUDGET_S,
                       warmup_calls: int = 2) -> dict[int, float]:
    """windows/s of ``module`` per call size on CPU (best of ``passes`` interleaved passes).

    First ``warmup_calls`` calls outside the clock and the budget: TorchScript profiles the
    first call and optimises on the second (0.1-1 s for the pretrained models), which is no
    size's rate and used to eat the whole budget on size 1. Then each size is warmed up by one
    call and timed over at least 2 calls and ``min_s``. Sizes are tried smallest first and the
    measurement stops after ``budget_s`` (a busy or slow machine measures fewer sizes).
    """
    gen = torch.Generator().manual_seed(0)
    best: dict[int, float] = {}
    with torch.inference_mode():
        for _ in range(warmup_calls):
            module(torch.zeros(sizes[0], clip_samples))
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(passes):
            for n in sizes:
                if time.perf_counter() - started > budget_s:
                    return best
                x = torch.randn(n, clip_samples, generator=gen) * 0.1
                if n not in best:
                    module(x)
                calls: list[float] = []
                t0 = time.perf_counter()
                while len(calls) < 2 or time.perf_counter() - t0 < min_s:
                    t = time.perf_counter()
                    module(x)
                    calls.append(time.perf_counter() - t)
                best[n] = max(best.get(n, 0.0), n / statistics.median(calls))
    return best


def pick_call_size(curve: dict[int, float], tolerance: float = CALL_SIZE_TOLERANCE) -> int:
    """The largest call size whose rate is within ``tolerance`` of the best one measured."""
    top = max(curve.values())
    return max(n for n, rate in curve.items() if rate >= (1 - tolerance) * top)


def optimize_for_cpu(module: torch.jit.ScriptModule,
                     methods: tuple[str, ...] = ()) -> torch.jit.ScriptModule:
    """Freeze ``module`` (weights become constants) and fold/fuse it for CPU inference, keeping
    the exported ``methods`` besides ``forward`` (contract v2's ``tag``, ``embed``, ``head``).

    The result only runs inference (no ``train()``, no ``state_dict`` of the original names), which
    is all the worker asks of it; the file on disk stays device-neutral.
    """
    frozen = torch.jit.freeze(module.eval(), preserved_attrs=list(methods))
    return torch.jit.optimize_for_inference(frozen, other_methods=list(methods) or None)


@dataclass
class Tagger:
    """A loaded model on its device; ``predict`` maps per-track windows to probabilities."""

    module: torch.jit.ScriptModule
    manifest: ModelManifest
    device: torch.device
    half: bool
    max_windows_per_call: int
    call_curve: dict[int, float] = field(default_factory=dict)

    @classmethod
    def load(cls, model: ModelSection, *, warmup: bool = True, calibrate: bool = True) -> Tagger:
        """Load and verify the artifact ``model.path`` (manifest sha256) on the chosen device,
        then warm it up.

        ``torch_threads=0`` keeps torch's default; ``max_windows_per_call=0`` sizes calls from
        :func:`measure_call_curve` on CPU (``calibrate``, ≤ 2 s at load) or else
        :func:`auto_max_windows`; ``optimize`` applies :func:`optimize_for_cpu` on CPU (after the
        checksum was verified on the file's weights).
        """
        if model.torch_threads > 0:
            torch.set_num_threads(model.torch_threads)
        dev = pick_device(model.device)
        module, manifest = load_artifact(model.path, map_location=dev)
        optimized = model.optimize and dev.type == "cpu"
        if optimized:
            module = optimize_for_cpu(module, EMBEDDING_METHODS if manifest.embedding else ())
        curve: dict[int, float] = {}
        per_call = model.max_windows_per_call
        if not per_call and calibrate and dev.type == "cpu":
            curve = measure_call_curve(module, manifest.clip_samples)
        tagger = cls(module=module, manifest=manifest, device=dev,
                     half=model.half_precision and dev.type == "cuda",
                     max_windows_per_call=per_call or (
                         pick_call_size(curve) if curve else auto_max_windows(dev)),
                     call_curve={n: round(r, 1) for n, r in curve.items()})
        tagger.check_outputs(model.path)
        if warmup:
            tagger.warmup()
        log.info(
            "model.loaded",
            extra={"path": str(model.path), "version": manifest.version, "device": str(dev),
                   "half": tagger.half, "optimized": optimized,
                   "torch_threads": torch.get_num_threads(),
                   "max_windows_per_call": tagger.max_windows_per_call,
                   "call_curve_windows_per_s": tagger.call_curve,
                   "labels": len(manifest.labels), "sha256": manifest.sha256},
        )
        return tagger

    def check_outputs(self, path: object) -> None:
        """Refuse an artifact that disagrees with itself, before any track meets it: on a batch
        of noise and silence the model must give one finite probability in [0, 1] per manifest
        label and window, and, when the manifest promises an embedding, one finite vector of its
        size per window (a checksum covers the weights, not what they compute). ArtifactError
        (one line, exit 1) otherwise."""
        n = self.manifest.clip_samples
        spec = self.manifest.embedding
        noise = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1
        windows, _ = stack_windows([np.stack([noise, np.zeros(n, dtype=np.float32)])])
        try:
            with torch.inference_mode():
                probs_t, emb_t = self._run(windows, with_embedding=spec is not None)
                out = probs_t.cpu().numpy()
        except Exception as exc:  # noqa: BLE001 - whatever breaks inside the model, say so once
            raise ArtifactError(f"{path}: the model fails on a warm-up batch of noise and "
                                f"silence: {type(exc).__name__}: {str(exc)[:300]}") from exc
        labels = len(self.manifest.labels)
        if out.shape != (2, labels):
            raise ArtifactError(
                f"{path}: the model gives outputs of shape {tuple(out.shape)} for 2 windows, its "
                f"manifest lists {labels} labels (want (2, {labels})): re-export the artifact")
        if not np.isfinite(out).all():
            raise ArtifactError(f"{path}: the model gives non-finite outputs (NaN or inf) on a "
                                "warm-up batch of noise and silence: re-export the artifact")
        if out.min() < -PROBABILITY_SLACK or out.max() > 1 + PROBABILITY_SLACK:
            raise ArtifactError(
                f"{path}: the model gives values in [{out.min():.3g}, {out.max():.3g}], not "
                "probabilities in [0, 1] (is its activation missing?): re-export the artifact")
        if spec is not None and emb_t is not None:
            emb = emb_t.cpu().numpy()
            if emb.shape != (2, spec.size) or not np.isfinite(emb).all():
                raise ArtifactError(
                    f"{path}: the model's embedding is {tuple(emb.shape)} "
                    f"{'finite' if np.isfinite(emb).all() else 'with NaN or inf'} for 2 windows, "
                    f"its manifest promises {spec.size} finite values each: re-export the artifact")

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
            probs, _ = self._run(windows)
            return average_by_owner(probs, owner, len(per_track_windows)).cpu().numpy()

    def predict_windows(self, per_track_windows: list[np.ndarray]) -> list[np.ndarray]:
        """``[(n_i, clip_samples)]`` → ``[(n_i, n_labels)]``: every window's probabilities, per
        track (for the timeline and for aggregations other than the plain mean)."""
        return self.infer_windows(per_track_windows, embeddings=False)[0]

    def infer_windows(self, per_track_windows: list[np.ndarray], embeddings: bool = True
                      ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Per track, every window's probabilities ``(n_i, n_labels)`` and, when the artifact
        has an embedding (contract v2) and ``embeddings``, every window's embedding
        ``(n_i, size)`` from the same pass (else None)."""
        if not per_track_windows:
            return [], ([] if embeddings and self.manifest.embedding else None)
        windows, _ = stack_windows(per_track_windows)
        spec = self.manifest.embedding if embeddings else None
        with torch.inference_mode():
            probs_t, emb_t = self._run(windows, with_embedding=spec is not None)
        probs = probs_t.cpu().numpy()
        want = (len(windows), len(self.manifest.labels))
        if probs.shape != want:  # a broken model must not hand one track another's rows
            raise ValueError(f"model gave {probs.shape} probabilities for {want} windows × labels")
        bounds = np.cumsum([0] + [len(w) for w in per_track_windows])
        spans = list(zip(bounds[:-1], bounds[1:], strict=True))
        if spec is None or emb_t is None:
            return [probs[a:b] for a, b in spans], None
        emb = emb_t.cpu().numpy()
        if emb.shape != (len(windows), spec.size):
            raise ValueError(f"model gave {emb.shape} embeddings for {len(windows)} windows × "
                             f"{spec.size} values (manifest)")
        return [probs[a:b] for a, b in spans], [emb[a:b] for a, b in spans]

    def _run(self, windows: torch.Tensor, with_embedding: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model on ``windows`` in chunks of ``max_windows_per_call`` (inference mode on):
        probabilities, and the embeddings of the same calls (``tag``) when asked."""
        cuda = self.device.type == "cuda"
        with self._autocast():
            outputs, embedded = [], []
            for chunk in windows.split(self.max_windows_per_call):
                if cuda:
                    chunk = chunk.pin_memory().to(self.device, non_blocking=True)
                if with_embedding:
                    probs, z = self.module.tag(chunk)
                    outputs.append(probs.float())
                    embedded.append(z.float())
                else:
                    outputs.append(self.module(chunk).float())
            return torch.cat(outputs), (torch.cat(embedded) if with_embedding else None)

    def call(self, method: str, inputs: torch.Tensor) -> torch.Tensor:
        """One exported method of a schema-2 module (``embed``: windows → embeddings, ``head``:
        embeddings → probabilities) on ``inputs`` in chunks of ``max_windows_per_call``, as
        float32 on the CPU (inference mode on): the model set's backbone and heads run apart."""
        fn = getattr(self.module, method)
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), self._autocast():
            outputs = []
            for chunk in inputs.split(self.max_windows_per_call):
                if cuda:
                    chunk = chunk.pin_memory().to(self.device, non_blocking=True)
                outputs.append(fn(chunk).float().cpu())
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
