"""Window plans of a backbone head, paired: embedding-pass time and cross-validated accuracy.

Each variant (a ``train`` flag line for one backbone kind, e.g. its ``--train-hop-seconds``)
gets the feature pass ``auto`` runs for it (``selection.crossval.compute_trial_features``)
into its own empty cache, variants interleaved, the load average printed with each; then
every variant is cross-validated on the same folds as ``auto`` makes them (the training +
validation items, ``group_folds``, same seed), and each is compared paired with the first
(``paired_difference`` over the same tracks).

    .venv/bin/python -m bench.transfer_windows --labels data/realset_all/labels.csv \\
        --variants "hop1.5=--arch transfer --backbone M.pt --train-hop-seconds 1.5" \\
                   "hop3=--arch transfer --backbone M.pt --train-hop-seconds 3"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.realset_cv import parse_variant, variant_config
from genretag.training.readers import read_labels_csv
from genretag.training.run_steps import fit_targets
from genretag.training.selection.candidates import make_candidate
from genretag.training.selection.crossval import (
    Trial,
    compute_trial_features,
    fit_fold,
    pool_items,
)
from genretag.training.selection.folds import accuracy_interval, group_folds, paired_difference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True, help="path,label,group CSV.")
    parser.add_argument("--variants", nargs="+", required=True, metavar="NAME=FLAGS",
                        help="Backbone-kind flag lines; the first is the reference.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=None,
                        help="Cross-validate again with the folds of these seeds, on the same "
                        "features (default: --seed only).")
    parser.add_argument("--reverse-passes", action="store_true",
                        help="Run the feature passes last variant first (order effects).")
    args = parser.parse_args(argv)
    items = read_labels_csv(args.labels, seed=args.seed)
    pool = pool_items(items)
    variants = [parse_variant(v) for v in args.variants]
    configs = [variant_config(v, args.labels, args.labels.stem) for v in variants]
    encoder = fit_targets(items, configs[0], False)
    trials = [Trial(make_candidate(cfg, v.name), len(pool), len(encoder.labels))
              for v, cfg in zip(variants, configs, strict=True)]
    caches = [Path(tempfile.mkdtemp(prefix=f"tw-{t.name}-")) for t in trials]
    summary: dict = {"labels": str(args.labels), "clips": len(items), "pool": len(pool),
                     "variants": {}}
    try:
        passes = list(zip(trials, caches, strict=True))
        for trial, cache in passes[::-1] if args.reverse_passes else passes:
            before = os.getloadavg()[0]
            compute_trial_features(trial, items, pool, cache, progress=False)
            after = os.getloadavg()[0]
            assert trial.pool_feats is not None and trial.eval_feats is not None
            row = {"feature_seconds": round(trial.feature_seconds, 1),
                   "load_1min": [round(before, 1), round(after, 1)],
                   "windows": {"pool (training plan)": trial.pool_feats.n_windows,
                               "all (evaluation plan)": trial.eval_feats.n_windows}}
            summary["variants"][trial.name] = row
            print(f"{trial.name}: features {row['feature_seconds']} s, windows "
                  f"{row['windows']}, load {before:.1f} -> {after:.1f}", file=sys.stderr)
        truth = encoder.encode(pool)
        for fold_seed in args.fold_seeds or [args.seed]:
            fold = group_folds(pool, args.folds, fold_seed)
            summary.setdefault("cross_validation", {})[fold_seed] = _cross_validate(
                trials, pool, fold, encoder, truth, args.seed)
    finally:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps(summary))
    return 0


def _cross_validate(trials: list[Trial], pool: list, fold: np.ndarray, encoder, truth: np.ndarray,
                    seed: int) -> dict:
    """Every trial on these folds (fresh out-of-fold rows), each paired with the first."""
    out: dict = {}
    hits = {}
    for trial in trials:
        trial.probs[:] = np.nan
        trial.fold_seconds.clear()
    for k in range(int(fold.max()) + 1):
        for trial in trials:
            r = fit_fold(trial, pool, fold, k, encoder)
            out.setdefault(trial.name, {}).setdefault("folds", []).append(r)
            print(f"  {trial.name} fold {k}: {r['test_accuracy']:.3f} on {r['test']}, "
                  f"{r['fit_seconds']} s", file=sys.stderr)
    for trial in trials:
        scored = ~np.isnan(trial.probs).any(1)
        hits[trial.name] = np.where(scored, trial.probs.argmax(1) == truth, False)
        out[trial.name].update(cv_accuracy=float(hits[trial.name].mean()),
                               ci=accuracy_interval(hits[trial.name], seed),
                               scored=int(scored.sum()))
    ref = trials[0].name
    for trial in trials[1:]:
        out[trial.name]["vs_" + ref] = paired_difference(hits[ref], hits[trial.name], seed)
        print(f"{trial.name} vs {ref}: {out[trial.name]['vs_' + ref]}", file=sys.stderr)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
