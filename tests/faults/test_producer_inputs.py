"""Catalog readers bound memory before parsing: one huge line, or a catalog exported as one
JSON array, is skipped and named by its line, never read whole.

Before, ``produce`` of a JSONL source with one 256 MiB line peaked at 578 MB (65 MB for 10
rows), and a catalog exported as one 66 MiB JSON array at 504 MB: the whole line was read and
parsed before any size check. Peak RSS of each ``genretag produce`` process is measured here
(``VmHWM`` at its exit). Servers: the shared Tansu.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.config import FULL, REPO_ROOT, SIZES
from tests.faults.harness import fault_settings, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

#: The issue's sizes with GENRETAG_FAULTS_FULL=1; smaller (same effect, faster) by default.
HUGE_LINE_MB, ARRAY_MB = (256, 66) if FULL else (64, 32)
#: Most a huge line may add to the producer's peak RSS (without the bound: 2-3x the line).
RSS_BOUND_MB = 48
#: Runs ``genretag`` and prints its peak RSS (VmHWM, kB) to stderr at exit. Not ru_maxrss:
#: Linux keeps that across exec, so a child of the (large) test process starts with its peak.
MEASURED = ("import atexit, sys; atexit.register(lambda: sys.stderr.write('PEAK_RSS_KB ' + "
            "[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1] "
            "+ '\\n')); from genretag.cli import main; sys.exit(main())")


def good_rows(clips: list[Path], n: int) -> list[str]:
    return [json.dumps({"track_id": f"pi-{i}", "uri": str(clips[i % len(clips)])})
            for i in range(n)]


def write_huge_line(path: Path, rows: list[str], megabytes: int) -> int:
    """``rows`` with one ``megabytes`` MiB row in the middle; returns its line number."""
    middle = len(rows) // 2
    with open(path, "w") as out:
        for row in rows[:middle]:
            out.write(row + "\n")
        out.write('{"track_id": "pi-huge", "uri": "/x.mp3", "metadata": {"pad": "')
        block = "x" * (1 << 20)
        for _ in range(megabytes):
            out.write(block)
        out.write('"}}\n')
        for row in rows[middle:]:
            out.write(row + "\n")
    return middle + 1


def write_array(path: Path, clips: list[Path], megabytes: int) -> None:
    """A catalog exported as one JSON array on one line (``megabytes`` MiB)."""
    row = {"track_id": "pi-a", "uri": str(clips[0]), "metadata": {"pad": "y" * 4000}}
    one = json.dumps(row)
    with open(path, "w") as out:
        out.write("[")
        for i in range(megabytes * (1 << 20) // len(one)):
            out.write(("," if i else "") + one)
        out.write("]\n")


def test_huge_lines_are_skipped_and_named_in_bounded_memory(
    stack, demo_model, fault_clips, tmp_path, figures
) -> None:
    settings = fault_settings(stack, demo_model, [fault_clips[0].parent.parent])
    env = {**os.environ, **settings_env(settings)}
    rows = good_rows(fault_clips, 10)
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(rows) + "\n")
    huge = tmp_path / "huge-line.jsonl"
    huge_line = write_huge_line(huge, rows, HUGE_LINE_MB)
    array = tmp_path / "catalog.json"
    write_array(array, fault_clips, ARRAY_MB)

    def produce(source: Path, stdin: Path | None = None) -> tuple[int, dict, str, int]:
        arg = "-" if stdin else str(source)
        with open(stdin or os.devnull, "rb") as feed:
            done = subprocess.run(
                [sys.executable, "-c", MEASURED, "produce", arg, "--no-progress", "--json"],
                env=env, cwd=REPO_ROOT, stdin=feed, capture_output=True, text=True, timeout=300)
        peak = [int(line.split()[1]) for line in done.stderr.splitlines()
                if line.startswith("PEAK_RSS_KB")]
        report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
        return done.returncode, report, done.stderr, peak[-1] * 1024 if peak else -1

    base_rc, base_report, base_err, base_peak = produce(small)
    runs = {
        f"JSONL file with one {HUGE_LINE_MB} MiB line": (produce(huge), f"{huge}:{huge_line}:"),
        f"the same on standard input": (produce(huge, stdin=huge), f"<stdin>:{huge_line}:"),
        f"catalog exported as one {ARRAY_MB} MiB JSON array": (produce(array), f"{array}:1:"),
    }
    added = {name: (peak - base_peak) / 2**20 for name, ((_, _, _, peak), _) in runs.items()}
    figures("producer: huge catalog lines", bad_inputs=len(runs),
            tracks=2 * len(rows), lost=sum(10 - r[1].get("enqueued", 0) for r, _ in
                                           list(runs.values())[:2]),
            baseline_peak_rss_mb=round(base_peak / 2**20, 1),
            **{f"peak_rss_added_mb_{i}": round(a, 1) for i, a in enumerate(added.values())},
            cases=[{"name": name, "expected": ["skipped, named by line, bounded memory"],
                    "got": ("named" if where in err else "not named")
                    + f", +{added[name]:.0f} MiB peak RSS"}
                   for name, ((_, _, err, _), where) in runs.items()])
    assert base_rc == 0 and base_report["enqueued"] == 10, base_err[-2000:]
    for name, ((rc, report, err, peak), where) in runs.items():
        assert peak > 0, (name, err[-2000:])
        assert f"{where} line is over" in err, (name, err[-2000:])
        assert added[name] < RSS_BOUND_MB, f"{name}: +{added[name]:.0f} MiB peak RSS"
        if "array" not in name:
            assert rc == 0 and report["enqueued"] == 10, (name, report, err[-2000:])
