"""The worker end to end with a pretrained tagger, at each coverage (windows per track).

One ``genretag work`` process per coverage, each its own consumer group on one real stack
(Tansu + redis-server), started together and idle between measurements; rounds alternate the
order. Per round: clips/s from the first enqueue to the last tag (bench/fleet.py), CPU ms per
clip split into the worker process (model, loop) and its decoder processes, and the worker's
own stage timers (``genretag_stage_seconds``: decode thread-seconds, model seconds) scraped
from its /metrics before and after. Then enqueue → tag latency at light load.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from bench.fleet import WORKER_CMD, Fleet
from genretag.cli.stack import LocalStack, free_port
from genretag.core.store import KeyLayout, TagReader

_STAGE = re.compile(r'^genretag_stage_seconds_sum\{stage="(\w+)"\}\s+(\S+)', re.M)


def stage_seconds(port: int) -> dict[str, float]:
    """The worker's cumulative seconds per stage (decode, model, write, commit)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {stage: float(value) for stage, value in _STAGE.findall(text)}


def windows_per_clip(fleet: Fleet, tag: str) -> float:
    """Mean windows the worker read per track, from the timelines it stored for ``tag``."""
    ids = [k.split("track:", 1)[1] for k in fleet.redis.scan_iter(f"{fleet.prefix}track:{tag}-*")]
    store = TagReader(fleet.redis, KeyLayout(fleet.prefix))
    counts = [len(r.timeline.starts) for r in store.get_many(ids).values()
              if r is not None and r.timeline is not None]
    return round(sum(counts) / len(counts), 2) if counts else float("nan")


def measure(fleet: Fleet, port: int, paths: list[Path], tag: str) -> dict[str, object]:
    """One throughput round with the CPU split and the stage timers."""
    proc = fleet.procs[0]
    stages0, (own0, kids0) = stage_seconds(port), proc.cpu_split()
    row = fleet.throughput(paths, tag)
    stages1, (own1, kids1) = stage_seconds(port), proc.cpu_split()
    clips = max(1, int(row["tagged"]))
    model_s = stages1["model"] - stages0["model"]
    row.update({
        "worker_cpu_ms_per_clip": round(1e3 * (own1 - own0) / clips, 1),
        "decoder_cpu_ms_per_clip": round(1e3 * (kids1 - kids0) / clips, 1),
        "decode_thread_ms_per_clip": round(1e3 * (stages1["decode"] - stages0["decode"]) / clips, 1),
        "model_ms_per_clip": round(1e3 * model_s / clips, 1),
        "model_busy_share": round(model_s / float(row["seconds"]), 3),
        "windows_per_clip": windows_per_clip(fleet, tag),
    })
    cpu = row["worker_cpu_ms_per_clip"] + row["decoder_cpu_ms_per_clip"]
    row["decode_cpu_share"] = round(row["decoder_cpu_ms_per_clip"] / cpu, 3) if cpu else None
    return row


def worker_phase(model: Path, paths: list[Path], coverages: list[int], rounds: int,
                 latency_s: float, device: str, work: Path) -> dict[str, object]:
    """Rounds of every coverage's worker on ``paths``; then latency at 1 message/s."""
    out: dict[str, object] = {"coverages": coverages, "device": device, "rounds": []}
    roots = sorted({p.parent.parent for p in paths})
    with LocalStack(work / "stack") as stack:
        fleets: dict[int, tuple[Fleet, int]] = {}
        try:
            for c in coverages:
                fleet, port = Fleet(stack, model, roots, work / f"w{c}"), free_port()
                fleet.start(f"worker_w{c}", WORKER_CMD, max_windows=c, metrics_port=port,
                            metrics_host="127.0.0.1", device=device)
                fleets[c] = (fleet, port)
            for fleet, _ in fleets.values():
                fleet.wait_ready(settle_s=0.0)
            time.sleep(2.0)
            out["warm_up_s"] = {c: round(f.warm_up(paths[0]), 2) for c, (f, _) in fleets.items()}
            for r in range(rounds):
                order = coverages if r % 2 == 0 else coverages[::-1]
                out["rounds"].append({f"w{c}": measure(*fleets[c], paths, f"r{r}c{c}")
                                      for c in order})
            out["latency"] = {f"w{c}": _latency(f, paths, latency_s, c)
                              for c, (f, _) in fleets.items()}
            out["peak_rss_mib"] = {f"w{c}": f.procs[0].peak_rss_mib()
                                   for c, (f, _) in fleets.items()}
        finally:
            for fleet, _ in fleets.values():
                fleet.stop()
    return out


def _latency(fleet: Fleet, paths: list[Path], seconds: float, coverage: int) -> dict[str, object]:
    got = fleet.latency(paths, rate=1.0, seconds=seconds, tag=f"lat{coverage}")
    got.pop("latencies_s", None)
    return got
