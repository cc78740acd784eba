"""Long-track phase: 30 s clips vs 5-minute tracks at the same window count, side by side.

Whole-track tagging must cost the same whatever a track's length (FFmpeg seeks to each
window). Both sets go through the worker's own path without Kafka or Redis
(:func:`genretag.worker.oneshot.tag_files`: vetting, probe, seeking decode, model, record), and through
the window decode alone; each rate is clips/s, and ``long_vs_clip`` (target >= 0.7) is the
5-minute rate over the 30 s rate measured in the same round. ``ffmpeg_cpu_clip_vs_long`` is the
same comparison in FFmpeg CPU seconds per file, which a busy host's wall clock does not blur.
"""

from __future__ import annotations

import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genretag.core.audio.decoders import DEFAULT_GROUP_SIZE, open_decoder
from genretag.core.audio.placement import Placement
from genretag.core.audio.uri import AudioSource
from genretag.core.logs import get_logger
from genretag.schemas import ModelManifest
from genretag.worker.settings import WorkerSettings

log = get_logger(__name__)

CLASSES = ("ambient", "chiptune", "noise", "techno")
#: Windows per track in both sets of this phase.
SAME_WINDOWS = 4


def make_tracks(cache: Path, count: int, seconds: float) -> list[Path]:
    """``count`` mp3s of ``seconds``, each a sequence of demo classes; reused when present."""
    from genretag.training.synth import synth_track

    root = (Path(cache) / f"tracks-{seconds:g}s").resolve()
    paths = [root / f"track_{i:03d}.mp3" for i in range(count)]
    todo = [(i, p) for i, p in enumerate(paths) if not p.exists()]

    def one(job: tuple[int, Path]) -> None:
        i, path = job
        part = seconds / 3
        segs = [(CLASSES[(i + k) % 4], part) for k in range(3)]
        tmp = path.with_suffix(".tmp.mp3")
        synth_track(tmp, segs, seed=i)
        tmp.rename(path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, todo))
    return paths


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _decode_rate(paths: list[Path], manifest: ModelManifest, settings: WorkerSettings,
                 workers: int) -> tuple[float, float, int]:
    """clips/s and FFmpeg CPU seconds per clip of the window decode alone; windows per track."""
    sources = [AudioSource(str(p), is_local=True) for p in paths]
    size = DEFAULT_GROUP_SIZE
    groups = [sources[i:i + size] for i in range(0, len(sources), size)]
    placement = Placement.of(manifest.clip_seconds, settings.windows)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    decoder = open_decoder("ffmpeg", group_size=size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = [r for g in pool.map(lambda g: decoder.decode_tracks(
            g, manifest.sample_rate, placement, timeout_s=settings.decode.timeout_s), groups)
            for r in g]
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    bad = [r for r in done if isinstance(r, Exception)]
    if bad:
        raise RuntimeError(f"long-track bench: {len(bad)} files failed to decode: {bad[0]}")
    return len(paths) / wall, cpu / len(paths), len(done[0].starts)


def long_track_phase(cache: Path, model: Path, count: int, rounds: int,
                     decode_workers: int) -> dict[str, object]:
    """Rates for 30 s clips and 5-minute tracks (decode alone, and the worker path), per round."""
    from genretag.core.settings import load_settings
    from genretag.producer.ids import path_track_id
    from genretag.worker.infer import Tagger
    from genretag.worker.oneshot import tag_files
    from genretag.worker.settings import ModelSection

    sets = {"clip_30s": make_tracks(cache, count, 30.0), "track_5min": make_tracks(cache, count, 300.0)}
    roots = sorted({str(p.parent) for ps in sets.values() for p in ps})
    # The same window count for both sets (what the comparison is about): 4 spread windows,
    # not the default coverage (end to end on clips; bench.coverage measures that).
    settings = load_settings(WorkerSettings, model_path=str(model), allowed_roots=roots,
                             decode_workers=decode_workers, device="cpu",
                             max_windows=SAME_WINDOWS, window_every=0)
    tagger = Tagger.load(ModelSection(path=settings.model.path, device="cpu", torch_threads=settings.model.torch_threads))
    m = tagger.manifest
    rows = []
    for r in range(rounds):
        row: dict[str, object] = {}
        for name, paths in sets.items():
            rate, cpu, windows = _decode_rate(paths, m, settings, decode_workers)
            t0 = time.perf_counter()
            outcomes = tag_files([(path_track_id(p), p) for p in paths], settings, tagger)
            e2e = len(paths) / (time.perf_counter() - t0)
            assert all(o.record is not None for o in outcomes), "long-track bench: a file failed"
            row[name] = {"decode_clips_per_s": round(rate, 2), "ffmpeg_cpu_s_per_clip": round(cpu, 4),
                         "worker_path_clips_per_s": round(e2e, 2), "windows": windows}
        row["long_vs_clip"] = round(row["track_5min"]["worker_path_clips_per_s"]
                                    / row["clip_30s"]["worker_path_clips_per_s"], 2)
        row["decode_long_vs_clip"] = round(row["track_5min"]["decode_clips_per_s"]
                                           / row["clip_30s"]["decode_clips_per_s"], 2)
        # FFmpeg CPU time is what a busy host's wall clock blurs: clip cost / long-track cost.
        row["ffmpeg_cpu_clip_vs_long"] = round(row["clip_30s"]["ffmpeg_cpu_s_per_clip"]
                                               / row["track_5min"]["ffmpeg_cpu_s_per_clip"], 2)
        log.info("bench.long_tracks", extra={"round": r, "long_vs_clip": row["long_vs_clip"],
                                             "decode_long_vs_clip": row["decode_long_vs_clip"]})
        rows.append(row)
    return {
        "tracks_per_set": count, "max_windows": settings.windows.max_windows, "rounds": rows,
        "long_vs_clip": round(statistics.median(r["long_vs_clip"] for r in rows), 2),
        "decode_long_vs_clip": round(statistics.median(r["decode_long_vs_clip"] for r in rows), 2),
        "ffmpeg_cpu_clip_vs_long": round(statistics.median(r["ffmpeg_cpu_clip_vs_long"]
                                                           for r in rows), 2),
    }
