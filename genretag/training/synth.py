"""A small labelled audio set synthesised with FFmpeg, for the demo and tests.

Each class has its own timbre and rhythm (the two things MFCC-based genre models pick up),
with seeded per-clip variation in pitch, tempo and gain so the model must generalise rather
than memorise. Files are real mp3s in the folder-per-label (GTZAN) layout.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg


def _ambient(rng: random.Random, seconds: float) -> str:
    f = rng.uniform(110, 220)
    lfo = rng.uniform(0.15, 0.4)
    return (f"aevalsrc='(0.25*sin(2*PI*{f:.2f}*t)+0.15*sin(2*PI*{f * 1.5:.2f}*t)"
            f"+0.1*sin(2*PI*{f * 2.01:.2f}*t))*(0.6+0.4*sin(2*PI*{lfo:.3f}*t))'"
            f":s=44100:d={seconds}")


def _techno(rng: random.Random, seconds: float) -> str:
    bps = rng.uniform(2.0, 2.3)
    period = 1 / bps
    return (f"aevalsrc='0.8*sin(2*PI*{rng.uniform(45, 60):.1f}*t)*exp(-mod(t,{period:.4f})*18)"
            f"+0.15*sin(2*PI*{rng.uniform(7000, 9000):.0f}*t)*exp(-mod(t+{period / 2:.4f},{period:.4f})*80)'"
            f":s=44100:d={seconds}")


def _chiptune(rng: random.Random, seconds: float) -> str:
    f = rng.uniform(330, 520)
    step = rng.uniform(0.12, 0.2)
    return (f"aevalsrc='0.25*sgn(sin(2*PI*{f:.1f}*(1+0.25*mod(floor(t/{step:.3f}),4))*t))'"
            f":s=44100:d={seconds}")


def _noise(rng: random.Random, seconds: float) -> str:
    color = rng.choice(["pink", "brown"])
    return f"anoisesrc=c={color}:a={rng.uniform(0.2, 0.4):.2f}:d={seconds}:r=44100,tremolo=f={rng.uniform(5, 9):.1f}:d=0.9"


#: Class name → lavfi graph factory. Names are the demo model's labels.
GENRES: dict[str, Callable[[random.Random, float], str]] = {
    "ambient": _ambient,
    "chiptune": _chiptune,
    "noise": _noise,
    "techno": _techno,
}


@dataclass(frozen=True)
class SynthClip:
    """One generated clip; satisfies the trainer's item protocol (id, path, labels, split)."""

    item_id: str
    path: Path
    labels: list[str]
    split: str


def split_for(index: int) -> str:
    """Deterministic 4:1:1 train/validation/test split by position within a class."""
    return {4: "validation", 5: "test"}.get(index % 6, "training")


def synth_clip(path: Path, label: str, seconds: float, seed: int) -> Path:
    """Render one stereo 44.1 kHz 128 kbps mp3 of class ``label`` (like an FMA clip)."""
    rng = random.Random(seed)
    graph = GENRES[label](rng, seconds)
    gain = rng.uniform(0.6, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = ffmpeg.input(graph, f="lavfi").filter("volume", f"{gain:.2f}").output(
        str(path), ac=2, ar=44100, audio_bitrate="128k", acodec="libmp3lame"
    )
    argv = stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y").compile()
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return path


def synth_track(path: Path, segments: list[tuple[str | None, float]], seed: int = 0,
                bitrate: str = "128k") -> Path:
    """Render a long mp3 of consecutive ``(label, seconds)`` segments (label None: silence),
    e.g. a quiet intro then several classes: ground truth for whole-track tagging tests."""
    rng = random.Random(seed)
    inputs = [
        ffmpeg.input(GENRES[label](rng, seconds) if label else f"anullsrc=r=44100:cl=mono:d={seconds}",
                     f="lavfi")
        for label, seconds in segments
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    joined = ffmpeg.concat(*inputs, v=0, a=1) if len(inputs) > 1 else inputs[0]
    stream = joined.output(str(path), ac=1, ar=44100, audio_bitrate=bitrate, acodec="libmp3lame")
    argv = stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y").compile()
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return path


def make_synth_dataset(
    root: Path, per_class: int = 24, seconds: float = 8.0, seed: int = 0, workers: int = 4,
    labels: list[str] | None = None,
) -> list[SynthClip]:
    """Write ``root/<label>/<label>_NNN.mp3``; existing files are kept (idempotent)."""
    labels = labels or sorted(GENRES)
    jobs = [
        (Path(root) / label / f"{label}_{i:03d}.mp3", label, seed * 100003 + j * 1000 + i)
        for j, label in enumerate(labels)
        for i in range(per_class)
    ]
    todo = [job for job in jobs if not job[0].exists()]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda job: synth_clip(job[0], job[1], seconds, job[2]), todo))
    return [
        SynthClip(item_id=p.stem, path=p, labels=[label], split=split_for(i % per_class))
        for i, (p, label, _) in enumerate(jobs)
    ]
