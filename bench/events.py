"""What tag events cost a batch: the tag write (change detection in the Lua script) and the
events sink's publish + acknowledgement, side by side on a local Tansu + redis-server.

    python -m bench.events [--rounds 600] [--batch 16] [--labels 16]
    git show main:genretag/core/store/write.py > /tmp/old_write.py
    python -m bench.events --against /tmp/old_write.py   # also time an older write script

Each round writes one batch (its content alternates, so every write is a change) with each
script in alternating order, then publishes the batch's events; medians and per-round ratios
are printed as JSON, then a one-line summary. Absolute times move with the machine's load:
compare the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from genretag.cli.stack import LocalStack
from genretag.core.kafka import make_producer, topic_max_bytes
from genretag.core.settings import load_settings
from genretag.core.store import KeyLayout, TagWriter, connect
from genretag.schemas import TagRecord
from genretag.worker.job import Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.settings import WorkerSettings
from genretag.worker.sinks.events import EventSink


def batch_records(size: int, n_labels: int, round_no: int) -> list[TagRecord]:
    """``size`` records whose tags differ from the previous round's (a change each time)."""
    labels = [f"genre{i}" for i in range(n_labels)]
    out = []
    for i in range(size):
        probs = {g: ((i + j + round_no) % n_labels) / n_labels for j, g in enumerate(labels)}
        tagged = sorted((g for g in labels if probs[g] > 0.8), key=lambda g: -probs[g])
        out.append(TagRecord(track_id=f"t{i}", model_version=f"v{round_no % 2}",
                             probabilities=probs, labels=tagged,
                             primary_genre=max(probs, key=probs.get), uri=f"/m/{i}.mp3"))
    return out


def older_writer(path: Path, client: Any, keys: KeyLayout) -> Any:
    """The TagWriter of another version of ``genretag/core/store/write.py``."""
    spec = importlib.util.spec_from_file_location("older_write", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["older_write"] = module
    spec.loader.exec_module(module)
    return module.TagWriter(client, keys)


def quartiles(values: list[float]) -> dict[str, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return {"q1": round(q1, 4), "median": round(q2, 4), "q3": round(q3, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16, help="Tracks per batch.")
    parser.add_argument("--labels", type=int, default=16, help="Labels per model.")
    parser.add_argument("--against", type=Path, help="An older write.py to time beside.")
    args = parser.parse_args(argv)
    with LocalStack(Path(tempfile.mkdtemp(prefix="bench-events-"))) as stack:
        s = load_settings(WorkerSettings, redis_url=stack.redis_url,
                          kafka_bootstrap_servers=stack.bootstrap,
                          kafka_events_topic="bench-events")
        client = connect(s.redis)
        writer = TagWriter(client, KeyLayout("bench:"))
        older = older_writer(args.against, client, KeyLayout("older:")) if args.against else None
        producer = make_producer(s.kafka, max_request_size=topic_max_bytes(
            s.kafka, s.kafka.events_topic))
        sink = EventSink(s.kafka, "changed", s.events.top_k, WorkerMetrics(), producer)
        write_s, older_s, publish_s = [], [], []
        for r in range(args.rounds):
            records = batch_records(args.batch, args.labels, r)
            sources = [f"tracks:0:{r * args.batch + k}" for k in range(args.batch)]
            order = ("new", "older") if r % 2 else ("older", "new")
            for which in order:
                if which == "older" and older is not None:
                    start = time.perf_counter()
                    older.write(records)
                    older_s.append(time.perf_counter() - start)
                elif which == "new":
                    start = time.perf_counter()
                    result = writer.write(records, sources=sources)
                    write_s.append(time.perf_counter() - start)
            outcomes = [Outcome("tracks", 0, k, record=rec, previous=prev)
                        for k, (rec, prev) in enumerate(zip(records, result.by_record,
                                                            strict=True))]
            start = time.perf_counter()
            sink.write(outcomes)
            publish_s.append(time.perf_counter() - start)
        sink.close()
    report: dict[str, Any] = {
        "rounds": args.rounds, "batch": args.batch, "labels": args.labels,
        "tag_write_s": quartiles(write_s), "events_publish_s": quartiles(publish_s),
        "publish_vs_write": quartiles([p / w for p, w in zip(publish_s, write_s, strict=True)]),
    }
    if older_s:
        report["older_write_s"] = quartiles(older_s)
        report["write_vs_older"] = quartiles([n / o for n, o in zip(write_s, older_s,
                                                                     strict=True)])
    print(json.dumps(report, indent=2))
    write_ms = report["tag_write_s"]["median"] * 1e3
    publish_ms = report["events_publish_s"]["median"] * 1e3
    line = (f"bench.events: batch of {args.batch}: tag write {write_ms:.2f} ms, events "
            f"publish+ack {publish_ms:.2f} ms")
    if older_s:
        line += f", write vs older script {report['write_vs_older']['median']:.3f}x"
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
