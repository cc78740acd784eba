"""What each kind's feature pass costs relative to ``logreg`` (the registry's ``feature_cost``).

The pass ``auto``'s cross-validation runs for a candidate (``selection.crossval.
compute_trial_features``: one decode, the training plan over training + validation and the
evaluation plan over every item, written to an empty cache) on every ``--every``-th clip of a
labels CSV, kinds interleaved round by round on the same clips, so the machine's load falls on
each alike; the ratio is the median of the per-round ratios to the first kind. The load average
is printed with each round (the cores are shared).

    .venv/bin/python -m bench.feature_cost --labels data/realset_all/labels.csv \\
        --variants "logreg=--arch logreg" "transfer=--arch transfer --backbone models/m.pt"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.realset_cv import parse_variant, variant_config
from genretag.training.readers import read_labels_csv
from genretag.training.selection.candidates import make_candidate
from genretag.training.selection.crossval import Trial, compute_trial_features, pool_items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True, help="path,label,group CSV.")
    parser.add_argument("--variants", nargs="+", required=True, metavar="NAME=FLAGS",
                        help="Kinds timed; the first is the reference of the ratios.")
    parser.add_argument("--every", type=int, default=8, help="Every N-th clip (default 8).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    items = read_labels_csv(args.labels, seed=args.seed)[::args.every]
    pool = pool_items(items)
    variants = [parse_variant(v) for v in args.variants]
    candidates = [make_candidate(variant_config(v, args.labels, args.labels.stem), v.name)
                  for v in variants]
    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    loads = []
    for r in range(args.rounds):
        for cand in candidates:
            loads.append(os.getloadavg()[0])
            trial = Trial(cand, len(pool), 5)
            with tempfile.TemporaryDirectory() as cache:
                compute_trial_features(trial, items, pool, Path(cache), progress=False)
            seconds[cand.name].append(trial.feature_seconds)
            print(f"round {r + 1} {cand.name}: {trial.feature_seconds:.1f} s "
                  f"(load {loads[-1]:.1f})", file=sys.stderr)
    ref = variants[0].name
    ratios = {n: [s / b for s, b in zip(v, seconds[ref], strict=True)]
              for n, v in seconds.items()}
    summary = {"labels": str(args.labels), "clips": len(items), "pool": len(pool),
               "seconds": seconds, "ratio_to_" + ref: {n: float(np.median(v))
                                                       for n, v in ratios.items()},
               "per_round_ratios": ratios, "load_1min": [min(loads), max(loads)]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
