"""`bench.similarity` and `bench.from_store` run end to end at a small scale and report what
docs/similarity.md quotes (recall against exact search, memory, the store → index path, a head
fit on stored vectors); no speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_similarity_bench_measures_recall_memory_and_the_store_to_index_path(
        tmp_path: Path) -> None:
    bench("bench.similarity", "--vectors", "3000", "--queries", "50", "--engines",
          "usearch-f16", "--ef", "16,64", "--phases", "engines,sync", "--sync-vectors", "500",
          "--out", str(tmp_path))
    result = json.loads((tmp_path / "similarity-engines-sync.json").read_text())
    usearch = result["engines"]["engines"]["usearch-f16"]
    assert usearch["vectors"] == 3000 and usearch["queries"] == 50
    by_ef = usearch["by_ef"]
    assert set(by_ef) == {"16", "64"}
    assert by_ef["64"]["recall_at_10"] >= 0.9  # HNSW against exact numpy search
    assert by_ef["64"]["recall_at_10"] >= by_ef["16"]["recall_at_10"] - 0.02
    assert by_ef["64"]["p95_ms"] >= by_ef["64"]["p50_ms"] > 0
    assert usearch["bytes_per_vector"] > 0 and usearch["insert_per_s"] > 0
    sync = result["sync"]
    assert sync["vectors"] == 500
    for name in ("usearch", "milvus-lite"):
        assert sync["engines"][name]["upserted"] == 500
        assert sync["engines"][name]["hits"] == 10


def test_from_store_bench_fits_a_head_on_every_stored_vector(tmp_path: Path) -> None:
    bench("bench.from_store", "--tracks", "1500", "--out", str(tmp_path))
    result = json.loads((tmp_path / "from_store-1500.json").read_text())
    assert (result["found"], result["missing"]) == (1500, 0)
    assert result["test_accuracy"] > 0.5  # ten overlapping styles: chance is 0.1
    assert result["from_store_total_s"] > result["fit_s"] > 0
