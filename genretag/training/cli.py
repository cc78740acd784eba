"""``genretag train``: build models, export the serving artifact, compare runs.

Only argparse wiring and presets live here; torch loads lazily so ``genretag --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from genretag.core.audio.decoders import DEFAULT_DECODER
from genretag.core.fma.layout import SUBSETS
from genretag.schemas import FrontendParams
from genretag.training.config import MODEL_KINDS, TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="Train genre models (FMA, folder, CSV, demo), export TorchScript, compare runs.",
        description="Trains on FMA (--fma-dir), a folder-per-label dataset (--dataset), a labels "
        "CSV (--labels) or the synthetic demo set (--demo). Decodes audio with the worker's "
        "decoder (broken clips are skipped and listed in the report) and runs each model's "
        "frontend once per window (cached under --cache-dir); logreg/dense fit by LBFGS on "
        "standardised statistics, cnn/lstm/tdcnn train on the cached windows with AdamW + "
        "one-cycle LR, gain, crops, mixup, SpecAugment and early stopping. Tracks are scored "
        "like the worker scores them (window probabilities averaged); the report has per-class "
        "F1 and bootstrap intervals. `--model auto` trains every model and exports the best on "
        "validation. `genretag train compare RUNS_DIR` prints every run side by side with the "
        "reference study's fma_small baselines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=["compare"],
                        help="`compare RUNS_DIR`: table of the runs under RUNS_DIR.")
    parser.add_argument("runs_dir_arg", nargs="?", type=Path, metavar="RUNS_DIR",
                        help="Folder searched for *.report.json (with `compare`).")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--demo", action="store_true", help="Train on a synthesised demo set.")
    src.add_argument("--fma-dir", type=Path, metavar="DIR",
                     help="Extracted FMA: DIR/fma_metadata and DIR/fma_<subset>.")
    src.add_argument("--dataset", type=Path, metavar="DIR",
                     help="Folder-per-label dataset (DIR/<label>/*.mp3|wav…), split 80/10/10.")
    src.add_argument("--labels", type=Path, metavar="CSV",
                     help="CSV with path,label[,split][,group][,id]; 'a|b' labels = multilabel.")
    src.add_argument("--compare", type=Path, metavar="DIR", help="Same as `compare DIR`.")
    parser.add_argument("--model", default="tdcnn",
                        help=f"One of {', '.join(MODEL_KINDS)}, a comma-separated list, 'all', "
                        "or 'auto' (train all, export the best on validation as auto.pt).")
    parser.add_argument("--subset", choices=SUBSETS, default="small", help="FMA subset.")
    parser.add_argument("--target", choices=["top", "multilabel"], default=None,
                        help="FMA: top genre (softmax) or genres_all with implied parents "
                        "(sigmoid). Default: top for FMA, multilabel when a CSV has 'a|b' labels.")
    parser.add_argument("--top-level-only", action="store_true",
                        help="Multilabel FMA: only the top-level genres of genres_all.")
    parser.add_argument("--min-label-count", type=int, default=None,
                        help="Multilabel: drop labels with fewer training items (FMA default 20).")
    parser.add_argument("--out", type=Path, default=None,
                        help="Artifact path (one model). Default: models/demo.pt for --demo, "
                        "else RUNS_DIR/<dataset>-<target>/<model>.pt.")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="Where runs go.")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="Cache of window features, one file per split and frontend "
                        "(fma_small: ~0.8 GB for the baselines, ~5 GB for the TD-CNN). "
                        "Default: RUNS_DIR/decoded (none for --demo).")
    parser.add_argument("--demo-dir", type=Path, default=Path("data/demo"),
                        help="Where the demo audio is generated.")
    parser.add_argument("--per-class", type=int, default=24, help="Demo clips per class.")
    tune = parser.add_argument_group("training (defaults: per-model preset)")
    tune.add_argument("--epochs", type=int, default=None)
    tune.add_argument("--batch-size", type=int, default=None)
    tune.add_argument("--lr", type=float, default=None)
    tune.add_argument("--patience", type=int, default=None, help="Early-stopping patience.")
    tune.add_argument("--mixup", type=float, default=None, help="Mixup Beta α (0: off).")
    tune.add_argument("--crop-seconds", type=float, default=None,
                      help="Random crop of each training window's features (≤ clip seconds).")
    tune.add_argument("--train-seconds", type=float, default=None,
                      help="Audio decoded per training clip (default: clip × eval windows).")
    tune.add_argument("--train-hop-seconds", type=float, default=None,
                      help="Spacing of the training windows (default: half a clip).")
    tune.add_argument("--epoch-windows", type=int, default=None,
                      help="Training windows drawn per track each epoch (0: all; preset: 1 for "
                      "tdcnn, else 0).")
    tune.add_argument("--eval-windows", type=int, default=None,
                      help="Windows averaged per track in evaluation (the worker's max_windows, "
                      "default 4).")
    tune.add_argument("--c", type=float, default=None, dest="c",
                      help="logreg/dense: inverse L2 strength (scikit-learn's C; default: "
                      "chosen on validation).")
    tune.add_argument("--temporal", choices=["attention", "gru"], default=None,
                      help="TD-CNN pooling over chunks.")
    tune.add_argument("--stats-branch", action=argparse.BooleanOptionalAction, default=None,
                      help="TD-CNN: the head also sees each window's MFCC mean/std, the "
                      "logreg baseline's statistics (preset: on).")
    tune.add_argument("--no-amp", action="store_true", help="No mixed precision on GPU.")
    tune.add_argument("--workers", type=int, default=None, help="Parallel decoders.")
    tune.add_argument("--decoder", choices=["libav", "ffmpeg"], default=None,
                      help="Decoder of the training audio, recorded in the manifest; serve with "
                      "the same (worker DECODER; default libav for both).")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--ensemble", type=int, default=1, metavar="N",
                      help="cnn/lstm/tdcnn: train N seeds, export their averaged logits.")
    tune.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    tune.add_argument("--version", default=None, help="Model version (default: name-timestamp).")
    feats = parser.add_argument_group(
        "frontend (defaults: FMA 22050 Hz, 30 s, n_fft 2048, hop 512, 128 mels, 20 MFCC)")
    feats.add_argument("--sample-rate", type=int, default=None)
    feats.add_argument("--clip-seconds", type=float, default=None)
    feats.add_argument("--n-fft", type=int, default=None)
    feats.add_argument("--hop-length", type=int, default=None)
    feats.add_argument("--n-mels", type=int, default=None)
    feats.add_argument("--n-mfcc", type=int, default=None)
    feats.add_argument("--chunk-frames", type=int, default=None, help="TD-CNN frames per chunk.")
    feats.add_argument("--deltas", type=int, choices=[0, 1, 2], default=None,
                       help="Delta orders (preset: 1 for tdcnn, 0 for the baselines).")
    feats.add_argument("--rhythm", action=argparse.BooleanOptionalAction, default=None,
                       help="Onset + tempogram channels (preset: on for tdcnn, off otherwise).")
    transfer = parser.add_argument_group("transfer learning (a head on a pretrained model)")
    transfer.add_argument("--backbone", type=Path, default=None, metavar="PATH",
                          help="Pretrained artifact (`genretag models pull musicnn-msd`): train "
                          "a head on its pooled embeddings (cached) and export backbone + head; "
                          "with --model auto it is one more candidate.")
    transfer.add_argument("--fine-tune", action="store_true",
                          help="With --backbone: also train musicnn's dense back end (the last "
                          "layers) after the frozen head.")
    transfer.add_argument("--kind", action="append", default=[], metavar="LABEL=KIND",
                          help="With --backbone: a label's tag kind (mood, era, instrument, "
                          "voice, other); the others are genres.")
    parser.add_argument("--reuse", action="store_true",
                        help="Skip training if OUT exists and loads.")
    parser.add_argument("--allow-empty-split", action="store_true",
                        help="Train even when the test split is empty (no test score).")
    parser.add_argument("--no-progress", action="store_true",
                        help="No progress bars (they are shown only on a terminal anyway).")
    parser.set_defaults(func=run_cli)


def demo_config(args: argparse.Namespace, model: str | None = None) -> TrainConfig:
    """The demo preset: 6 s clips of the synthetic set, a small TD-CNN."""
    return TrainConfig(
        model=model or args.model, objective="single", sample_rate=22050, clip_seconds=6.0,
        frontend=FrontendParams(chunk_frames=32), channels=(16, 32, 64),
        epochs=args.epochs or 12, batch_size=args.batch_size or 16, lr=args.lr or 3e-3,
        seed=args.seed, device=args.device, version=args.version or "demo-1",
        decoder=getattr(args, "decoder", None) or DEFAULT_DECODER,
        dataset="synthetic-demo",
    )


def preset_config(args: argparse.Namespace, model: str, objective: str, dataset: str
                  ) -> TrainConfig:
    """A ``TrainConfig`` for real data: FMA-sized frontend, per-model features, CLI overrides."""
    tdcnn = model == "tdcnn"
    frontend = FrontendParams(
        n_mfcc=_pick(args.n_mfcc, 20), n_fft=_pick(args.n_fft, 2048),
        hop_length=_pick(args.hop_length, 512), n_mels=_pick(args.n_mels, 128),
        chunk_frames=_pick(args.chunk_frames, 64), deltas=_pick(args.deltas, 1 if tdcnn else 0),
        rhythm=_pick(args.rhythm, tdcnn),
    )
    # TD-CNN: 10 s windows (the worker averages up to 4 per track), one drawn per track each
    # epoch from windows every 5 s; the baselines keep the study's 30 s clip statistics.
    clip = _pick(args.clip_seconds, 10.0 if tdcnn else 30.0)
    crop = args.crop_seconds if args.crop_seconds is not None else (
        25.0 if clip >= 30 and model in ("cnn", "lstm") else None)
    if crop is not None and crop > clip:
        crop = None
    fields: dict[str, Any] = dict(
        model=model, objective=objective, sample_rate=_pick(args.sample_rate, 22050),
        clip_seconds=clip, frontend=frontend, epochs=_pick(args.epochs, 40),
        channels=(16, 32, 64) if tdcnn else (32, 64, 128),
        batch_size=_pick(args.batch_size, 32), lr=_pick(args.lr, 3e-3),
        patience=_pick(args.patience, 8), mixup=_pick(args.mixup, 0.2),
        train_seconds=args.train_seconds, train_hop_seconds=args.train_hop_seconds,
        crop_seconds=crop, c=args.c, temporal=_pick(args.temporal, "attention"),
        stats_branch=tdcnn and _pick(args.stats_branch, True),
        amp=not args.no_amp, decode_workers=_pick(args.workers, 8), seed=args.seed,
        decoder=_pick(args.decoder, DEFAULT_DECODER),
        ensemble=args.ensemble if model in ("cnn", "lstm", "tdcnn") else 1,
        epoch_windows=_pick(args.epoch_windows, 1 if tdcnn else 0),
        device=args.device, version=args.version or "", dataset=dataset,
    )
    if args.eval_windows is not None:
        fields["eval_windows"] = args.eval_windows
    if objective == "multi":
        fields["min_label_count"] = _pick(args.min_label_count, 20 if args.fma_dir else 1)
    return TrainConfig(**fields)


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def parse_models(text: str) -> list[str]:
    """``tdcnn`` / ``cnn,lstm`` / ``all`` / ``auto`` → model names (validated)."""
    names = (list(MODEL_KINDS) if text in ("all", "auto")
             else [n.strip() for n in text.split(",") if n.strip()])
    bad = [n for n in names if n not in MODEL_KINDS]
    if bad or not names:
        raise SystemExit(f"genretag train: unknown model(s) {bad or text!r}; "
                         f"choose from {', '.join(MODEL_KINDS)}, all or auto")
    return names


def load_items(args: argparse.Namespace) -> tuple[list, str, str]:
    """Items, dataset name and objective for the chosen source (FMA, folder or CSV)."""
    if args.fma_dir:
        from genretag.core.fma import load_genres, load_tracks, metadata_dir, select, subset_audio_dir
        from genretag.training.fma_items import fma_items

        meta = metadata_dir(args.fma_dir)
        tracks = load_tracks(meta / "tracks.csv")
        multilabel = args.target == "multilabel"
        genres = load_genres(meta / "genres.csv") if multilabel else None
        items = fma_items(select(tracks, args.subset), subset_audio_dir(args.fma_dir, args.subset),
                          genres=genres, multilabel=multilabel, top_level_only=args.top_level_only)
        return items, f"fma_{args.subset}", "multi" if multilabel else "single"
    if args.dataset:
        from genretag.training.readers import read_folder_dataset

        items = read_folder_dataset(args.dataset, seed=args.seed)
        name = Path(args.dataset).resolve().name
    else:
        from genretag.training.readers import read_labels_csv

        items = read_labels_csv(args.labels, seed=args.seed)
        name = Path(args.labels).stem
    several = any(len(item.labels) > 1 for item in items)
    target = args.target or ("multilabel" if several else "top")
    if target == "top" and several:
        raise SystemExit("genretag train: some items have several labels; use --target multilabel")
    return items, name, "multi" if target == "multilabel" else "single"


def run_cli(args: argparse.Namespace) -> int:
    """Run ``genretag train``; returns a process exit code."""
    compare_dir = args.compare or (args.runs_dir_arg if args.action == "compare" else None)
    if args.action == "compare" and compare_dir is None:
        raise SystemExit("genretag train compare: give RUNS_DIR")
    if compare_dir is not None:
        return _compare(compare_dir)
    if args.runs_dir_arg is not None:
        raise SystemExit(f"genretag train: unexpected argument {args.runs_dir_arg}")
    reuse = args.out or (Path("models/demo.pt") if args.demo and args.model == "tdcnn" else None)
    if args.reuse and reuse and reuse.exists():
        from genretag.core.artifact import ArtifactError, read_manifest

        try:
            manifest = read_manifest(reuse)
            print(json.dumps({"reused": str(reuse), "version": manifest.version}))
            return 0
        except ArtifactError:
            pass
    models = parse_models(args.model)
    auto = args.model == "auto"
    if args.out and len(models) > 1 and not auto:
        raise SystemExit("genretag train: --out needs a single --model (use --runs-dir)")
    progress = sys.stderr.isatty() and not args.no_progress
    if args.backbone is not None and (args.demo or not (args.fma_dir or args.dataset or
                                                         args.labels)):
        raise SystemExit("genretag train: --backbone needs --fma-dir, --dataset or --labels")
    if args.demo:
        return _train_demo(args, models, progress)
    if not (args.fma_dir or args.dataset or args.labels):
        raise SystemExit("genretag train: choose a dataset (--fma-dir, --dataset, --labels or "
                         "--demo), or `compare RUNS_DIR`")
    from genretag.training.train import train_and_export

    items, name, objective = load_items(args)
    run_dir = args.runs_dir / f"{name}-{'multilabel' if objective == 'multi' else 'top'}"
    cache = args.cache_dir or args.runs_dir / "decoded"
    reports = {}
    if args.backbone is not None and not auto:
        models = []  # --backbone alone trains the transfer model only
    for model in models:
        cfg = preset_config(args, model, objective, name)
        out = run_dir / f"{model}.pt" if auto or not args.out else args.out
        reports[model] = train_and_export(items, cfg, out, cache_dir=cache, progress=progress,
                                          allow_empty_split=args.allow_empty_split)
        _print_summary(out, reports[model])
    if args.backbone is not None:
        model = "transfer-ft" if args.fine_tune else "transfer"
        out = run_dir / f"{model}.pt" if auto or not args.out else args.out
        reports[model] = _train_transfer(args, items, name, objective, out, cache, progress)
        _print_summary(out, reports[model])
    if auto:
        from genretag.training.auto import export_best

        out, report = export_best(reports, args.out or run_dir / "auto.pt")
        _print_summary(out, report)
    if len(reports) > 1:
        return _compare(run_dir)
    return 0


def _train_transfer(args: argparse.Namespace, items: list, name: str, objective: str, out: Path,
                    cache: Path, progress: bool) -> dict:
    """``--backbone``: the transfer model (CLI options mapped onto ``train_transfer``)."""
    from genretag.training.transfer import train_transfer

    kinds = {}
    for text in args.kind:
        label, sep, kind = text.partition("=")
        if not sep or not label or kind not in ("genre", "mood", "era", "instrument", "voice",
                                                "other"):
            raise SystemExit(f"genretag train: --kind wants LABEL=KIND with KIND one of genre, "
                             f"mood, era, instrument, voice, other; got {text!r}")
        if kind != "genre":
            kinds[label] = kind
    return train_transfer(
        items, args.backbone, out, objective=objective, dataset=name,
        fine_tune_last=args.fine_tune, kinds=kinds, c=args.c,
        eval_windows=_pick(args.eval_windows, 4), train_seconds=args.train_seconds,
        train_hop_seconds=_pick(args.train_hop_seconds, 1.5), epochs=_pick(args.epochs, 40),
        lr=_pick(args.lr, 1e-3), batch_size=_pick(args.batch_size, 64),
        patience=_pick(args.patience, 8),
        min_label_count=_pick(args.min_label_count, 20 if args.fma_dir else 1),
        workers=_pick(args.workers, 8), cache_dir=cache, seed=args.seed,
        version=args.version or "", decoder=_pick(args.decoder, DEFAULT_DECODER),
        allow_empty_split=args.allow_empty_split, progress=progress)


def _train_demo(args: argparse.Namespace, models: list[str], progress: bool) -> int:
    from genretag.training.synth import make_synth_dataset
    from genretag.training.train import train_and_export

    items = make_synth_dataset(args.demo_dir, per_class=args.per_class, seconds=8.0, seed=args.seed)
    for model in models:
        out = args.out or (Path("models/demo.pt") if model == "tdcnn" else
                           Path(f"models/demo-{model}.pt"))
        report = train_and_export(items, demo_config(args, model), out, cache_dir=args.cache_dir,
                                  progress=progress)
        _print_summary(out, report)
    return 0


def _print_summary(out: Path, report: dict) -> None:
    test = report["test"]
    summary = {"artifact": str(out), "model": report["config"]["model"],
               "version": report.get("manifest", {}).get("version"),
               "test_accuracy": test.get("accuracy", test.get("top1_hit")),
               "test_accuracy_ci": test.get("accuracy_ci"),
               "test_macro_f1": test.get("macro_f1"), "roc_auc_macro": test.get("roc_auc_macro"),
               "validation_accuracy": report.get("validation_accuracy"),
               "counts": report["counts"], "train_seconds": round(report["train_seconds"], 1),
               "skipped": report["skipped_count"], "report": report.get("files", {}).get("json")}
    if "auto" in report:
        summary["auto"] = report["auto"]["selected"]
    print(json.dumps(summary))


def _compare(runs_dir: Path) -> int:
    from genretag.training.compare import compare_table, load_runs

    if not Path(runs_dir).is_dir():
        print(f"genretag train compare: {runs_dir} is not a folder", file=sys.stderr)
        return 1
    runs = load_runs(Path(runs_dir))
    if not runs:
        print(f"genretag train compare: no *.report.json under {runs_dir}", file=sys.stderr)
    print(compare_table(runs), end="")
    return 0
