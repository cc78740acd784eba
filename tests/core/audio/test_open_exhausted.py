"""A worker out of file descriptors: its opens wait for descriptors, never blame the file.

Runs in a child interpreter whose open-files limit is lowered and used up, so the test's own
process keeps its descriptors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genretag.core.audio.uri import EXHAUSTED_BACKOFF_S

_CHILD = r"""
import json, os, resource, sys, threading, time
from bench.decode_many import decode_many  # imported before the descriptors run out
from genretag.core.audio.decoders import DecodeOptions, open_decoder
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import open_vetted, resolve_source
from genretag.core.errors import PermanentError

path, mode = sys.argv[1], sys.argv[2]
src = resolve_source(path, [os.path.dirname(path)])
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
hogs = []
try:
    while True:
        hogs.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
if mode == "freed":  # another decode finishes and gives its descriptor back
    threading.Timer(0.2, os.close, [hogs.pop()]).start()
started = time.monotonic()
out = {}
try:
    if mode == "group":  # a group decode (the FFmpeg backend's windows): each file its outcome
        results = open_decoder("ffmpeg").decode_tracks([src, src], 8000, Placement(1.0))
        out["results"] = [getattr(r, "reason", "ok") for r in results]
    elif mode == "bench_group":  # the benchmarks' whole-file groups (tests/bench)
        results = decode_many([src, src], DecodeOptions(sample_rate=8000, max_seconds=1))
        out["results"] = [getattr(r, "reason", "ok") for r in results]
    else:
        os.close(open_vetted(src, "t1"))
        out["opened"] = True
except PermanentError as exc:
    out.update(reason=str(exc.reason), detail=str(exc), stage=exc.stage, track_id=exc.track_id)
out["seconds"] = time.monotonic() - started
print(json.dumps(out))
"""


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def _run(path: Path, mode: str) -> dict:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), mode], capture_output=True,
                          text=True, timeout=60, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tone(path: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", str(path)], check=True)
    return path


def test_an_open_waits_for_a_descriptor_to_come_back(tmp_path: Path) -> None:
    got = _run(_tone(tmp_path / "a.wav"), "freed")
    assert got.get("opened") is True, got
    assert 0.15 <= got["seconds"] < sum(EXHAUSTED_BACKOFF_S)


def test_a_worker_out_of_descriptors_parks_the_track_as_internal_not_missing(
        tmp_path: Path) -> None:
    got = _run(_tone(tmp_path / "a.wav"), "single")
    assert got["reason"] == "internal", got  # not "missing_file": the file was never judged
    assert "out of file descriptors" in got["detail"] and "ulimit -n" in got["detail"]
    assert got["stage"] == "validate" and got["track_id"] == "t1"
    assert sum(EXHAUSTED_BACKOFF_S) * 0.9 <= got["seconds"] < 10  # bounded wait


def test_a_group_decode_out_of_descriptors_gives_each_file_its_outcome(tmp_path: Path) -> None:
    got = _run(_tone(tmp_path / "a.wav"), "group")
    assert got.get("results") == ["internal", "internal"], got
