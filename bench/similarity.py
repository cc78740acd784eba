"""Similarity search: the vector engines side by side on the issue's numbers, in one run.

    python -m bench.similarity [--quick] [--vectors 1000000] [--out bench/results]

* recall@10 of each engine against exact search (cosine, numpy) on synthetic vectors of the real
  size (musicnn's 200-d ``penultimate``): a mixture of clusters, queries drawn from it but not
  indexed; query p50/p95 one query at a time at several search breadths (ef);
* insertion: vectors/s to a searchable index, and memory (resident bytes per vector, each
  engine in its own process) — against the worker's tracks/s;
* the store → index path itself: EmbeddingWriter into a real redis-server, then IndexSync into
  the embedded index (vectors/s end to end);
* sense on real audio (``--real LABELS.csv --model ARTIFACT``, e.g. data/realset and a pulled
  musicnn): the share of each track's 10 nearest neighbours (other source pieces only) that
  are of its own style, against the share by chance.

Absolute numbers depend on the machine and its load; compare rows of the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.similarity_engines import ENGINES, normalise, run_engine

DIM, K = 200, 10
#: Engines whose queries are timed on fewer queries (milvus-lite 3: Python per row per query).
SLOW = ("milvus-lite",)


def synthetic(n: int, dim: int, seed: int, clusters: int = 2000) -> np.ndarray:
    """Clustered vectors (centres N(0, 1), spread 0.6 around them), like embeddings of styles."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        out[start:start + m] = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal(
            (m, dim), dtype=np.float32)
    return out


def exact_top(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Exact cosine top-k ids of each query (numpy, chunked)."""
    qn = normalise(q)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    for start in range(0, len(x), chunk):
        s = qn @ normalise(x[start:start + chunk]).T
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k] if s.shape[1] > k else np.tile(
            np.arange(s.shape[1]), (len(q), 1))
        cand_s = np.concatenate([best_s, np.take_along_axis(s, idx, 1)], axis=1)
        cand_i = np.concatenate([best_i, idx + start], axis=1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def engines_phase(n: int, queries: int, efs: tuple[int, ...], names: list[str], seed: int,
                  workdir: Path, slow_queries: int) -> dict[str, Any]:
    both = synthetic(n + queries, DIM, seed)  # queries: the same mixture, not indexed
    x, q = both[:n], both[n:]
    data, qfile = workdir / "x.npy", workdir / "q.npy"
    np.save(data, x)
    np.save(qfile, q)
    started = time.perf_counter()
    truth = exact_top(x, q, K)
    exact_s = time.perf_counter() - started
    del x, both
    out: dict[str, Any] = {"vectors": n, "dim": DIM, "queries": queries,
                           "exact_ms_per_query": 1000 * exact_s / queries, "engines": {}}
    ctx = mp.get_context("spawn")
    for name in names:
        cap = slow_queries if name in SLOW else None  # a query costs O(vectors) of Python
        with ctx.Pool(1) as pool:
            res = pool.apply(run_engine, (name, str(data), str(qfile), K, efs, 2, cap))
        res["queries"] = cap or queries
        for ef, row in res["by_ef"].items():
            found = np.array(row.pop("ids"))
            row["recall_at_10"] = recall(found, truth[:len(found)])
        out["engines"][name] = res
        print(json.dumps({name: {k: v for k, v in res.items() if k != "by_ef"}
                          | {"by_ef": res["by_ef"]}}), flush=True)
    return out


def sync_phase(n: int, seed: int, workdir: Path) -> dict[str, Any]:
    """EmbeddingWriter into a real redis-server, then IndexSync into the embedded index."""
    from genretag.cli.stack import LocalStack
    from genretag.core.settings import IndexSection, RedisSection
    from genretag.core.similarity import SimilaritySearch
    from genretag.core.store import EmbeddingWriter, KeyLayout, TrackVector, connect

    stack = LocalStack(workdir / "stack")
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    stack.start_redis()
    try:
        redis = RedisSection(url=stack.redis_url, key_prefix="bench:")
        writer = EmbeddingWriter(connect(redis, binary=True), KeyLayout("bench:"))
        x = synthetic(n, DIM, seed)
        started = time.perf_counter()
        for start in range(0, n, 64):  # worker-sized batches
            writer.write(TrackVector(f"t{i}", x[i], "bench.penultimate.000000000000", "bench")
                         for i in range(start, min(n, start + 64)))
        write_s = time.perf_counter() - started
        out: dict[str, Any] = {"vectors": n, "store_writes_per_s": n / write_s, "engines": {}}
        for engine, uri in (("usearch", "sync.usearch"), ("milvus-lite", "sync.db")):
            search = SimilaritySearch(redis, IndexSection(uri=str(workdir / uri)))
            started = time.perf_counter()
            report = search.sync()
            sync_s = time.perf_counter() - started
            times = []
            for i in range(20):  # the whole `similar` path: Redis lookup, (no-op) sync, search
                t = time.perf_counter()
                hits = search.similar_to_track(f"t{i}", 10)
                times.append(1000 * (time.perf_counter() - t))
            search.close()
            out["engines"][engine] = {"sync_per_s": n / sync_s, "upserted": report.upserted,
                                      "similar_ms_median": float(np.median(times)),
                                      "hits": len(hits)}
        return out
    finally:
        stack.stop()


def real_phase(labels: Path, model: Path, max_windows: int) -> dict[str, Any]:
    """Embed the labelled real set through the worker's path; same-style share of 10-NN."""
    from genretag.producer.ids import path_track_id
    from genretag.core.settings import load_settings
    from genretag.worker.oneshot import tag_files
    from genretag.worker.settings import WorkerSettings

    rows = list(csv.DictReader(open(labels)))
    root = labels.parent
    files = [(root / r["path"]).resolve() for r in rows]
    settings = load_settings(WorkerSettings, model_path=model, device="cpu",
                             allowed_roots=[str(root.resolve())], max_windows=max_windows,
                             decode_workers=2)
    started = time.perf_counter()
    outcomes = tag_files([(path_track_id(f), f) for f in files], settings)
    seconds = time.perf_counter() - started
    keep = [(r, o) for r, o in zip(rows, outcomes) if o.embedding is not None]
    labels_ = np.array([r["label"] for r, _ in keep])
    groups = np.array([r.get("group") or r["path"] for r, _ in keep])
    z = normalise(np.stack([o.embedding for _, o in keep]))
    sims = z @ z.T
    same, chance = [], []
    prior = Counter(labels_)
    for i in range(len(z)):
        other = groups != groups[i]  # other source pieces only: no near-duplicate clips
        order = [j for j in np.argsort(-sims[i]) if other[j]][:K]
        same.append(float(np.mean(labels_[order] == labels_[i])))
        chance.append((prior[labels_[i]] - np.sum(~other & (labels_ == labels_[i]))) /
                      max(1, other.sum()))
    per_style = {s: float(np.mean([v for v, lab in zip(same, labels_) if lab == s]))
                 for s in sorted(prior)}
    return {"tracks": len(z), "embedded_per_s": len(z) / seconds, "same_style_at_10":
            float(np.mean(same)), "chance": float(np.mean(chance)), "per_style": per_style}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20,000 vectors, 200 queries, no 1M run.")
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--engines", default="usearch-f32,faiss-hnsw,milvus-lite,usearch-f16")
    p.add_argument("--ef", default="32,64,128", help="Search breadths to time (comma list).")
    p.add_argument("--sync-vectors", type=int, default=100_000)
    p.add_argument("--slow-queries", type=int, default=50,
                   help="Queries timed on the engines of SLOW (default 50).")
    p.add_argument("--real", type=Path, help="labels.csv of a labelled real set (bench.realset).")
    p.add_argument("--model", type=Path, help="A schema-2 artifact for --real (musicnn).")
    p.add_argument("--max-windows", type=int, default=4)
    p.add_argument("--phases", default="engines,sync",
                   help="Which of engines, sync to run (comma list; --real adds the real set).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    n, queries, sync_n = args.vectors, args.queries, args.sync_vectors
    if args.quick:
        n, queries, sync_n = 20_000, 200, 5_000
    efs = tuple(int(e) for e in args.ef.split(","))
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "load_1m": os.getloadavg()[0]},
                              "quick": args.quick}
    phases = set(args.phases.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-similarity-") as tmp:
        if "engines" in phases:
            result["engines"] = engines_phase(n, queries, efs, args.engines.split(","),
                                              args.seed, Path(tmp), args.slow_queries)
        if "sync" in phases:
            result["sync"] = sync_phase(sync_n, args.seed, Path(tmp))
            print(json.dumps({"sync": result["sync"]}), flush=True)
    if args.real and args.model:
        result["real"] = real_phase(args.real, args.model, args.max_windows)
        print(json.dumps({"real": result["real"]}), flush=True)
    result["machine"]["load_1m_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.real and args.model:
        phases.add("real")
    name = f"similarity-{'quick-' if args.quick else ''}{'-'.join(sorted(phases))}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(summary(result))
    return 0


def summary(result: dict[str, Any]) -> str:
    lines = []
    if "engines" in result:
        eng = result["engines"]
        lines += [f"similarity: {eng['vectors']} vectors × {eng['dim']}; exact search "
                  f"{eng['exact_ms_per_query']:.1f} ms/query",
                  f"{'engine':<14} {'queries':>7} {'ef':>4} {'recall@10':>9} {'p50 ms':>7} "
                  f"{'p95 ms':>7} {'insert/s':>9} {'B/vector':>9}"]
        for name, e in eng["engines"].items():
            for ef, row in e["by_ef"].items():
                lines.append(f"{name:<14} {e['queries']:>7} {ef:>4} {row['recall_at_10']:>9.4f} "
                             f"{row['p50_ms']:>7.2f} {row['p95_ms']:>7.2f} "
                             f"{e['insert_per_s']:>9.0f} {e['bytes_per_vector']:>9.0f}")
    if "sync" in result:
        s = result["sync"]
        lines.append(f"store: {s['store_writes_per_s']:.0f} vector writes/s ({s['vectors']})")
        for name, e in s["engines"].items():
            lines.append(f"  sync into {name}: {e['sync_per_s']:.0f} vectors/s; `similar` by "
                         f"track id {e['similar_ms_median']:.1f} ms (median of 20)")
    if "real" in result:
        r = result["real"]
        lines.append(f"real audio: same style among 10 NN {r['same_style_at_10']:.2f} "
                     f"(chance {r['chance']:.2f}) over {r['tracks']} tracks")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
