"""``genretag train``: build a model and export the serving artifact."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="Train a genre model and export it as one TorchScript file with its manifest.",
        description="Trains on the synthetic demo set (--demo). Decodes audio with the "
        "worker's decoder, trains with AdamW + one-cycle LR and early stopping, tunes per-label "
        "thresholds on validation, evaluates on test, and writes OUT plus OUT's report JSON.",
    )
    parser.add_argument("--demo", action="store_true", help="Train on a synthesised demo set.")
    parser.add_argument("--demo-dir", type=Path, default=Path("data/demo"),
                        help="Where the demo audio is generated (default data/demo).")
    parser.add_argument("--per-class", type=int, default=24, help="Demo clips per class.")
    parser.add_argument("--model", default="tdcnn", help="Model kind (default tdcnn).")
    parser.add_argument("--out", type=Path, default=Path("models/demo.pt"), help="Artifact path.")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--version", default=None, help="Model version (default: name-timestamp).")
    parser.add_argument("--reuse", action="store_true", help="Skip training if OUT exists and loads.")
    parser.set_defaults(func=run_cli)


def demo_config(args: argparse.Namespace):
    from schemas import FrontendParams
    from training.train import TrainConfig

    return TrainConfig(
        model=args.model, objective="single", sample_rate=22050, clip_seconds=6.0,
        frontend=FrontendParams(chunk_frames=32), channels=(16, 32, 64),
        epochs=args.epochs or 12, batch_size=args.batch_size or 16, lr=args.lr or 3e-3,
        seed=args.seed, device=args.device, version=args.version or "demo-1", dataset="synthetic-demo",
    )


def run_cli(args: argparse.Namespace) -> int:
    if args.reuse and args.out.exists():
        from worker.artifact import ArtifactError, read_manifest

        try:
            manifest = read_manifest(args.out)
            print(json.dumps({"reused": str(args.out), "version": manifest.version}))
            return 0
        except ArtifactError:
            pass
    if not args.demo:
        raise SystemExit("genretag train: choose a dataset (--demo)")
    from training.synth import make_synth_dataset
    from training.train import train_and_export

    items = make_synth_dataset(args.demo_dir, per_class=args.per_class, seconds=8.0, seed=args.seed)
    report = train_and_export(items, demo_config(args), args.out)
    summary = {"artifact": str(args.out), "test_accuracy": report["test"].get("accuracy"),
               "counts": report["counts"], "train_seconds": round(report["train_seconds"], 1),
               "skipped": len(report["skipped"])}
    print(json.dumps(summary))
    return 0
