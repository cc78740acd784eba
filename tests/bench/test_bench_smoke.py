"""`python -m bench.run --quick` runs end to end (a smoke run: no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


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
    for key in ("decode_per_file", "decode_amortised", "worker", "naive", "decode_codec_floor",
                "decode_inprocess_floor", "decode_decoder_pool", "worker_null", "worker_ffmpeg"):
        assert rates[key]["median"] > 0, key
    assert result["decode"]["bit_exact"] is True
    assert result["workers"]["latency"]["p95"] > 0
    assert set(result["targets"]) >= {"worker_vs_per_file_decode", "worker_vs_naive",
                                      "latency_p95_s", "worker_null_vs_codec_floor",
                                      "worker_vs_amortised_decode", "peak_rss_vs_worker_ffmpeg"}
    rss = result["workers"]["peak_rss_mib"]
    assert rss["worker"] > 0 and rss["worker_ffmpeg"] > 0
    ratios = result["ratios"]
    assert ratios["amortised_decode_vs_naive"]["median"] > 0  # the ceiling beside the 5x
    if len(result["machine"]["affinity"]) >= 2:
        assert ratios["decode_two_vs_one_core"]["median"] > 0  # FFmpeg's own scaling
    assert {"cpu", "cpu_optimized"} <= set(result["model_alone"])
    long = result["long_tracks"]  # 30 s clips vs 5-minute tracks, same window count
    assert long["long_vs_clip"] > 0 and "long_vs_clip" in result["targets"]
    assert all(r["clip_30s"]["windows"] == r["track_5min"]["windows"] for r in long["rounds"])
    assert (out / "results.json").exists() and list(out.glob("*.png"))


def test_null_model_keeps_the_contract_and_does_no_work(tmp_path: Path, demo_model: Path) -> None:
    """bench.variants' null_model: same manifest contract, loads and verifies like the real one."""
    import numpy as np

    from bench.corpus import ensure_null_model
    from genretag.core.artifact import read_manifest
    from genretag.worker.infer import Tagger
    from genretag.worker.settings import ModelSection

    path = ensure_null_model(tmp_path, demo_model)
    assert ensure_null_model(tmp_path, demo_model) == path  # cached
    real, null = read_manifest(demo_model), read_manifest(path)
    assert (null.labels, null.sample_rate, null.clip_seconds) == (
        real.labels, real.sample_rate, real.clip_seconds)
    assert null.version != real.version and null.sha256 != real.sha256
    tagger = Tagger.load(ModelSection(path=path, device="cpu"))
    probs = tagger.predict([np.ones((3, null.clip_samples), np.float32)])
    assert probs.shape == (1, len(real.labels)) and np.allclose(probs, 0.5)
    # null_model_native: the same at another rate (the decoders then never resample), cached apart.
    native = ensure_null_model(tmp_path, demo_model, 44100)
    assert native != path and read_manifest(native).sample_rate == 44100 != real.sample_rate
    assert read_manifest(native).clip_seconds == real.clip_seconds
    assert Tagger.load(ModelSection(path=native, device="cpu")).manifest.clip_samples == round(44100 * real.clip_seconds)


def test_coverage_bench_reports_cost_per_analysed_second(tmp_path: Path, demo_model: Path) -> None:
    """bench.coverage end to end on small sets: both coverages, windows as placed, ratios."""
    from bench.coverage import coverage_bench

    report = coverage_bench([demo_model], tmp_path / "cache", rounds=1,
                            plan={"clip_30s": (30.0, 2), "track_90s": (90.0, 1)})
    [figures] = report["models"].values()
    default, few = figures["default"], figures["4_windows"]
    assert default["sets"]["clip_30s"]["windows"] == 5  # 6 s model: 30 s end to end
    assert default["sets"]["track_90s"]["windows"] == 10 and few["sets"]["track_90s"]["windows"] == 4
    assert default["sets"]["clip_30s"]["analysed_s"] == 30.0
    for cov in (default, few):
        for row in cov["sets"].values():
            assert row["clips_per_s"] > 0 and row["cpu_s_per_clip"] > 0
        assert cov["per_analysed_s_vs_clip"]["track_90s"] > 0
