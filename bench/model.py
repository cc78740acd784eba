"""The TorchScript model alone: windows/s over a batch-size sweep (CPU, and CUDA if present)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from genretag.core.artifact import load_artifact
from genretag.worker.infer import optimize_for_cpu

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
    """windows/s (and tracks/s at ``windows_per_track``) per batch size and variant.

    Variants: ``cpu`` (the artifact as loaded), ``cpu_optimized`` (frozen and
    ``optimize_for_inference``, what the worker runs on CPU) and ``cuda`` when present. Every
    shape is warmed up first (TorchScript's profiling executor specialises on the first calls);
    then ``PASSES`` passes each run every variant and batch size in turn, and the best pass's
    median call is reported, which filters out bursts of load from other processes.
    """
    variants = [("cpu", "cpu", False), ("cpu_optimized", "cpu", True)]
    if torch.cuda.is_available():
        variants.append(("cuda", "cuda", False))
    out: dict[str, object] = {"threads": torch.get_num_threads(), "passes": PASSES,
                              "windows_per_track": windows_per_track}
    gen = torch.Generator().manual_seed(0)
    runs = []
    for name, device_name, optimized in variants:
        device = torch.device(device_name)
        module, manifest = load_artifact(model, map_location=device)
        if optimized:
            module = optimize_for_cpu(module)
        inputs = {bs: (torch.randn(bs, manifest.clip_samples, generator=gen) * 0.1).to(device)
                  for bs in batch_sizes}
        runs.append((name, device, module, inputs))
        out["clip_seconds"] = manifest.clip_seconds
    passes = {name: {bs: [] for bs in batch_sizes} for name, *_ in runs}
    with torch.inference_mode():
        for _, _, module, inputs in runs:
            for x in inputs.values():
                for _ in range(3):
                    module(x)
        for _ in range(PASSES):
            for name, device, module, inputs in runs:
                for bs, x in inputs.items():
                    passes[name][bs].append(bs / _median_call_s(module, x, min_s / PASSES, device))
    for name, rates_by_bs in passes.items():
        out[name] = [
            {"batch": bs, "windows_per_s": round(max(rates), 1),
             "tracks_per_s": round(max(rates) / windows_per_track, 1),
             "passes_windows_per_s": [round(r, 1) for r in rates]}
            for bs, rates in rates_by_bs.items()
        ]
    return out
