"""A 20-minute 96 kHz/24-bit stereo WAV (~690 MB, a lossless master) is tagged within the file
size cap, and the worker's memory does not grow with the file: `genretag tag` (the worker's
exact path) is measured, decoder processes included, against a 30 s file of the same format.

The big file is sparse: a header, then one second of tone every ten seconds, holes between
(they read as digital silence), so it is written in about a second."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from genretag.core.settings import AccessSection

ROOT = Path(__file__).resolve().parents[2]
RATE, CHANNELS, BYTES = 96000, 2, 3
#: The old cap, which refused a 7-minute master.
OLD_CAP = 200 * 1024 * 1024


def write_master(path: Path, seconds: float, tone_every_s: float = 10.0) -> Path:
    """A PCM s24le WAV of ``seconds``: one second of a 440 Hz tone every ``tone_every_s``."""
    frame = CHANNELS * BYTES
    data_bytes = int(seconds * RATE) * frame
    t = np.arange(RATE) / RATE
    tone = (0.4 * np.sin(2 * np.pi * 440 * t) * (2 ** 23 - 1)).astype("<i4")
    packed = np.repeat(tone, CHANNELS).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    with open(path, "wb") as fh:
        fh.write(b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE")
        fh.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, RATE, RATE * frame, frame,
                                       8 * BYTES))
        fh.write(b"data" + struct.pack("<I", data_bytes))
        start = fh.tell()
        for at in np.arange(0.0, seconds - 1.0, tone_every_s):
            fh.seek(start + int(at * RATE) * frame)
            fh.write(packed)
        fh.truncate(start + data_bytes)
    return path


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (0 for those already gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def peak_rss_of_tag(path: Path, model: Path) -> tuple[int, dict]:
    """Peak resident bytes of `genretag tag FILE` (process tree, sampled every 20 ms), and the
    JSON line it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "genretag", "--log-level", "WARNING", "tag", str(path),
         "--model", str(model), "--jsonl", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        # Model calls of 8 windows for both files: the measured call size (what fits the CPU
        # best at load) varies with the host's load, and a call's working set with it.
        env={**os.environ, "PYTHONPATH": str(ROOT), "GENRETAG_INFERENCE_MAX_WINDOWS": "8"})
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=600)
    sampler.join()
    assert proc.returncode == 0, err
    return peak[0], json.loads(out)


def test_a_20_minute_96k_24bit_master_is_tagged_in_bounded_memory(
        tmp_path: Path, demo_model: Path) -> None:
    big = write_master(tmp_path / "master.wav", 1200.0)
    small = write_master(tmp_path / "clip.wav", 30.0)
    size = big.stat().st_size
    assert 680e6 < size < AccessSection().max_file_bytes and size > OLD_CAP
    assert os.stat(big).st_blocks * 512 < 0.2 * size  # sparse: the test writes ~70 MB
    big_peak, big_row = peak_rss_of_tag(big, demo_model)
    small_peak, small_row = peak_rss_of_tag(small, demo_model)
    assert big_row["duration_s"] == pytest.approx(1200.0, abs=0.5) and big_row["primary_genre"]
    assert small_row["duration_s"] == pytest.approx(30.0, abs=0.5)
    print(f"\npeak RSS (tree): 20-min master {big_peak / 2**20:.0f} MiB, "
          f"30 s clip {small_peak / 2**20:.0f} MiB, file {size / 2**20:.0f} MiB")
    # The file is ~660 MiB (decoded whole: ~920 MB of float32). Memory grows by the windows
    # only: 40 × 6 s at 22.05 kHz, 21 MB, held by the decoder process's buffer and the worker
    # (both counted here) plus model calls; measured +29 to +92 MiB under load.
    assert big_peak - small_peak < 0.25 * size, (big_peak, small_peak)
