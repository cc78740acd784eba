"""The vector engines bench.similarity compares, behind one small interface.

Each engine builds an index of the same vectors (cosine, HNSW with the same M and build
breadth), answers single queries at a given search breadth, and says how much memory it holds.
Each runs in its own process (:func:`run_engine`), so its resident memory is its own.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from genretag.core.settings import IndexSection

#: HNSW parameters every engine gets (the defaults of genretag's IndexSection).
M = IndexSection.model_fields["hnsw_m"].default
EF_CONSTRUCTION = IndexSection.model_fields["ef_construction"].default
BATCH = 10_000


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


class Engine:
    name = ""

    def build(self, x: np.ndarray) -> None: ...

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray: ...

    def disk_bytes(self) -> int:
        return 0

    def close(self) -> None: ...


class MilvusLite(Engine):
    """milvus-lite (embedded Milvus, pymilvus MilvusClient on a .db file): the same client code
    as a Milvus server; genretag's own VectorIndex settings."""

    name = "milvus-lite"

    def __init__(self, m: int = M, ef_construction: int = EF_CONSTRUCTION) -> None:
        from pymilvus import DataType, MilvusClient

        self.dir = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
        self.client = MilvusClient(str(self.dir / "bench.db"))
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        self.dim: int | None = None
        self.schema, self.m, self.efc = schema, m, ef_construction

    def build(self, x: np.ndarray) -> None:
        from pymilvus import DataType

        self.schema.add_field("vector", DataType.FLOAT_VECTOR, dim=x.shape[1])
        params = self.client.prepare_index_params()
        params.add_index("vector", index_type="HNSW", metric_type="COSINE",
                         params={"M": self.m, "efConstruction": self.efc})
        self.client.create_collection("v", schema=self.schema, index_params=params)
        for start in range(0, len(x), BATCH):
            rows = x[start:start + BATCH]
            self.client.insert("v", [{"id": start + i, "vector": r}
                                     for i, r in enumerate(rows.tolist())])
        if hasattr(self.client, "flush"):
            self.client.flush("v")
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:  # searchable with its index everywhere
            info = self.client.describe_index("v", "vector")
            if int(info.get("pending_index_rows", 0)) == 0 and int(
                    info.get("indexed_rows", 0)) >= len(x):
                break
            time.sleep(0.5)
        self.client.load_collection("v")

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        hits = self.client.search("v", [q.tolist()], limit=k, output_fields=[],
                                  search_params={"metric_type": "COSINE", "params": {"ef": ef}})[0]
        return np.array([h["id"] for h in hits], dtype=np.int64)

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.dir.rglob("*") if f.is_file())

    def close(self) -> None:
        self.client.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Usearch(Engine):
    """usearch (embedded HNSW library, one file; scale-out is sharding by hand)."""

    name = "usearch"

    def __init__(self, dtype: str = "f32") -> None:
        self.dtype = dtype
        self.name = f"usearch-{dtype}"

    def build(self, x: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(ndim=x.shape[1], metric="cos", dtype=self.dtype, connectivity=M,
                           expansion_add=EF_CONSTRUCTION)
        for start in range(0, len(x), BATCH):
            rows = x[start:start + BATCH]
            self.index.add(np.arange(start, start + len(rows)), rows, threads=0)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.expansion_search = ef
        return np.asarray(self.index.search(q, k).keys, dtype=np.int64)


class FaissHnsw(Engine):
    """faiss IndexHNSWFlat on L2-normalised vectors (inner product = cosine)."""

    name = "faiss-hnsw"

    def build(self, x: np.ndarray) -> None:
        import faiss

        self.index = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        for start in range(0, len(x), BATCH):
            self.index.add(normalise(x[start:start + BATCH]))

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.hnsw.efSearch = ef
        _, ids = self.index.search(normalise(q[None]), k)
        return ids[0].astype(np.int64)


ENGINES = {"milvus-lite": MilvusLite, "usearch-f32": lambda: Usearch("f32"),
           "usearch-f16": lambda: Usearch("f16"), "faiss-hnsw": FaissHnsw}


def run_engine(name: str, data: str, queries: str, k: int, efs: tuple[int, ...],
               threads: int, max_queries: int | None = None) -> dict[str, Any]:
    """Child process: build ``name`` on the vectors in ``data`` (npy), time single queries
    at each ef; returns timings, memory and the ids found (per ef)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    x = np.load(data)
    q = np.load(queries)[:max_queries]
    gc.collect()
    before = rss_bytes()
    engine = ENGINES[name]()
    started = time.perf_counter()
    engine.build(x)
    build_s = time.perf_counter() - started
    gc.collect()
    held = rss_bytes() - before
    out: dict[str, Any] = {"engine": engine.name, "vectors": len(x), "build_s": build_s,
                           "insert_per_s": len(x) / build_s, "rss_delta_bytes": held,
                           "bytes_per_vector": held / len(x), "disk_bytes": engine.disk_bytes(),
                           "by_ef": {}}
    for ef in efs:
        engine.search(q[0], k, ef)  # warm
        found, times = [], []
        for row in q:
            t = time.perf_counter()
            found.append(engine.search(row, k, ef))
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1000
        out["by_ef"][ef] = {"p50_ms": float(np.percentile(ms, 50)),
                            "p95_ms": float(np.percentile(ms, 95)),
                            "ids": np.stack([np.pad(f, (0, k - len(f)), constant_values=-1)
                                             for f in found]).tolist()}
    engine.close()
    return out
