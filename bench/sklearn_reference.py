"""genretag's logistic regression against scikit-learn's on the same cached features and split.

Both see the same standardised per-window MFCC statistics (the ``logreg`` preset's features,
from the run cache when a CLI run made them), the same ``C`` grid chosen on validation accuracy,
and are scored per track (window probabilities averaged, as served). scikit-learn is a
measurement dependency only (``pip install scikit-learn==1.9.1``), never imported by genretag.

    .venv/bin/python -m bench.sklearn_reference --labels data/realset/labels.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from genretag.schemas import FrontendParams
from genretag.training.config import TrainConfig
from genretag.training.fit import predict_tracks, track_probs
from genretag.training.linear import C_GRID, fit_stats, window_stats
from genretag.training.readers import read_labels_csv
from genretag.training.targets import TargetEncoder
from genretag.training.train import build_model, feature_splits


def logreg_config(dataset: str) -> TrainConfig:
    """The CLI's ``logreg`` preset (FMA-sized frontend, MFCC only, 30 s windows)."""
    return TrainConfig(model="logreg", frontend=FrontendParams(), device="cpu", dataset=dataset)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/decoded"))
    args = parser.parse_args(argv)
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise SystemExit("needs scikit-learn: .venv/bin/pip install scikit-learn==1.9.1") from None
    items = read_labels_csv(args.labels)
    cfg = logreg_config(args.labels.stem)
    encoder = TargetEncoder.fit(items, "single")
    model = build_model(cfg, len(encoder.labels))
    splits = feature_splits(items, cfg, model.frontend, args.cache_dir)
    train, val, test = splits["training"], splits["validation"], splits["test"]
    y = {k: encoder.encode(v.items) for k, v in splits.items()}
    started = time.monotonic()
    fit_stats(model, train, y["training"], val, y["validation"], "single")
    ours_s = time.monotonic() - started
    ours = predict_tracks(model, test, "single", torch.device("cpu"))
    model.double()
    x = {k: window_stats(model, v).numpy() for k, v in splits.items()}
    mean, std = x["training"].mean(0), x["training"].std(0, ddof=1)
    std[std < 1e-8] = 1.0
    z = {k: (v - mean) / std for k, v in x.items()}
    rows = []
    started = time.monotonic()
    for c in C_GRID:
        ref = LogisticRegression(C=c, max_iter=10000).fit(z["training"], y["training"][train.owner])
        probs = {k: track_probs(torch.from_numpy(np.log(ref.predict_proba(z[k]) + 1e-12)),
                                splits[k].owner, len(splits[k].items), "single")
                 for k in ("validation", "test")}
        val_p = probs["validation"][np.arange(len(val.items)), y["validation"]]
        rows.append({"C": c, "val_accuracy": float(np.mean(probs["validation"].argmax(1)
                                                           == y["validation"])),
                     "val_loss": float(-np.mean(np.log(np.clip(val_p, 1e-7, 1)))),
                     "test_accuracy": float(np.mean(probs["test"].argmax(1) == y["test"]))})
    sk_s = time.monotonic() - started
    chosen = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))  # as fit_stats
    print(json.dumps({
        "counts": {k: len(v.items) for k, v in splits.items()},
        "genretag_logreg": {"test_accuracy": float(np.mean(ours.argmax(1) == y["test"])),
                            "fit_seconds": round(ours_s, 2)},
        "sklearn_logreg": {"test_accuracy": chosen["test_accuracy"], "C": chosen["C"],
                           "fit_seconds_all_C": round(sk_s, 2), "grid": rows},
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
