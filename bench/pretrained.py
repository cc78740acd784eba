"""The pretrained taggers' speed (issue 28): model alone vs musicnn's TF, then the worker.

``python -m bench.pretrained [--quick] [--device cuda] [--coverage 4,10]``. One run measures,
side by side: windows/s and CPU per window of each pretrained model as musicnn's own TF graph,
the port before issue 28 and the port now, over batch sizes (bench/pretrained_models.py); then
``genretag work`` with musicnn-msd on 30 s mp3 clips at each coverage (windows per track:
bench/pretrained_worker.py). Writes ``pretrained[-cuda].json`` and ``.md`` (the tables) under
``--out``; prints the tables and a summary line. See docs/performance-pretrained.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.corpus import DEFAULT_CACHE, make_corpus
from bench.pretrained_models import (cpu_peak, half_agreement, load_tf_reference, sweep,
                                     tf_available)
from bench.pretrained_report import summary, tables, targets
from bench.pretrained_worker import worker_phase
from bench.run import machine
from genretag.core.logs import configure_logging, get_logger
from genretag.training.pretrained.catalog import MODELS
from genretag.training.pretrained.pull import fetch_wheel, pull

log = get_logger("bench.pretrained")
FULL_BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 8)
WORKER_MODEL = "musicnn-msd"


def wheel_cache() -> Path:
    """Where ``genretag models pull`` keeps the musicnn wheel (the tests' cache too)."""
    if os.environ.get("GENRETAG_MUSICNN_CACHE"):
        return Path(os.environ["GENRETAG_MUSICNN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genretag"


def artifacts(names: list[str], cache: Path) -> dict[str, Path]:
    """Each model pulled into ``cache/pretrained`` (a no-op when current)."""
    out = {}
    for name in names:
        path = (cache / "pretrained" / f"{name}.pt").resolve()
        pull(name, path, wheel_cache())
        out[name] = path
    return out


def real_windows(corpus_paths: list[Path], limit: int = 64) -> np.ndarray:
    """3 s windows at 16 kHz of real audio for the float16 check: the parity set if present
    (GENRETAG_PARITY_AUDIO or .genretag/parity-audio), else the benchmark corpus."""
    from genretag.core.audio.decoders import DecodeOptions
    from genretag.core.audio.ffmpeg.decode import decode_audio
    from genretag.core.audio.uri import resolve_source

    folder = Path(os.environ.get("GENRETAG_PARITY_AUDIO", ".genretag/parity-audio"))
    files = sorted(folder.glob("*.wav")) or corpus_paths
    windows: list[np.ndarray] = []
    for f in files:
        wave = decode_audio(resolve_source(str(f), [str(f.parent)]),
                            DecodeOptions(sample_rate=16000, max_seconds=120))
        windows += [wave[s:s + 48000] for s in range(0, len(wave) - 48000 + 1, 48000)]
        if len(windows) >= limit:
            break
    return np.stack(windows[:limit]).astype(np.float32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.pretrained",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: msd models, batches 1 and 8, 8 clips, one round (~3 min)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the models run (cuda: no TF column; float16 rows and check)")
    p.add_argument("--models", default=None,
                   help=f"comma-separated (default: all of {', '.join(MODELS)}; quick: *-msd)")
    p.add_argument("--batches", default=None, help="batch sizes (default 1,2,4,8,16,32,64)")
    p.add_argument("--coverage", default="4,10",
                   help="windows per track of the worker rows (default 4,10: today's default "
                   "and a whole 30 s clip in 3 s windows)")
    p.add_argument("--passes", type=int, default=None, help="model-alone passes (default 3)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch/TF intra-op threads (default: the usable cores)")
    p.add_argument("--clips", type=int, default=None, help="30 s clips for the worker (96)")
    p.add_argument("--rounds", type=int, default=None, help="worker rounds (default 3)")
    p.add_argument("--no-worker", action="store_true", help="model alone only")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="JSON + tables dir")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="corpus/model cache")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel(logging.INFO)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.pretrained: --device cuda, but torch sees no CUDA device")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    names = (args.models.split(",") if args.models else
             [n for n in MODELS if not args.quick or n.endswith("-msd")])
    if WORKER_MODEL not in names and not args.no_worker:
        names.append(WORKER_MODEL)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else list(
        QUICK_BATCHES if args.quick else FULL_BATCHES)
    coverages = [int(c) for c in args.coverage.split(",")]
    passes = args.passes or (1 if args.quick else 3)
    min_s = 0.1 if args.quick else 0.5
    device = torch.device(args.device)
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)

    paths = artifacts(names, args.cache)
    results: dict[str, object] = {
        "quick": args.quick, "device": args.device, "machine": machine(), "threads": threads,
        "batches": batches, "passes": passes,
        "models": {n: {"artifact": str(p)} for n, p in paths.items()},
    }
    if device.type == "cpu":
        results["peak"] = cpu_peak(threads)
    else:
        results["gpu"] = torch.cuda.get_device_name(0)
    tf_missing = tf_available() if device.type == "cpu" else "not measured: tensorflow-cpu only"
    results["tf"] = tf_missing or "musicnn==0.1.0 graph, tensorflow " + _tf_version()
    tf_reference = load_tf_reference(fetch_wheel(wheel_cache())) if not tf_missing else None
    for name in names:
        log.info("bench.pretrained.model", extra={"model": name})
        results["models"][name].update(sweep(name, paths[name], batches, passes, min_s, device,
                                             threads, tf_reference))
    per_class = max(1, (args.clips or (8 if args.quick else 96)) // 4)
    corpus = make_corpus(args.cache, per_class, 30.0) if device.type == "cuda" or not \
        args.no_worker else None
    if corpus is not None and device.type == "cuda":
        windows = real_windows(corpus.paths)
        results["half_precision"] = {n: half_agreement(p, windows, device)
                                     for n, p in paths.items()}
    if corpus is not None and not args.no_worker:
        work = Path(tempfile.mkdtemp(prefix="genretag-bench-pretrained-"))
        results["worker"] = worker_phase(
            paths[WORKER_MODEL], corpus.paths, coverages, args.rounds or (1 if args.quick else 3),
            3.0 if args.quick else 15.0, args.device, work)
        results["worker"]["clips"] = len(corpus.paths)
    results["targets"] = targets(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    suffix = "" if device.type == "cpu" else "-cuda"
    (args.out / f"pretrained{suffix}.json").write_text(json.dumps(results, indent=2))
    text = tables(results)
    (args.out / f"pretrained{suffix}.md").write_text(text)
    print(text)
    print(summary(results))
    missed = [k for k, t in results["targets"].items() if not t["met"]]
    return 1 if args.strict and missed else 0


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


if __name__ == "__main__":
    raise SystemExit(main())
