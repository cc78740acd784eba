"""`python -m bench.run --quick` runs end to end (a smoke run: no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def test_quick_bench_runs_and_reports(tmp_path: Path, demo_model: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--cache",
         str(tmp_path / "cache"), "--model", str(demo_model)],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("bench"), lines[-1]
    result = json.loads("\n".join(lines[:-1]))
    assert result["quick"] is True
    rates = result["rates"]
    for key in ("decode_per_file", "decode_amortised", "worker", "naive"):
        assert rates[key]["median"] > 0, key
    assert result["decode"]["bit_exact"] is True
    assert result["workers"]["latency"]["p95"] > 0
    assert set(result["targets"]) >= {"worker_vs_per_file_decode", "worker_vs_naive",
                                      "latency_p95_s"}
    assert (out / "results.json").exists() and list(out.glob("*.png"))
