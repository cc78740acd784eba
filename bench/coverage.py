"""Coverage cost: what the whole-track default costs against the old 4 windows, per model.

``python -m bench.coverage [--model PATH ...] [--rounds 2] [--out FILE.json]`` tags three sets
(30 s clips, 5-minute and 20-minute tracks) through the worker's own path without Kafka or
Redis (a :class:`genretag.worker.process.Processor`, libav decoder processes, the model loaded
once), at the default coverage and at ``max_windows=4``, interleaved round by round. Each row:
clips/s, CPU seconds per clip (this process, its decoder processes and any FFmpeg it ran),
windows per track and CPU seconds per analysed second of audio. ``per_analysed_s_vs_clip`` is
the 5- and 20-minute tracks' CPU per analysed second over the 30 s clips' (target <= 1.2).
Absolute figures move with the machine and its load; the ratios of one run are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path

from bench.corpus import DEFAULT_CACHE, ensure_model
from bench.longtrack import make_tracks
from genretag.core.logs import configure_logging, get_logger

log = get_logger("bench.coverage")

#: Tracks per set: fewer long ones (each holds many windows).
SETS = {"clip_30s": (30.0, 8), "track_5min": (300.0, 4), "track_20min": (1200.0, 2)}
#: The coverages compared: the settings' default, and the old default of 4 windows.
COVERAGES = {"default": {}, "4_windows": {"max_windows": 4}}
_TICK = os.sysconf("SC_CLK_TCK")


def twenty_minute_tracks(cache: Path, count: int) -> list[Path]:
    """``count`` 20-minute mp3s, each four of the 5-minute tracks joined without re-encoding."""
    five = make_tracks(cache, max(4, count), 300.0)
    root = (Path(cache) / "tracks-1200s").resolve()
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = root / f"track_{i:03d}.mp3"
        if not path.exists():
            listing = root / f"track_{i:03d}.txt"
            listing.write_text("".join(f"file '{five[(i + k) % len(five)]}'\n" for k in range(4)))
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat",
                            "-safe", "0", "-i", str(listing), "-c", "copy", str(path)], check=True)
        out.append(path)
    return out


def tree_cpu() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    todo = [int(c) for t in os.listdir("/proc/self/task")
            for c in Path(f"/proc/self/task/{t}/children").read_text().split()]
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            todo += [int(c) for t in os.listdir(f"/proc/{pid}/task")
                     for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(processor, paths: list[Path]) -> dict[str, float]:
    """One pass over ``paths``: clips/s, CPU s per clip, windows and analysed seconds per track."""
    from genretag.producer.ids import path_track_id
    from genretag.schemas import TrackRef
    from genretag.worker.oneshot import LocalMessage

    messages = [LocalMessage(TrackRef(track_id=path_track_id(p), uri=str(p)).model_dump_json()
                             .encode(), offset=k) for k, p in enumerate(paths)]
    cpu0, t0 = tree_cpu(), time.perf_counter()
    outcomes = processor.process(messages)
    wall, cpu = time.perf_counter() - t0, tree_cpu() - cpu0
    bad = [o.dead for o in outcomes if o.record is None]
    if bad:
        raise RuntimeError(f"coverage bench: {len(bad)} file(s) not tagged: {bad[0]}")
    tl = outcomes[0].record.timeline
    windows = len(tl.starts)
    analysed = min(windows * tl.clip_seconds, outcomes[0].record.duration_s or 0.0)
    return {"clips_per_s": round(len(paths) / wall, 3),
            "cpu_s_per_clip": round(cpu / len(paths), 4),
            "windows": windows, "analysed_s": round(analysed, 1),
            "cpu_s_per_analysed_s": round(cpu / len(paths) / analysed, 5)}


def coverage_bench(models: list[Path], cache: Path, rounds: int,
                   plan: dict[str, tuple[float, int]] | None = None) -> dict[str, object]:
    """Every model × coverage × set (``plan``: name → (seconds, tracks), default :data:`SETS`;
    ``clip_30s`` is the reference), ``rounds`` interleaved rounds; medians and ratios."""
    from genretag.core.settings import load_settings
    from genretag.worker.infer import Tagger
    from genretag.worker.process import Processor
    from genretag.worker.settings import WorkerSettings

    sets = {name: (twenty_minute_tracks(cache, n) if seconds == 1200.0
                   else make_tracks(cache, n, seconds))
            for name, (seconds, n) in (plan or SETS).items()}
    roots = sorted({str(p.parent) for ps in sets.values() for p in ps})
    result: dict[str, object] = {"loadavg_start": list(os.getloadavg()), "models": {}}
    for model in models:
        base = load_settings(WorkerSettings, model_path=str(model), allowed_roots=roots,
                             device="cpu", decode_workers=2)
        tagger = Tagger.load(base.model)
        rows: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in sets} for c in COVERAGES}
        for r in range(rounds):
            for cov, overrides in COVERAGES.items():
                processor = Processor(base.updated(**overrides) if overrides else base, tagger)
                try:
                    for name, paths in sets.items():
                        rows[cov][name].append(measure(processor, paths))
                finally:
                    processor.close()
            log.info("bench.coverage_round", extra={"model": str(model), "round": r})
        result["models"][tagger.manifest.version] = _summary(rows)  # type: ignore[index]
    result["loadavg_end"] = list(os.getloadavg())
    return result


def _summary(rows: dict[str, dict[str, list[dict]]]) -> dict[str, object]:
    """Medians per coverage and set, and the per-analysed-second ratios of each round."""
    out: dict[str, object] = {}
    for cov, by_set in rows.items():
        med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for name, runs in by_set.items()}
        clip = by_set["clip_30s"]
        ratios = {name: round(statistics.median(
            r["cpu_s_per_analysed_s"] / c["cpu_s_per_analysed_s"]
            for r, c in zip(runs, clip, strict=True)), 2)
            for name, runs in by_set.items() if name != "clip_30s"}
        out[cov] = {"sets": med, "per_analysed_s_vs_clip": ratios, "rounds": by_set}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="Artifact(s) to measure (default: the demo/bench model; add "
                        "models/msd_musicnn.pt from `genretag models pull musicnn-msd`).")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    configure_logging("WARNING", json_logs=False)
    models = args.model or [ensure_model(args.cache)[0]]
    report = coverage_bench(models, args.cache, args.rounds)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
