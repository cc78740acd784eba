"""The TorchScript model alone: windows/s over a batch-size sweep (CPU, and CUDA if present)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from worker.artifact import load_artifact

PASSES = 3


def _median_call_s(module, x: torch.Tensor, min_s: float, device: torch.device) -> float:
    """Median seconds per call over at least ``min_s`` (and 5 calls)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    calls: list[float] = []
    started = time.perf_counter()
    while len(calls) < 5 or time.perf_counter() - started < min_s:
        t = time.perf_counter()
        module(x)
        sync()
        calls.append(time.perf_counter() - t)
    return statistics.median(calls)


def model_sweep(model: Path, batch_sizes: list[int], min_s: float,
                windows_per_track: int) -> dict[str, object]:
    """windows/s (and tracks/s at ``windows_per_track``) per batch size and device.

    Batch sizes are swept ``PASSES`` times, interleaved, after a warm-up of each shape
    (TorchScript's profiling executor specialises on the first calls); the best pass's median
    call is reported, which filters out bursts of load from other processes on a shared machine.
    """
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    out: dict[str, object] = {"threads": torch.get_num_threads(), "passes": PASSES,
                              "windows_per_track": windows_per_track}
    for device in devices:
        module, manifest = load_artifact(model, map_location=device)
        gen = torch.Generator().manual_seed(0)
        inputs = {bs: (torch.randn(bs, manifest.clip_samples, generator=gen) * 0.1).to(device)
                  for bs in batch_sizes}
        passes: dict[int, list[float]] = {bs: [] for bs in batch_sizes}
        with torch.inference_mode():
            for x in inputs.values():
                for _ in range(3):
                    module(x)
            for _ in range(PASSES):
                for bs, x in inputs.items():
                    passes[bs].append(bs / _median_call_s(module, x, min_s / PASSES, device))
        out[device.type] = [
            {"batch": bs, "windows_per_s": round(max(rates), 1),
             "tracks_per_s": round(max(rates) / windows_per_track, 1),
             "passes_windows_per_s": [round(r, 1) for r in rates]}
            for bs, rates in passes.items()
        ]
        out["clip_seconds"] = manifest.clip_seconds
    return out
