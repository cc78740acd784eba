"""`python -m bench.events` runs end to end (a smoke run: no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_events_bench_runs_and_reports(tmp_path: Path) -> None:
    older = tmp_path / "older_write.py"
    older.write_text((REPO / "genretag/core/store/write.py").read_text())
    proc = subprocess.run([sys.executable, "-m", "bench.events", "--rounds", "6", "--batch", "4",
                           "--against", str(older)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("bench.events: batch of 4"), lines[-1]
    report = json.loads("\n".join(lines[:-1]))
    assert report["rounds"] == 6
    for key in ("tag_write_s", "events_publish_s", "older_write_s", "write_vs_older"):
        assert report[key]["median"] > 0, key
