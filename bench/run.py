"""Run every benchmark side by side in one invocation; print JSON and a one-line summary.

``python -m bench.run [--quick] [--out bench/results]``. Absolute rates depend on the machine
and on whatever else runs on it; the ratios between rows measured in the same run are the
results. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import plots
from bench.corpus import DEFAULT_CACHE, ensure_model, ensure_null_model, make_corpus
from bench.decode import decode_round, decode_scaling, group_sweep
from bench.decode_many import worker_decode_options
from bench.fleet import NAIVE_CMD, WORKER_CMD, Fleet
from bench.longtrack import long_track_phase
from bench.model import model_sweep
from genretag.core.logs import configure_logging, get_logger
from genretag.worker.settings import WorkerSettings
from genretag.cli.stack import LocalStack
from genretag.core.artifact import read_manifest
from genretag.core.audio.decoders import DEFAULT_GROUP_SIZE, DecodeOptions
from bench.decode_many import worker_decode_options
from genretag.core.audio.uri import AudioSource
from genretag.core.audio.placement import Placement, place_windows
from genretag.core.settings import WindowSection

log = get_logger("bench.run")


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (``--quick`` or full)."""

    per_class: int
    seconds: float
    rounds: int
    naive_clips: int
    scaling_clips: int
    group_sweep: tuple[int, ...]
    latency_rate: float
    latency_s: float
    batch_sizes: tuple[int, ...]
    model_min_s: float
    long_tracks: int = 16  # per set, in the long-track phase (30 s clips vs 5-minute tracks)


QUICK = Plan(per_class=2, seconds=5.0, rounds=1, naive_clips=8, scaling_clips=8, group_sweep=(),
             latency_rate=2.0, latency_s=3.0, batch_sizes=(1, 8), model_min_s=0.2, long_tracks=2)
FULL = Plan(per_class=24, seconds=30.0, rounds=3, naive_clips=32, scaling_clips=96,
            group_sweep=(1, 2, 4, 8, 16), latency_rate=2.0, latency_s=20.0,
            batch_sizes=(1, 2, 4, 8, 16, 32, 64), model_min_s=1.0, long_tracks=16)


def machine() -> dict[str, object]:
    """What the numbers were measured on (and how busy it was)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                  .splitlines() if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text()
                .splitlines() if line.startswith("MemTotal")), None)
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    import torch

    return {"cpu": model, "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
            "mem_mib": mem, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "ffmpeg": ffmpeg.splitlines()[0] if ffmpeg else None,
            "loadavg_start": list(os.getloadavg())}


def windows_per_track(seconds: float, clip_seconds: float, windows: WindowSection) -> int:
    """Windows the worker places on a ``seconds`` track (the coverage policy itself)."""
    return len(place_windows(seconds, Placement.of(clip_seconds, windows)))


def start_fleets(stack: LocalStack, model: Path, roots: list[Path], work: Path,
                 cpus: list[int], null_model: Path, decoder: str) -> dict[str, Fleet]:
    """Every benchmarked configuration, each its own consumer group, started together.

    They stay up (idle between measurements) so the rounds can interleave them.
    """
    fleets = {name: Fleet(stack, model, roots, work / name)
              for name in ("worker", "worker_null", "worker_ffmpeg", "naive")}
    fleets["worker"].start("worker", WORKER_CMD, decoder=decoder)
    # The host side alone (a model that costs nothing, as on a GPU), and today's CLI decoder.
    fleets["worker_null"].start("worker_null", WORKER_CMD, model_path=null_model,
                                decoder=decoder)
    fleets["worker_ffmpeg"].start("worker_ffmpeg", WORKER_CMD, decoder="ffmpeg")
    fleets["naive"].start("naive", NAIVE_CMD)
    if len(cpus) >= 2:
        pinned = {"decode_workers": 1, "torch_threads": 1, "decoder": decoder}
        for name, cores in (("one_core", cpus[:1]), ("two_cores", cpus[:2])):
            fleets[name] = Fleet(stack, model, roots, work / name)
            for core in cores:
                fleets[name].start(f"{name}-cpu{core}", WORKER_CMD, {core}, **pinned)
    return fleets


def worker_runs(stack: LocalStack, model: Path, paths: list[Path], plan: Plan, work: Path,
                cpus: list[int], opts: DecodeOptions, decode_workers: int,
                null_model: Path, decoder: str) -> dict[str, object]:
    """Interleaved rounds: decode limits, worker, naive, 1 and 2 pinned cores; then latency."""
    roots = [paths[0].parent.parent]
    sources = [AudioSource(str(p), is_local=True) for p in paths]
    fleets = start_fleets(stack, model, roots, work, cpus, null_model, decoder)
    out: dict[str, object] = {}
    try:
        for fleet in fleets.values():
            fleet.wait_ready(settle_s=0.0)
        time.sleep(8.0)  # > session timeout: the two-member group has settled
        out["warm_up_s"] = {name: round(f.warm_up(paths[0]), 2) for name, f in fleets.items()}
        rounds = []
        for r in range(plan.rounds):
            row: dict[str, object] = {"loadavg_1m": round(os.getloadavg()[0], 2)}
            row["decode"] = decode_round(sources, opts, decode_workers, DEFAULT_GROUP_SIZE)
            if len(cpus) >= 2:
                row["decode_scaling"] = decode_scaling(sources[: plan.scaling_clips // 2], opts,
                                                       cpus, DEFAULT_GROUP_SIZE)
            for name in ("worker", "worker_null", "worker_ffmpeg"):
                row[name] = fleets[name].throughput(paths, f"{name}{r}")
            row["naive"] = fleets["naive"].throughput(paths[: plan.naive_clips], f"n{r}")
            for name in ("one_core", "two_cores"):
                if name in fleets:
                    row[name] = fleets[name].throughput(paths[: plan.scaling_clips], f"{name}{r}")
            rounds.append(row)
            log.info("bench.round", extra={"round": r, **{k: v if not isinstance(v, dict) else
                        v.get("clips_per_s", v) for k, v in row.items()}})
        out["rounds"] = rounds
        out["latency"] = fleets["worker"].latency(paths, plan.latency_rate, plan.latency_s, "lat")
        # Each process with its live children (the libav decoder processes).
        out["peak_rss_mib"] = {p.name: p.peak_rss_mib() for f in fleets.values() for p in f.procs}
    finally:
        for fleet in fleets.values():
            fleet.stop()
    return out


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def aggregate(w: dict[str, object]) -> tuple[dict, dict]:
    """Medians over rounds of each rate, and of each ratio taken within a round."""
    rounds = w["rounds"]
    rate = {
        "decode_per_file": [r["decode"]["per_file"] for r in rounds],
        "decode_amortised": [r["decode"]["amortised"] for r in rounds],
        **{f"decode_{k}": [r["decode"][k] for r in rounds]
           for k in ("codec_floor", "inprocess_floor", "decoder_pool") if k in rounds[0]["decode"]},
        **{k: [r[k]["clips_per_s"] for r in rounds]
           for k in ("worker", "worker_null", "worker_ffmpeg", "naive", "one_core", "two_cores")
           if k in rounds[0]},
    }
    per_round = {
        "amortised_vs_per_file_decode": [a / b for a, b in zip(rate["decode_amortised"],
                                                               rate["decode_per_file"])],
        "worker_vs_per_file_decode": [a / b for a, b in zip(rate["worker"], rate["decode_per_file"])],
        "worker_vs_amortised_decode": [a / b for a, b in zip(rate["worker"], rate["decode_amortised"])],
        "worker_vs_naive": [a / b for a, b in zip(rate["worker"], rate["naive"])],
        # The most any worker could reach vs naive here: decoding alone, amortised, all cores.
        "amortised_decode_vs_naive": [a / b for a, b in zip(rate["decode_amortised"],
                                                            rate["naive"])],
    }
    if "decode_codec_floor" in rate:
        codec = rate["decode_codec_floor"]
        per_round.update({
            "worker_null_vs_codec_floor": [a / b for a, b in zip(rate["worker_null"], codec)],
            "inprocess_floor_vs_codec_floor": [a / b for a, b in zip(
                rate["decode_inprocess_floor"], codec)],
            "decoder_pool_vs_inprocess_floor": [a / b for a, b in zip(
                rate["decode_decoder_pool"], rate["decode_inprocess_floor"])],
            "amortised_decode_vs_codec_floor": [a / b for a, b in zip(
                rate["decode_amortised"], codec)],
        })
    per_round["worker_ffmpeg_vs_amortised_decode"] = [
        a / b for a, b in zip(rate["worker_ffmpeg"], rate["decode_amortised"])]
    per_round["worker_vs_worker_ffmpeg"] = [
        a / b for a, b in zip(rate["worker"], rate["worker_ffmpeg"])]
    if "two_cores" in rate:
        per_round["two_vs_one_core"] = [a / b for a, b in zip(rate["two_cores"], rate["one_core"])]
    if "decode_scaling" in rounds[0]:
        # The machine's own scaling for FFmpeg alone: the ceiling of two_vs_one_core.
        per_round["decode_two_vs_one_core"] = [r["decode_scaling"]["ratio"] for r in rounds]
    rates = {k: {"median": _median(v), "rounds": v} for k, v in rate.items()}
    ratios = {k: {"median": _median(v), "rounds": [round(x, 2) for x in v]}
              for k, v in per_round.items()}
    return rates, ratios


def targets(r: dict) -> dict[str, dict[str, object]]:
    """Each target: the measured value, the bar, and whether it was met in this run."""
    def row(value: float | None, bar: float, lower_is_better: bool = False) -> dict[str, object]:
        met = value is not None and (value < bar if lower_is_better else value >= bar)
        return {"value": value, "target": (f"< {bar}" if lower_is_better else f">= {bar}"), "met": met}

    q = r["ratios"]
    rss = r["workers"]["peak_rss_mib"]
    # Issue 17: the libav worker passes today's amortised FFmpeg floor by 1.2x on CPU (a GPU
    # worker only more so), and the host side alone reaches 0.8x the codec's own floor.
    t = {
        "worker_vs_per_file_decode": row(q["worker_vs_per_file_decode"]["median"], 1.0),
        "worker_vs_amortised_decode": row(q["worker_vs_amortised_decode"]["median"], 1.2),
        "worker_vs_naive": row(q["worker_vs_naive"]["median"], 5.0),
        "latency_p95_s": row(r["workers"]["latency"]["p95"], 0.5, lower_is_better=True),
        "peak_rss_vs_worker_ffmpeg": row(
            round(rss["worker"] / rss["worker_ffmpeg"], 3)
            if rss.get("worker") and rss.get("worker_ffmpeg") else None, 1.25,
            lower_is_better=True),
    }
    if "worker_null_vs_codec_floor" in q:
        t["worker_null_vs_codec_floor"] = row(q["worker_null_vs_codec_floor"]["median"], 0.8)
    if "two_vs_one_core" in q:
        t["scaling_two_vs_one_core"] = row(q["two_vs_one_core"]["median"], 1.8)
    if "long_tracks" in r:  # whole-track tagging: cost independent of a track's length
        t["long_vs_clip"] = row(r["long_tracks"]["long_vs_clip"], 0.7)
    return t


def _m(table: dict, key: str) -> object:
    return table[key]["median"] if key in table else "n/a"


def summary(r: dict) -> str:
    rate, q, w = r["rates"], r["ratios"], r["workers"]
    met = sum(t["met"] for t in r["targets"].values())
    scale = (f"x{q['two_vs_one_core']['median']} (FFmpeg alone x"
             f"{q['decode_two_vs_one_core']['median']})" if "two_vs_one_core" in q else "n/a")
    rss = w["peak_rss_mib"].get("worker") or 0
    return (f"bench{' (quick)' if r['quick'] else ''} [medians of {len(w['rounds'])} rounds]: "
            f"decode per-file {rate['decode_per_file']['median']} clips/s, amortised "
            f"{rate['decode_amortised']['median']} (x{q['amortised_vs_per_file_decode']['median']})"
            f" | libav codec floor {_m(rate, 'decode_codec_floor')}, in-process floor "
            f"{_m(rate, 'decode_inprocess_floor')}, decoder processes "
            f"{_m(rate, 'decode_decoder_pool')}"
            f" | worker null model {rate['worker_null']['median']} clips/s = x"
            f"{_m(q, 'worker_null_vs_codec_floor')} codec floor | worker (FFmpeg CLI) "
            f"{rate['worker_ffmpeg']['median']}"
            f" | worker {rate['worker']['median']} clips/s = x{q['worker_vs_per_file_decode']['median']}"
            f" decode (x{q['worker_vs_amortised_decode']['median']} amortised),"
            f" x{q['worker_vs_naive']['median']} naive (ceiling: amortised decode x"
            f"{q['amortised_decode_vs_naive']['median']} naive) | 2 vs 1 core {scale} | p95 "
            f"{w['latency']['p95']} s | worker RSS {rss:.0f} MiB (with its decoders; CLI worker "
            f"{w['peak_rss_mib'].get('worker_ffmpeg') or 0:.0f}) | 5-min tracks vs 30 s clips x"
            f"{r['long_tracks']['long_vs_clip']} | "
            f"targets met {met}/{len(r['targets'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpus, short runs (< 90 s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="JSON + PNG dir")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="corpus/model cache")
    parser.add_argument("--model", type=Path, default=None, help="artifact (default models/demo.pt)")
    parser.add_argument("--clips-per-class", type=int, default=None, help="corpus size / 4")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--decoder", choices=["ffmpeg", "libav"], default=None,
                        help="decoder of the `worker` and `worker_null` rows (default: the "
                        "worker's default); `worker_ffmpeg` always uses the FFmpeg CLI")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel(logging.INFO)  # progress lines on stderr
    plan = QUICK if args.quick else FULL
    if args.clips_per_class:
        plan = Plan(**{**plan.__dict__, "per_class": args.clips_per_class})
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)

    corpus = make_corpus(args.cache, plan.per_class, plan.seconds)
    model, model_origin = ensure_model(args.cache, args.model)
    manifest = read_manifest(model)
    defaults = WorkerSettings()
    opts = worker_decode_options(manifest, defaults)
    cpus = sorted(os.sched_getaffinity(0))
    results: dict[str, object] = {
        "quick": args.quick, "machine": machine(),
        "corpus": {"clips": len(corpus.paths), "seconds": corpus.seconds,
                   "format": "mp3 stereo 44.1 kHz 128 kbps", "root": str(corpus.root),
                   "build_s": round(corpus.build_s, 1)},
        "model": {"path": str(model), "origin": model_origin, "version": manifest.version,
                  "sample_rate": manifest.sample_rate, "clip_seconds": manifest.clip_seconds},
        "plan": plan.__dict__, "decoder": args.decoder or defaults.decode.decoder,
    }
    results["model_alone"] = model_sweep(
        model, list(plan.batch_sizes), plan.model_min_s,
        windows_per_track(corpus.seconds, manifest.clip_seconds, defaults.windows))
    work = Path(tempfile.mkdtemp(prefix="genretag-bench-"))
    with LocalStack(work / "stack") as stack:
        try:
            results["workers"] = worker_runs(stack, model, corpus.paths, plan, work, cpus, opts,
                                             defaults.decode.workers,
                                             ensure_null_model(args.cache, model),
                                             args.decoder or defaults.decode.decoder)
        except BaseException:
            log.error("bench.failed", extra={"logs_kept_in": str(work)})
            raise
    shutil.rmtree(work, ignore_errors=True)

    results["long_tracks"] = long_track_phase(args.cache, model, plan.long_tracks, plan.rounds,
                                              defaults.decode.workers)
    sources = [AudioSource(str(p), is_local=True) for p in corpus.paths]
    results["decode"] = {
        "workers": defaults.decode.workers, "group_size": DEFAULT_GROUP_SIZE, "files": len(sources),
        "options": {"sample_rate": opts.sample_rate, "max_seconds": opts.max_seconds},
        "bit_exact": all(r["decode"]["bit_exact"] for r in results["workers"]["rounds"]),
        "group_size_sweep_clips_per_s": group_sweep(sources, opts, defaults.decode.workers,
                                                    list(plan.group_sweep)),
    }
    results["rates"], results["ratios"] = aggregate(results["workers"])
    results["targets"] = targets(results)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["plots"] = [str(p) for p in write_plots(results, args.out)]
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(summary(results))
    if args.strict and not args.quick and not all(t["met"] for t in results["targets"].values()):
        return 1
    return 0


def write_plots(r: dict, out: Path) -> list[Path]:
    rate, d, w = r["rates"], r["decode"], r["workers"]
    names = {"decode_per_file": "decode only, per-file FFmpeg",
             "decode_amortised": f"decode only, {d['group_size']} files/FFmpeg",
             "decode_codec_floor": "libav decode only, in-process",
             "decode_inprocess_floor": "libav decode+resample, in-process",
             "decode_decoder_pool": "libav decoder processes",
             "worker": "worker end to end", "worker_null": "worker, null model",
             "worker_ffmpeg": "worker, FFmpeg CLI decoder", "naive": "naive (1 msg at a time)",
             "one_core": "1 worker pinned, 1 core", "two_cores": "2 workers pinned, 2 cores"}
    rates = {label: rate[key]["median"] for key, label in names.items() if key in rate}
    paths = [plots.throughput_plot(rates, out / "throughput.png"),
             plots.latency_plot(w["latency"]["latencies_s"], out / "latency.png")]
    m = r["model_alone"]
    series = {f"{dev} windows/s": {row["batch"]: row["windows_per_s"] for row in m[dev]}
              for dev in ("cpu", "cpu_optimized", "cuda") if dev in m}
    paths.append(plots.sweep_plot(series, "batch size (windows)", "windows/s", out / "model_batch.png"))
    if d["group_size_sweep_clips_per_s"]:
        paths.append(plots.sweep_plot({"decode clips/s": d["group_size_sweep_clips_per_s"]},
                                      "files per FFmpeg process", "clips/s", out / "decode_groups.png"))
    return paths


if __name__ == "__main__":
    sys.exit(main())
