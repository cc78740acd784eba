"""Window aggregation, measured: ``mean`` vs ``trimmed`` on tracks with an atypical intro.

``python -m bench.aggregation --model PATH [--tracks 8]``: each track is a 50 s intro of one
demo class followed by 150 s of another (the "main" class). Both aggregations run on the very
same per-window probabilities (the worker's decode and model, once), and the report gives, per
aggregation, top-1 = main class, the main class's mean probability, and how often the intro's
class is (wrongly) among the labels over threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.longtrack import CLASSES
from genretag.core.audio.aggregate import aggregate


def make_intro_tracks(cache: Path, count: int) -> list[tuple[Path, str, str]]:
    """``(path, intro class, main class)`` for ``count`` generated tracks, reused when present."""
    from genretag.training.synth import synth_track

    root = (Path(cache) / "intro-tracks").resolve()
    out = []
    for i in range(count):
        intro, main = CLASSES[i % 4], CLASSES[(i + 1 + i // 4) % 4]
        path = root / f"intro_{i:03d}.mp3"
        if not path.exists():
            synth_track(path, [(intro, 50.0), (main, 150.0)], seed=100 + i)
        out.append((path, intro, main))
    return out


def measure(model: Path, cache: Path, count: int, max_windows: int = 8) -> dict[str, object]:
    from genretag.core.settings import load_settings
    from genretag.worker.infer import Tagger
    from genretag.worker.settings import ModelSection
    from genretag.worker.settings import WorkerSettings
    from genretag.worker.tracks import prepare_tracks
    from genretag.core.audio.decoders import open_decoder
    from genretag.core.audio.uri import AudioSource
    from genretag.schemas import TrackRef

    tracks = make_intro_tracks(cache, count)
    settings = load_settings(WorkerSettings, model_path=str(model), device="cpu",
                             max_windows=max_windows,
                             allowed_roots=[str(tracks[0][0].parent)])
    tagger = Tagger.load(ModelSection(path=settings.model.path, device="cpu"))
    m = tagger.manifest
    refs = [TrackRef(track_id=f"t{i}", uri=str(p)) for i, (p, _, _) in enumerate(tracks)]
    prepared = prepare_tracks(refs, [AudioSource(str(p), is_local=True) for p, _, _ in tracks], m,
                              settings.windows, settings.decode, open_decoder("ffmpeg"))
    bad = [p for p in prepared if isinstance(p, Exception)]
    if bad:
        raise RuntimeError(f"aggregation bench: {bad[0]}")
    probs = tagger.predict_windows([p.windows for p in prepared])  # type: ignore[union-attr]
    report: dict[str, object] = {"tracks": count, "max_windows": max_windows,
                                 "intro_s": 50.0, "main_s": 150.0}
    for method in ("mean", "trimmed"):
        top1 = intro_labelled = 0
        main_p = []
        for prep, rows, (_, intro, main) in zip(prepared, probs, tracks, strict=True):
            row = aggregate(rows, prep.silent, method)  # type: ignore[union-attr]
            best = m.labels[int(np.argmax(row))]
            top1 += best == main
            main_p.append(float(row[m.labels.index(main)]))
            intro_labelled += intro in tagger.labels_over_threshold(row)
        report[method] = {"top1_main": round(top1 / count, 3),
                          "main_prob_mean": round(float(np.mean(main_p)), 3),
                          "intro_class_labelled": round(intro_labelled / count, 3)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aggregation",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("data/bench"))
    parser.add_argument("--tracks", type=int, default=8)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, args.cache, args.tracks), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
