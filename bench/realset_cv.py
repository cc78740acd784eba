"""Grouped k-fold cross-validation of training presets: every track scored once, out of fold.

A 21-track test split cannot rank models (its 95 % intervals are ±15 points wide). Here the
tracks are cut into ``--folds`` folds by group (the source piece: no piece is in two folds),
stratified by label; fold k is test, fold k+1 validation (early stopping, ``C``), the rest
training. Every track is then predicted by a model that never saw its piece, so models are
compared on all tracks and *paired*: the bootstrap interval of the difference in accuracy
against the first variant says whether a gap is more than the luck of the split. Features are
computed once per preset (the run cache) and sliced per fold; the fits are the CLI's
(``genretag train`` presets; the cross-validation of ``genretag.training.selection``, which
``train``'s auto runs over training + validation), scored as served (window probabilities
averaged per track). The transfer variants need ``--backbone`` (musicnn-msd by default).

    .venv/bin/python -m bench.realset_cv --labels data/realset/labels.csv   # 5 + 2 transfer
    .venv/bin/python -m bench.realset_cv --labels data/realset/labels.csv \\
        --variants "logreg=--arch logreg" "tdcnn=--arch tdcnn" \\
                   "tdcnn-nostats=--arch tdcnn --no-stats-branch"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genretag.training.cli import chosen_kinds, config_from_args, register
from genretag.training.config import TrainConfig
from genretag.training.evaluate import evaluate
from genretag.training.items import LabelledItem
from genretag.training.readers import read_labels_csv
from genretag.training.selection.candidates import make_candidate
from genretag.training.selection.crossval import Trial, compute_trial_features, fit_fold
from genretag.training.selection.folds import group_folds, paired_difference
from genretag.training.targets import TargetEncoder

#: The five from-scratch kinds (the seed study's baselines and the TD-CNN)...
DEFAULT_VARIANTS = ("logreg=--arch logreg", "dense=--arch dense", "cnn=--arch cnn",
                    "lstm=--arch lstm", "tdcnn=--arch tdcnn")
#: ... and the heads on a pretrained backbone, when ``--backbone`` is there.
BACKBONE_VARIANTS = ("transfer=--arch transfer", "transfer-ft=--arch transfer-ft")
DEFAULT_BACKBONE = Path("models/msd_musicnn.pt")


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


def run_variant(variant: Variant, cfg: TrainConfig, items: list[LabelledItem],
                fold: np.ndarray, encoder: TargetEncoder, cache: Path) -> dict:
    """Out-of-fold probabilities of every item (NaN rows for skipped clips) and timings: the
    product's cross-validation (``genretag.training.selection.crossval``, what ``train``'s
    auto runs) with every track in the pool."""
    trial = Trial(make_candidate(cfg, variant.name), len(items), len(encoder.labels))
    compute_trial_features(trial, items, items, cache, progress=False)
    fold_rows = []
    for k in range(int(fold.max()) + 1):
        row = fit_fold(trial, items, fold, k, encoder)
        fold_rows.append(row)
        print(f"  {variant.name} fold {k}: acc {row['test_accuracy']:.3f} on {row['test']}, "
              f"{row['epochs']} epochs, {row['fit_seconds']:.0f} s", file=sys.stderr)
    return {"probs": trial.probs, "folds": fold_rows,
            "feature_seconds": round(trial.feature_seconds, 1),
            "fit_seconds": round(sum(r["fit_seconds"] for r in fold_rows), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--labels", type=Path, required=True, help="path,label,group CSV.")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME=FLAGS",
                        help="Presets compared; the first is the reference of the paired "
                        "differences. Default: the five kinds, then transfer and transfer-ft "
                        "on --backbone when that file exists.")
    parser.add_argument("--backbone", type=Path, default=DEFAULT_BACKBONE,
                        help=f"Backbone of the default transfer variants (default "
                        f"{DEFAULT_BACKBONE}: `genretag models pull musicnn-msd --out "
                        f"{DEFAULT_BACKBONE}`).")
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
    texts = args.variants
    if texts is None:
        texts = list(DEFAULT_VARIANTS)
        if args.backbone.is_file():
            texts += [f"{v} --backbone {args.backbone}" for v in BACKBONE_VARIANTS]
        else:
            print(f"realset_cv: no {args.backbone}, so no transfer variants", file=sys.stderr)
    variants = [parse_variant(v) for v in texts]
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
