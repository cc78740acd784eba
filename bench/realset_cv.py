"""Grouped k-fold cross-validation of training presets: every track scored once, out of fold.

A 21-track test split cannot rank models (its 95 % intervals are ±15 points wide). Here the
tracks are cut into ``--folds`` folds by group (the source piece: no piece is in two folds),
stratified by label; fold k is test, fold k+1 validation (early stopping, ``C``), the rest
training. Every track is then predicted by a model that never saw its piece, so models are
compared on all tracks and *paired*: the bootstrap interval of the difference in accuracy
against the first variant says whether a gap is more than the luck of the split. Features are
computed once per preset (the run cache) and sliced per fold; the fits are the CLI's
(``genretag train`` presets, ``fit``/``fit_stats``), scored as served (window probabilities
averaged per track).

    .venv/bin/python -m bench.realset_cv --labels data/realset/labels.csv \\
        --variants "logreg=--arch logreg" "tdcnn=--arch tdcnn" \\
                   "tdcnn-nostats=--arch tdcnn --no-stats-branch"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genretag.training.cli import chosen_kinds, config_from_args, register
from genretag.training.config import TrainConfig
from genretag.training.evaluate import evaluate
from genretag.training.features import FeatureSet, compute_features
from genretag.training.fit import predict_tracks
from genretag.training.items import LabelledItem
from genretag.training.readers import read_labels_csv
from genretag.training.targets import TargetEncoder
from genretag.training.train import build_model, fit_model, seed_everything, window_plans

DEFAULT_VARIANTS = ("logreg=--arch logreg", "tdcnn=--arch tdcnn")


@dataclass(frozen=True)
class Variant:
    """A named preset: the ``genretag train`` flags that build its ``TrainConfig``."""

    name: str
    flags: tuple[str, ...]


def parse_variant(text: str) -> Variant:
    """``name=--arch tdcnn --no-stats-branch`` → Variant."""
    name, sep, flags = text.partition("=")
    if not sep or not name.strip():
        raise SystemExit(f"realset_cv: a variant is NAME=FLAGS, got {text!r}")
    return Variant(name.strip(), tuple(shlex.split(flags)))


def variant_config(variant: Variant, labels: Path, dataset: str) -> TrainConfig:
    """The ``TrainConfig`` ``genretag train --labels LABELS FLAGS`` would use."""
    parser = argparse.ArgumentParser(prog="genretag")
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--labels", str(labels), "--device", "cpu",
                              "--no-progress", *variant.flags])
    kinds = chosen_kinds(args)
    if len(kinds) != 1:
        raise SystemExit(f"realset_cv: variant {variant.name} must name one --arch, got {kinds}")
    return config_from_args(args, kinds[0], "single", dataset)


def group_folds(items: list[LabelledItem], folds: int, seed: int) -> np.ndarray:
    """Fold of every item: groups (source pieces) dealt round-robin per label, in a seeded
    hash order, so each fold holds about 1/folds of every label and no group is split."""
    groups_of: dict[str, dict[str, None]] = defaultdict(dict)
    for item in items:
        groups_of[item.labels[0]][item.group or item.item_id] = None
    fold_of_group: dict[str, int] = {}
    start = 0
    for label in sorted(groups_of):
        ordered = sorted(groups_of[label], key=lambda g: hashlib.sha1(
            f"{seed}:{g}".encode()).hexdigest())
        for k, group in enumerate(ordered):
            fold_of_group.setdefault(group, (start + k) % folds)
        start += len(ordered)  # the next label starts where this one stopped: folds even out
    return np.array([fold_of_group[item.group or item.item_id] for item in items])


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0,
                      samples: int = 2000) -> dict[str, float | list[float]]:
    """Accuracy of b minus a over the same tracks, with a 95 % bootstrap interval (tracks
    resampled together, so the interval is the pair's, not two independent ones)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct_a), (samples, len(correct_a)))
    diffs = correct_b[idx].mean(1) - correct_a[idx].mean(1)
    return {"difference": float(correct_b.mean() - correct_a.mean()),
            "ci": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]}


def run_variant(variant: Variant, cfg: TrainConfig, items: list[LabelledItem],
                fold: np.ndarray, encoder: TargetEncoder, cache: Path) -> dict:
    """Out-of-fold probabilities of every item (NaN rows for skipped clips) and timings."""
    probe = build_model(cfg, len(encoder.labels))
    training_plan, eval_plan, key = window_plans(cfg)
    started = time.monotonic()
    feats = {name: compute_features(items, probe.frontend, plan, cfg.sample_rate,
                                    cfg.min_seconds, cfg.decode_workers, cache, key,
                                    decoder=cfg.decoder)
             for name, plan in (("training", training_plan), ("eval", eval_plan))}
    feature_s = time.monotonic() - started
    position = {item.item_id: k for k, item in enumerate(items)}
    probs = np.full((len(items), len(encoder.labels)), np.nan)
    fold_rows = []
    n_folds = int(fold.max()) + 1

    def part(fs: FeatureSet, wanted: Callable[[int], bool]) -> FeatureSet:
        """The items of ``fs`` whose fold is ``wanted``, with their windows."""
        return fs.select([j for j, item in enumerate(fs.items)
                          if wanted(int(fold[position[item.item_id]]))])

    for k in range(n_folds):
        val_fold = (k + 1) % n_folds
        train = part(feats["training"], lambda f: f not in (k, val_fold))
        val = part(feats["eval"], lambda f: f == val_fold)
        test = part(feats["eval"], lambda f: f == k)
        seed_everything(cfg.seed)
        model = build_model(cfg, len(encoder.labels))
        t0 = time.monotonic()
        y_train, y_val = encoder.encode(train.items), encoder.encode(val.items)
        model, history, others = fit_model(model, cfg, train, y_train, val, y_val,
                                           torch.device("cpu"), len(encoder.labels))
        fit_s = time.monotonic() - t0
        fold_probs = predict_tracks(model, test, cfg.objective, torch.device("cpu"))
        for item, row in zip(test.items, fold_probs, strict=True):
            probs[position[item.item_id]] = row
        hits = fold_probs.argmax(1) == encoder.encode(test.items)
        fold_rows.append({"fold": k, "train": len(train.items), "validation": len(val.items),
                          "test": len(test.items), "test_accuracy": float(hits.mean()),
                          "epochs": len(history), "members": 1 + len(others),
                          "fit_seconds": round(fit_s, 1)})
        print(f"  {variant.name} fold {k}: acc {hits.mean():.3f} on {len(test.items)}, "
              f"{len(history)} epochs, {fit_s:.0f} s", file=sys.stderr)
    return {"probs": probs, "folds": fold_rows, "feature_seconds": round(feature_s, 1),
            "fit_seconds": round(sum(r["fit_seconds"] for r in fold_rows), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--labels", type=Path, required=True, help="path,label,group CSV.")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        metavar="NAME=FLAGS", help="Presets compared; the first is the "
                        "reference of the paired differences.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/decoded"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/realset_cv.json"))
    args = parser.parse_args(argv)
    if args.folds < 3:
        raise SystemExit("realset_cv: need at least 3 folds (test, validation, training)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    items = read_labels_csv(args.labels, seed=args.seed)
    encoder = TargetEncoder.fit(items, "single")
    fold = group_folds(items, args.folds, args.seed)
    truth = encoder.encode(items)
    results: dict[str, dict] = {}
    variants = [parse_variant(v) for v in args.variants]
    for variant in variants:
        cfg = variant_config(variant, args.labels, args.labels.stem)
        print(f"{variant.name}: {' '.join(variant.flags)}", file=sys.stderr)
        out = run_variant(variant, cfg, items, fold, encoder, args.cache_dir)
        scored = ~np.isnan(out["probs"]).any(1)
        report = evaluate(out["probs"][scored], [i for i, s in zip(items, scored) if s], encoder,
                          seed=args.seed)
        results[variant.name] = {
            "flags": list(variant.flags), "tracks": int(scored.sum()),
            "accuracy": report["accuracy"], "accuracy_ci": report["accuracy_ci"],
            "macro_f1": report["macro_f1"], "macro_f1_ci": report["macro_f1_ci"],
            "per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()},
            "feature_seconds": out["feature_seconds"], "fit_seconds": out["fit_seconds"],
            "folds": out["folds"], "_correct": np.where(scored, out["probs"].argmax(1) == truth,
                                                         False),
            "_scored": scored,
        }
    reference = variants[0].name
    both = np.logical_and.reduce([r["_scored"] for r in results.values()])
    for name, r in results.items():
        if name != reference:
            r["vs_" + reference] = paired_difference(results[reference]["_correct"][both],
                                                     r["_correct"][both], args.seed)
    summary = {"labels": str(args.labels), "folds": args.folds, "seed": args.seed,
               "tracks": len(items), "fold_sizes": np.bincount(fold).tolist(),
               "variants": {n: {k: v for k, v in r.items() if not k.startswith("_")}
                            for n, r in results.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    for name, r in summary["variants"].items():
        vs = r.get("vs_" + reference)
        gap = (f"  {vs['difference']:+.3f} [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}] vs {reference}"
               if vs else "")
        print(f"{name:16} acc {r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, "
              f"{r['accuracy_ci'][1]:.3f}]  macro F1 {r['macro_f1']:.3f}  fit {r['fit_seconds']:.0f} s"
              f"{gap}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
