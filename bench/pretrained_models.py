"""The pretrained taggers alone: musicnn's TF graph, the port before issue 28 and after, one run.

Per model and batch size, every implementation is timed in turn (interleaved, so load from
other processes hits them alike); ``passes`` passes, the best pass's median call is reported
(as bench/model.py). Rates are windows (3 s at 16 kHz) per second; CPU is the process's CPU
time per window (every thread: torch's, TF's). Implementations:

- ``tf``: musicnn's own graph (``musicnn==0.1.0`` code from the wheel, tensorflow-cpu), fed
  log-mel patches, as ``musicnn.extractor`` runs it (its librosa front end is not timed);
- ``before``: the layer-for-layer port (bench/pretrained_before.py) with the log-mel front end,
  scripted as the r1 artifacts were: waveform in;
- ``after``: the artifact ``models pull`` writes now, as ``torch.jit.load`` gives it;
- ``after_frozen``: the same, frozen and ``optimize_for_inference``-d as the worker loads it;
- on CUDA also ``after_half`` (the worker's ``half_precision``: float16 autocast).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench import pretrained_before as before
from genretag.core.artifact import load_artifact
from genretag.training.pretrained.catalog import MODELS
from genretag.training.pretrained.convert import PretrainedTagger
from genretag.training.pretrained.logmel import LogMel
from genretag.worker.infer import optimize_for_cpu

#: Seconds between two timed runs, off the clock: the previous implementation's idle threads
#: (TF's spinning pool, torch's OpenMP team) go to sleep instead of taking the next one's cores.
PAUSE_S = 0.05


def tf_available() -> str | None:
    """None when the TF reference can run, else why not (the ``tf`` column is then absent)."""
    try:
        import librosa  # noqa: F401 - musicnn.extractor imports it
        import tensorflow  # noqa: F401
    except ImportError as exc:
        return f"not measured: {exc.name} is not installed (scripts/parity_setup.sh)"
    return None


def before_module(artifact: Path, device: torch.device) -> torch.jit.ScriptModule:
    """The r1 artifact's computation: the old port with the same weights, scripted."""
    module, manifest = load_artifact(artifact)
    state = {k[len("net."):]: v for k, v in module.state_dict().items() if k.startswith("net.")}
    arch = manifest.metrics["architecture"]
    net = (before.Musicnn if arch == "musicnn" else before.Vgg)(len(manifest.labels))
    net.load_state_dict(state)
    return torch.jit.script(PretrainedTagger(net.eval()).eval()).to(device)


def window_flops(artifact: Path) -> tuple[int, int]:
    """FLOPs of one window through the network (the log-mel front end excluded): nominal, as
    the layer-for-layer port and TF compute it (every filter at every position), and what the
    rewrite computes (live filters only; vgg's first block at the pooled columns)."""
    from torch.utils.flop_counter import FlopCounterMode

    from genretag.training.pretrained.nets import Musicnn, Vgg

    module, manifest = load_artifact(artifact)
    state = {k[len("net."):]: v for k, v in module.state_dict().items() if k.startswith("net.")}
    musicnn = manifest.metrics["architecture"] == "musicnn"
    counts = []
    for cls in ((before.Musicnn, Musicnn) if musicnn else (before.Vgg, Vgg)):
        net = cls(len(manifest.labels))
        net.load_state_dict(state)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            net.eval()(torch.rand(1, 187, 96))
        counts.append(int(counter.get_total_flops()))
    return counts[0], counts[1]


def cpu_peak(threads: int, seconds: float = 1.0) -> dict[str, object]:
    """The cores' fp32 peak: nominal (flags × clock) and measured (a 2048² sgemm's rate)."""
    flags, mhz = "", 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags") and not flags:
            flags = line
        if line.startswith("cpu MHz") and not mhz:
            mhz = float(line.split(":")[1])
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
    per_cycle = lanes * 2 * 2  # FMA = 2 FLOPs, 2 FMA units per core (assumed: not readable)
    a = torch.randn(2048, 2048)
    best = 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        a @ a
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t))
    return {"threads": threads, "isa": "avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse",
            "clock_mhz": round(mhz), "nominal_gflops": round(threads * mhz / 1e3 * per_cycle, 1),
            "nominal_assumes": f"{per_cycle} FLOP/cycle/core (2 FMA units) at the listed clock",
            "sgemm_gflops": round(best / 1e9, 1)}


class Runner:
    """One implementation of one model: ``call(batch)`` runs the prepared input of that size."""

    def __init__(self, name: str, fn: Callable[[object], object], inputs: dict[int, object],
                 sync: Callable[[], None]) -> None:
        self.name, self.fn, self.inputs, self.sync = name, fn, inputs, sync

    def time(self, batch: int, min_s: float) -> tuple[float, float]:
        """(median wall s, mean CPU s) per call over at least ``min_s`` and 2 calls."""
        x = self.inputs[batch]
        walls: list[float] = []
        time.sleep(PAUSE_S)
        cpu0 = time.process_time()
        started = time.perf_counter()
        while len(walls) < 2 or time.perf_counter() - started < min_s:
            t = time.perf_counter()
            self.fn(x)
            self.sync()
            walls.append(time.perf_counter() - t)
        return statistics.median(walls), (time.process_time() - cpu0) / len(walls)


def runners(name: str, artifact: Path, batches: list[int], device: torch.device, threads: int,
            tf_reference: tuple | None, seed: int = 0) -> list[Runner]:
    """Every implementation of model ``name`` with inputs for each batch size."""
    gen = torch.Generator().manual_seed(seed)
    waves = {bs: torch.randn(bs, 48000, generator=gen) * 0.1 for bs in batches}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    on_device = {bs: w.to(device) for bs, w in waves.items()}
    out: list[Runner] = []
    if tf_reference is not None and device.type == "cpu":
        from tests.training.pretrained.reference import TfModel  # the parity tests' TF runner

        models, _, package = tf_reference
        tf_model = TfModel(models, package, MODELS[name].checkpoint, len(MODELS[name].tags),
                           threads=threads)
        with torch.inference_mode():
            logmel = {bs: LogMel()(w).numpy() for bs, w in waves.items()}
        out.append(Runner("tf", tf_model.logits, logmel, lambda: None))
    after, _ = load_artifact(artifact, map_location=device)
    out.append(Runner("before", before_module(artifact, device), on_device, sync))
    out.append(Runner("after", after, on_device, sync))
    if device.type == "cpu":
        out.append(Runner("after_frozen", optimize_for_cpu(after), on_device, sync))
    else:
        def half(x: torch.Tensor, module=after) -> torch.Tensor:
            with torch.autocast(device_type=device.type, dtype=torch.float16):
                return module(x)
        out.append(Runner("after_half", half, on_device, sync))
    return out


def sweep(name: str, artifact: Path, batches: list[int], passes: int, min_s: float,
          device: torch.device, threads: int, tf_reference: tuple | None) -> dict[str, object]:
    """windows/s and CPU ms/window per implementation and batch size, with GFLOP/s."""
    runs = runners(name, artifact, batches, device, threads, tf_reference)
    flops, computed = window_flops(artifact)
    walls = {r.name: {bs: [] for bs in batches} for r in runs}
    cpus = {r.name: {bs: [] for bs in batches} for r in runs}
    with torch.inference_mode():
        for r in runs:  # warm-up: TorchScript's profiling executor specialises on first calls
            for bs in batches:
                for _ in range(2):
                    r.fn(r.inputs[bs])
        for _ in range(passes):
            for bs in batches:
                for r in runs:
                    wall, cpu = r.time(bs, min_s)
                    walls[r.name][bs].append(wall)
                    cpus[r.name][bs].append(cpu)
    table: dict[str, list[dict[str, object]]] = {}
    for r in runs:
        rows = []
        for bs in batches:
            best = min(walls[r.name][bs])
            rate = bs / best
            done = computed if r.name.startswith("after") else flops
            rows.append({"batch": bs, "windows_per_s": round(rate, 1),
                         "cpu_ms_per_window": round(1e3 * min(cpus[r.name][bs]) / bs, 2),
                         "gflops_nominal": round(rate * flops / 1e9, 1),
                         "gflops_computed": round(rate * done / 1e9, 1),
                         "passes_windows_per_s": [round(bs / w, 1) for w in walls[r.name][bs]]})
        table[r.name] = rows
    return {"flops_per_window": flops, "flops_computed_per_window": computed, "rates": table,
            "ratios": ratios(table, batches)}


def ratios(table: dict[str, list[dict[str, object]]], batches: list[int]) -> dict[str, object]:
    """after / tf and after / before, per batch and at each side's best batch size."""
    def best(name: str) -> float:
        return max(float(r["windows_per_s"]) for r in table[name])

    out: dict[str, object] = {}
    for num, den in (("after", "tf"), ("after_frozen", "tf"), ("after", "before")):
        if num in table and den in table:
            out[f"{num}_vs_{den}"] = {
                "per_batch": {bs: round(float(a["windows_per_s"]) / float(b["windows_per_s"]), 2)
                              for bs, a, b in zip(batches, table[num], table[den], strict=True)},
                "best_vs_best": round(best(num) / best(den), 2)}
    return out


def load_tf_reference(wheel: Path) -> tuple | None:
    """musicnn's models module and checkpoint folder from the wheel (None without TF)."""
    if tf_available() is not None:
        return None
    from tests.training.pretrained.reference import load_reference

    return load_reference(wheel, Path(tempfile.mkdtemp(prefix="genretag-musicnn-tf-")))


def half_agreement(artifact: Path, windows: np.ndarray, device: torch.device) -> dict[str, object]:
    """float16 autocast vs float32 on real windows: max |Δp| and top-5 sets unchanged."""
    module, _ = load_artifact(artifact, map_location=device)
    x = torch.from_numpy(windows).to(device)
    with torch.inference_mode():
        full = module(x).float().cpu()
        with torch.autocast(device_type=device.type, dtype=torch.float16):
            half = module(x).float().cpu()
    top = [set(a.topk(5).indices.tolist()) == set(b.topk(5).indices.tolist())
           for a, b in zip(full, half, strict=True)]
    return {"windows": len(top), "max_abs_diff": round(float((full - half).abs().max()), 5),
            "top5_unchanged": round(sum(top) / len(top), 4)}
