"""What each kind costs the worker per track: its serving model (frontend inside) on the
worker's windows of a 30 s track, relative to ``logreg`` (the registry's ``serve_cost``).

Each kind is built from its real-data preset (a backbone kind on ``--backbone``), scripted as
the artifact is, and timed on the windows ``make_windows`` cuts from 30 s of audio at the
kind's rate with the serving window count, in interleaved rounds (one torch thread; the median
of the rounds). Decoding is left out: every kind decodes the same track.

    .venv/bin/python -m bench.serve_cost --backbone models/msd_musicnn.pt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from genretag.core.audio.windows import make_windows
from genretag.training.models import ServingModel
from genretag.training.presets import resolve_config
from genretag.training.registry import specs
from genretag.training.selection.candidates import make_candidate

TRACK_SECONDS = 30.0


def serving_inputs(backbone: Path | None) -> dict[str, tuple[torch.jit.ScriptModule,
                                                              torch.Tensor]]:
    """Per kind: the scripted serving model and the windows of one 30 s track."""
    out = {}
    rng = np.random.default_rng(0)
    for spec in specs():
        if spec.needs_backbone and backbone is None:
            continue
        flags = {"backbone": backbone} if spec.needs_backbone else {}
        cfg = make_candidate(resolve_config(spec.name, flags, objective="single",
                                            dataset="bench")).cfg
        model = make_candidate(cfg).build(5).eval()
        wave = (rng.standard_normal(int(TRACK_SECONDS * cfg.sample_rate)) * 0.1).astype(
            np.float32)
        windows = make_windows(wave, int(round(cfg.clip_seconds * cfg.sample_rate)),
                               cfg.eval_windows)
        out[spec.name] = (torch.jit.script(ServingModel(model, "softmax").eval()),
                          torch.from_numpy(windows))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = serving_inputs(args.backbone)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, (model, x) in models.items():  # warm-up (scripting, allocations)
            model(x)
        for _ in range(args.rounds):
            for name, (model, x) in models.items():
                started = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - started)
    median = {name: float(np.median(t)) for name, t in times.items()}
    result = {name: {"seconds_per_track": round(s, 4), "windows": int(models[name][1].shape[0]),
                     "relative_to_logreg": round(s / median["logreg"], 2)}
              for name, s in median.items()}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
