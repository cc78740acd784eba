"""What each issue-6 change bought: worker variants side by side on one stack, same corpus.

``python -m bench.variants [--quick] [--rounds N] [--out bench/results]``. Each variant is its
own consumer group (one `genretag work` process, default settings except the ones named); rounds
interleave decode-only limits and every variant, so load from other processes hits them alike.
Ratios within a round are the result; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import (CORPUS_RATE, DEFAULT_CACHE, ensure_model, ensure_null_model,
                          make_corpus)
from bench.decode import decode_round
from bench.decode_many import worker_decode_options
from bench.fleet import WORKER_CMD, Fleet
from genretag.core.logs import configure_logging, get_logger
from genretag.worker.settings import WorkerSettings
from genretag.cli.stack import LocalStack
from genretag.core.artifact import read_manifest
from genretag.core.audio.decoders import DEFAULT_GROUP_SIZE, DecodeOptions
from bench.decode_many import worker_decode_options
from genretag.core.audio.uri import AudioSource

log = get_logger("bench.variants")

NULL_MODEL = "<null model>"  # replaced by bench.corpus.ensure_null_model's artifact
NULL_MODEL_NATIVE = "<null model, native rate>"  # the same at the corpus's own sample rate
#: name → (command, settings). ``before`` → ``decode_many`` → ``cpu_chunk`` → ``optimized`` →
#: ``libav`` → ``after`` add one change each; ``torch_1_thread`` is the rejected option of half
#: the cores for torch (slower); the null-model rows are the host side alone, per decoder and,
#: for ``null_model_native``, without resampling.
FFMPEG = {"decoder": "ffmpeg"}
VARIANTS: dict[str, tuple[list[str], dict[str, object]]] = {
    "before": (WORKER_CMD, {**FFMPEG, "decode_grouped": False, "inference_max_windows": 64,
                            "optimize_model": False}),  # one FFmpeg per file
    "decode_many": (WORKER_CMD, {**FFMPEG, "inference_max_windows": 64, "optimize_model": False}),
    "cpu_chunk": (WORKER_CMD, {**FFMPEG, "inference_max_windows": 8, "optimize_model": False}),
    # + model frozen and optimize_for_inference: the worker before issue 17
    "optimized": (WORKER_CMD, {**FFMPEG, "inference_max_windows": 8}),
    # + libav decoder processes instead of the FFmpeg command line
    "libav": (WORKER_CMD, {"inference_max_windows": 8}),
    "after": (WORKER_CMD, {}),  # + model calls sized from the measured curve: the defaults
    "torch_1_thread": (WORKER_CMD, {"torch_threads": 1}),
    # A model that costs nothing: the host-side pipeline alone, i.e. the most these cores allow
    # once the frontend and model run elsewhere (a GPU); with today's decoder and with libav.
    "null_model_ffmpeg": (WORKER_CMD, {**FFMPEG, "model_path": NULL_MODEL}),
    "null_model": (WORKER_CMD, {"model_path": NULL_MODEL}),
    # The same at the files' own rate: the decoder processes downmix but never resample, i.e.
    # the host side left if the artifact took native-rate audio and resampled on the device.
    "null_model_native": (WORKER_CMD, {"model_path": NULL_MODEL_NATIVE}),
}


def run_variants(stack: LocalStack, model: Path, paths: list[Path], rounds: int,
                 work: Path, opts: DecodeOptions, decode_workers: int,
                 names: list[str], null_models: dict[str, Path] | None = None,
                 repeat: int = 1) -> list[dict[str, object]]:
    """Interleaved rounds: decode limits, then every variant in ``names`` on the whole corpus
    (enqueued ``repeat`` times per pass: start-up and tail weigh less, closer to steady state)."""
    roots = [paths[0].parent.parent]
    sources = [AudioSource(str(p), is_local=True) for p in paths]
    fleets = {name: Fleet(stack, model, roots, work / name) for name in names}
    for name in names:
        cmd, settings = VARIANTS[name]
        settings = {k: (null_models or {}).get(v, v) if isinstance(v, str) else v
                    for k, v in settings.items()}
        fleets[name].start(name, cmd, **settings)
    try:
        for fleet in fleets.values():
            fleet.wait_ready(settle_s=0.0)
        time.sleep(8.0)  # > session timeout: every group has settled
        for fleet in fleets.values():
            fleet.warm_up(paths[0])
        out = []
        for r in range(rounds):
            row: dict[str, object] = {"loadavg_1m": round(os.getloadavg()[0], 2),
                                      "decode": decode_round(sources, opts, decode_workers,
                                                             DEFAULT_GROUP_SIZE)}
            order = list(fleets) if r % 2 == 0 else list(reversed(fleets))  # no position bias
            for name in order:
                got = fleets[name].throughput(paths * repeat, f"{name}{r}")
                row[name] = got["clips_per_s"]
                row.setdefault("cpu_ms_per_clip", {})[name] = got["cpu_ms_per_clip"]
            log.info("bench.variants_round", extra={"round": r, **row})
            out.append(row)
        # Peak RSS of each variant's process with its decoder processes, once all rounds ran.
        out[-1]["peak_rss_mib"] = {name: fleet.procs[0].peak_rss_mib()
                                   for name, fleet in fleets.items()}
        return out
    finally:
        for fleet in fleets.values():
            fleet.stop()


def summarise(rounds: list[dict[str, object]], names: list[str]) -> dict[str, object]:
    """Median clips/s per variant, and median within-round ratios (vs the first, vs decode rows)."""

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    out: dict[str, object] = {
        "clips_per_s": {n: med([r[n] for r in rounds]) for n in names},
        "decode_per_file": med([r["decode"]["per_file"] for r in rounds]),
        "decode_amortised": med([r["decode"]["amortised"] for r in rounds]),
    }
    out["vs_first"] = {n: med([r[n] / r[names[0]] for r in rounds]) for n in names}
    out["vs_previous_row"] = {n: med([r[n] / r[p] for r in rounds])
                              for p, n in zip(names, names[1:])}
    out["vs_per_file_decode"] = {n: med([r[n] / r["decode"]["per_file"] for r in rounds])
                                 for n in names}
    out["vs_amortised_decode"] = {n: med([r[n] / r["decode"]["amortised"] for r in rounds])
                                  for n in names}
    if "codec_floor" in rounds[0]["decode"]:
        out["decode_codec_floor"] = med([r["decode"]["codec_floor"] for r in rounds])
        out["vs_codec_floor"] = {n: med([r[n] / r["decode"]["codec_floor"] for r in rounds])
                                 for n in names}
    out["cpu_ms_per_clip"] = {n: med([r["cpu_ms_per_clip"][n] for r in rounds]) for n in names}
    out["peak_rss_mib"] = rounds[-1].get("peak_rss_mib", {})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.variants",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 × 5 s clips, one round")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="JSON dir")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="corpus/model cache")
    parser.add_argument("--model", type=Path, default=None, help="artifact (default models/demo.pt)")
    parser.add_argument("--clips-per-class", type=int, default=None, help="corpus size / 4")
    parser.add_argument("--repeat", type=int, default=1,
                        help="enqueue the corpus this many times per pass (steady state)")
    parser.add_argument("--only", default=",".join(VARIANTS),
                        help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    names = [n for n in VARIANTS if n in args.only.split(",")]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not names:
        parser.error(f"--only names none of {', '.join(VARIANTS)}")
    configure_logging("WARNING")
    logging.getLogger("bench").setLevel(logging.INFO)
    per_class, seconds = (2, 5.0) if args.quick else (24, 30.0)
    per_class = args.clips_per_class or per_class
    rounds = args.rounds or (1 if args.quick else 3)
    corpus = make_corpus(args.cache, per_class, seconds)
    model, _ = ensure_model(args.cache, args.model)
    manifest = read_manifest(model)
    defaults = WorkerSettings()
    opts = worker_decode_options(manifest, defaults)
    work = Path(tempfile.mkdtemp(prefix="genretag-variants-"))
    with LocalStack(work / "stack") as stack:
        try:
            null = {NULL_MODEL: ensure_null_model(args.cache, model),
                    NULL_MODEL_NATIVE: ensure_null_model(args.cache, model, CORPUS_RATE)
                    } if any(n.startswith("null_model") for n in names) else None
            per_round = run_variants(stack, model, corpus.paths, rounds, work, opts,
                                     defaults.decode.workers, names, null, args.repeat)
        except BaseException:
            log.error("bench.failed", extra={"logs_kept_in": str(work)})
            raise
    shutil.rmtree(work, ignore_errors=True)
    clips = len(corpus.paths) * args.repeat
    result = {"quick": args.quick, "clips": clips, "cpus": os.cpu_count(),
              "variants": {n: {"cmd": VARIANTS[n][0][-2:], "settings": VARIANTS[n][1]}
                           for n in names},
              "rounds": per_round, **summarise(per_round, names)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"variants-{'-'.join(names)}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    c, b = result["clips_per_s"], result["vs_first"]
    print(f"variants [medians of {rounds} rounds, {clips} clips]: decode per-file "
          f"{result['decode_per_file']}, amortised {result['decode_amortised']} clips/s | "
          + " | ".join(f"{n} {c[n]} (x{b[n]} vs {names[0]}, {result['cpu_ms_per_clip'][n]} CPU "
                       "ms/clip)" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
