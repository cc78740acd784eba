"""Epoch cost before and after the cached front end, per model kind, on the same CPU at the same
time (the two are interleaved, so load from other processes falls on both alike).

before: what one training batch cost when every epoch re-ran the frontend: random 25 s crops of
30 s waveforms → MFCC frontend → model forward and backward (the previous ``training/fit.py``).
after: the same batch from cached features with the CLI presets of today: cnn/lstm on the preset's
crops (25 s) of the cached 30 s features; the TD-CNN on one cached 10 s window per track; logreg/dense have
no minibatch epochs any more: their epoch is one LBFGS evaluation of loss and gradient over
every track's cached statistics (a full fit takes tens to a few hundred of them).

    .venv/bin/python -m bench.epoch_speed --tracks 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from genretag.training.augment import spec_augment
from genretag.training.cli import config_from_args
from genretag.training.config import TrainConfig
from genretag.training.registry import get_spec
from genretag.training.train import build_model

SR = 22050


def _preset(model: str) -> TrainConfig:
    from genretag.cli import build_parser

    args = build_parser().parse_args(["train", "--labels", "unused.csv", "--device", "cpu"])
    return config_from_args(args, model, "single", "bench")


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, feats: torch.Tensor) -> None:
    feats = spec_augment(feats, max(1, feats.shape[2] // 5), max(1, feats.shape[3] // 10))
    loss = model.classify(feats).logsumexp(1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def measure(kind: str, tracks: int, repeats: int) -> dict[str, float | str]:
    """Seconds per training track of one epoch, before and after, medians of ``repeats``."""
    torch.manual_seed(0)
    waves = torch.randn(tracks, 30 * SR) * 0.1
    old_cfg = _preset(kind).model_copy(update={"clip_seconds": 30.0, "channels": (32, 64, 128),
                                               "hidden": 256})
    old = build_model(old_cfg, 5).train()  # the old preset: 30 s clips, 25 s crops, 32-64-128
    new_cfg = _preset(kind)
    new = build_model(new_cfg, 5).train()
    old_opt = torch.optim.AdamW(old.parameters())
    new_opt = torch.optim.AdamW(new.parameters())
    window = int(new_cfg.clip_seconds * SR)
    with torch.inference_mode():
        cached = new.features(waves[:, :window]).clone()  # computed once, before training
    crop = int(round(new_cfg.crop_window * SR / new_cfg.frontend.hop_length)) + 1
    before, after = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        feats = old.features(waves[:, : 25 * SR])
        _step(old, old_opt, feats)
        before.append(time.perf_counter() - started)
        started = time.perf_counter()
        if get_spec(kind).recipe == "lbfgs":  # an epoch: loss and gradient over every track
            stats = new.stats(cached)
            loss = torch.nn.functional.cross_entropy(new.head(stats), torch.arange(tracks) % 5)
            new_opt.zero_grad()
            loss.backward()
        else:
            feats = cached[..., :crop]  # the preset's crop (the whole 10 s window for tdcnn)
            _step(new, new_opt, feats)
        after.append(time.perf_counter() - started)
    b, a = statistics.median(before) / tracks, statistics.median(after) / tracks
    return {"model": kind, "before_s_per_track": round(b, 4), "after_s_per_track": round(a, 4),
            "speedup": round(b / a, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=32, help="Tracks per measured batch.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="logreg,dense,cnn,lstm,tdcnn")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    for kind in args.models.split(","):
        print(json.dumps(measure(kind, args.tracks, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
