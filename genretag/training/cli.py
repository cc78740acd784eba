"""``genretag train``: build models, export the serving artifact, compare runs.

Only argparse wiring lives here. The training flags are generated from ``TrainConfig``'s fields
(``core.cli_settings.add_model_arguments``); their defaults come from ``presets`` and the
``--arch`` kinds from ``registry``, so a new field or kind needs no edit here. torch loads
lazily so ``genretag --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genretag.core.cli_settings import (
    add_model_arguments, add_settings_arguments, model_overrides, settings_from_args,
)
from genretag.core.errors import ModelNotFound, UsageError
from genretag.core.fma.layout import SUBSETS
from genretag.schemas.manifest import TAG_KINDS
from genretag.training.config import TrainConfig
from genretag.training.presets import default_text, resolve_config
from genretag.training.registry import (
    DEFAULT_KIND,
    RECIPES,
    choose_kinds,
    get_spec,
    kind_names,
    specs,
)

if TYPE_CHECKING:
    from genretag.training.run_report import RunReport

#: argparse dest prefix of the flags generated from ``TrainConfig``.
PREFIX = "train."
#: ``TrainConfig`` fields set otherwise: the kind (``--arch``), the objective (``--target``),
#: the dataset's name (from the source) and the label kinds (``--kind``).
NOT_FLAGS = ("model", "objective", "dataset", "label_kinds")
FRONTEND_FIELDS = ("sample_rate", "clip_seconds", "min_seconds", "frontend")
TRANSFER_FIELDS = ("backbone",)
ALIASES = {"decode_workers": ("--workers",)}

DESCRIPTION = (
    "Trains on FMA (--fma-dir), a folder-per-label dataset (--dataset), a labels CSV (--labels) "
    "or the synthetic demo set (--demo). Decodes audio with the worker's decoder (broken clips "
    "are skipped and listed in the report) and runs each model's frontend once per window "
    "(cached under --cache-dir); each kind fits by its recipe (below). Tracks are scored like "
    "the worker scores them (window probabilities averaged); the report has per-class F1 and "
    "bootstrap intervals. `--arch auto` trains every kind and exports the best on validation. "
    "`genretag train compare RUNS_DIR` prints every run side by side with the reference "
    "study's fma_small baselines.")


class _DeprecatedArch(argparse.Action):
    """``--model KIND``, the old name of ``--arch``: warns in one line, then sets ``--arch``."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        print("genretag train: --model is deprecated (it names the architecture, not a model "
              "file) and goes in the next release; use --arch", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _kinds_epilog() -> str:
    width = max(len(name) for name in (*kind_names(), "auto"))
    lines = ["kinds (--arch):"]
    for spec in specs():
        lines += textwrap.wrap(f"{spec.name:<{width}}  {spec.help}; fit: {RECIPES[spec.recipe]}",
                               94, initial_indent="  ", subsequent_indent=" " * (width + 4))
    frozen = [s.name for s in specs() if s.needs_backbone and s.fine_tuned]
    lines.append(f"  {'all':<{width}}  every kind that needs no backbone, then "
                 f"{', '.join(frozen)} with --backbone")
    lines.append(f"  {'auto':<{width}}  all of them; exports the best on validation as auto.pt")
    return "\n".join(lines)


def _label_kind(text: str) -> tuple[str, str]:
    label, sep, kind = text.partition("=")
    if not sep or not label or kind not in TAG_KINDS:
        raise argparse.ArgumentTypeError(f"wants LABEL=KIND with KIND one of "
                                         f"{', '.join(TAG_KINDS)}; got {text!r}")
    return label, kind


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="Train genre models (FMA, folder, CSV, demo), export TorchScript, compare runs.",
        description=textwrap.fill(DESCRIPTION, 94), epilog=_kinds_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    backbone_kinds = [s.name for s in specs() if s.needs_backbone and s.fine_tuned]
    tuned = [s.fine_tuned for s in specs() if s.needs_backbone and s.fine_tuned]
    parser.add_argument("--arch", default=None, metavar="KIND",
                        help=f"Architecture: one of {', '.join(kind_names())} (below), a "
                        "comma-separated list, 'all', or 'auto' (train all, export the best on "
                        f"validation as auto.pt). Default {DEFAULT_KIND}; with --backbone "
                        f"{', '.join(backbone_kinds)} ({', '.join(tuned)} with --fine-tune).")
    parser.add_argument("--model", dest="arch", action=_DeprecatedArch, help=argparse.SUPPRESS)
    parser.add_argument("--subset", choices=SUBSETS, default="small",
                        help="FMA subset (default small).")
    parser.add_argument("--target", choices=["top", "multilabel"], default=None,
                        help="FMA: top genre (softmax) or genres_all with implied parents "
                        "(sigmoid). Default: top for FMA, multilabel when a CSV has 'a|b' labels.")
    parser.add_argument("--top-level-only", action="store_true",
                        help="Multilabel FMA: only the top-level genres of genres_all.")
    parser.add_argument("--out", type=Path, default=None, metavar="PATH",
                        help="Artifact path (one kind). Default: models/demo.pt for --demo, "
                        "else RUNS_DIR/<dataset>-<target>/<kind>.pt.")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="Where runs go (default runs).")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="Cache of window features, one file per split and frontend "
                        "(fma_small: ~0.8 GB for the baselines, ~5 GB for the TD-CNN). "
                        "Default: RUNS_DIR/decoded (none for --demo).")
    parser.add_argument("--demo-dir", type=Path, default=Path("data/demo"),
                        help="Where the demo audio is generated (default data/demo).")
    parser.add_argument("--per-class", type=int, default=24,
                        help="Demo clips per class (default 24).")
    common = dict(dest_prefix=PREFIX, default_text=default_text, aliases=ALIASES)
    add_model_arguments(parser.add_argument_group(
        "training (TrainConfig; defaults: the real-data preset, then the kinds that differ; "
        "flags only, no env)"), TrainConfig, skip=(*NOT_FLAGS, *FRONTEND_FIELDS,
                                                   *TRANSFER_FIELDS), **common)
    add_model_arguments(parser.add_argument_group("window and frontend"), TrainConfig,
                        only=FRONTEND_FIELDS, flatten=("frontend",), **common)
    transfer = parser.add_argument_group("transfer learning (a head on a pretrained model)")
    add_model_arguments(transfer, TrainConfig, only=TRANSFER_FIELDS, **common)
    transfer.add_argument("--fine-tune", action="store_true",
                          help=f"With --backbone: train {', '.join(tuned)} (also musicnn's "
                          f"dense back end, after the frozen head) instead of "
                          f"{', '.join(backbone_kinds)}.")
    transfer.add_argument("--from-store", action="store_true",
                          help="With --backbone: fit the head on the embeddings already stored "
                          "in Redis for the labelled tracks (a row's id, else the id its path "
                          "was enqueued under), decoding nothing; rows without one are "
                          "reported as skipped. Same report and artifact as --backbone.")
    transfer.add_argument("--kind", action="append", default=[], metavar="LABEL=KIND",
                          type=_label_kind,
                          help="A label's tag kind (mood, era, instrument, voice, other), "
                          "recorded in the manifest; the others are genres.")
    parser.add_argument("--reuse", action="store_true",
                        help="Skip training if OUT exists and loads (with --demo, the demo "
                        "audio is still generated where it is missing).")
    parser.add_argument("--allow-empty-split", action="store_true",
                        help="Train even when the test split is empty (no test score).")
    parser.add_argument("--no-progress", action="store_true",
                        help="No progress bars (they are shown only on a terminal anyway).")
    from genretag.core.settings import RedisSettings

    add_settings_arguments(parser.add_argument_group("the tag store (with --from-store)"),
                           RedisSettings)
    parser.set_defaults(func=run_cli)


def chosen_kinds(args: argparse.Namespace) -> list[str]:
    """The kinds ``--arch`` (with ``--backbone`` and ``--fine-tune``) asks for, checked."""
    backbone_path = getattr(args, PREFIX + "backbone", None)
    backbone = backbone_path is not None
    try:
        kinds = choose_kinds(args.arch, backbone, args.fine_tune)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    needing = [k for k in kinds if get_spec(k).needs_backbone]
    if needing and not backbone:
        raise UsageError(f"--arch {','.join(needing)} needs --backbone PATH (a "
                         "pretrained artifact: `genretag models pull musicnn-msd`)")
    if backbone and not needing:
        raise UsageError(f"--backbone is used only by kinds that need one "
                         f"({', '.join(s.name for s in specs() if s.needs_backbone)}, or all, "
                         f"auto); --arch {args.arch} does not")
    if args.fine_tune and not backbone:
        raise UsageError("--fine-tune needs --backbone PATH")
    if args.from_store and not (backbone and not args.fine_tune):
        raise UsageError("--from-store needs --backbone PATH (the model whose stored embeddings "
                         "it reads) and fits a frozen head (no --fine-tune)")
    if backbone and not Path(backbone_path).is_file():
        raise ModelNotFound(f"--backbone {backbone_path}: no such file; pull a pretrained "
                            "model with `genretag models pull musicnn-msd`")
    return kinds


def config_from_args(args: argparse.Namespace, kind: str, objective: str, dataset: str
                     ) -> TrainConfig:
    """The ``TrainConfig`` of one kind: its preset (real data or demo), then the flags given."""
    flags: dict[str, Any] = model_overrides(args, PREFIX)
    kinds = {label: kind for label, kind in args.kind if kind != "genre"}
    if kinds:
        flags["label_kinds"] = kinds
    if objective == "multi" and "min_label_count" not in flags and args.fma_dir:
        flags["min_label_count"] = 20
    return resolve_config(kind, flags, objective=objective, dataset=dataset, demo=args.demo)


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
    seed = getattr(args, PREFIX + "seed", None) or 0
    if args.dataset:
        from genretag.training.readers import read_folder_dataset

        items = read_folder_dataset(args.dataset, seed=seed)
        name = Path(args.dataset).resolve().name
    else:
        from genretag.training.readers import read_labels_csv

        items = read_labels_csv(args.labels, seed=seed, check_files=not args.from_store)
        name = Path(args.labels).stem
    several = any(len(item.labels) > 1 for item in items)
    target = args.target or ("multilabel" if several else "top")
    if target == "top" and several:
        raise UsageError("some items have several labels; use --target multilabel")
    return items, name, "multi" if target == "multilabel" else "single"


def run_cli(args: argparse.Namespace) -> int:
    """Run ``genretag train``; returns a process exit code."""
    compare_dir = args.compare or (args.runs_dir_arg if args.action == "compare" else None)
    if args.action == "compare" and compare_dir is None:
        raise UsageError("compare: give RUNS_DIR")
    if compare_dir is not None:
        return _compare(compare_dir)
    if args.runs_dir_arg is not None:
        raise UsageError(f"unexpected argument {args.runs_dir_arg}")
    kinds = chosen_kinds(args)
    auto = args.arch == "auto"
    reuse = args.out or (Path("models/demo.pt") if args.demo and kinds == [DEFAULT_KIND] else None)
    if args.reuse and reuse and reuse.exists():
        from genretag.core.artifact import ArtifactError, read_manifest

        try:
            manifest = read_manifest(reuse)
        except ArtifactError:
            manifest = None
        if manifest is not None:
            if args.demo:  # the model without its audio is half a demo: make what is missing
                from genretag.training.synth import make_synth_dataset

                make_synth_dataset(args.demo_dir, per_class=args.per_class, seconds=8.0,
                                   seed=getattr(args, PREFIX + "seed", None) or 0)
            print(json.dumps({"reused": str(reuse), "version": manifest.version}))
            return 0
    if args.out and len(kinds) > 1 and not auto:
        raise UsageError("--out needs a single --arch (use --runs-dir)")
    progress = sys.stderr.isatty() and not args.no_progress
    if any(get_spec(k).needs_backbone for k in kinds) and not (args.fma_dir or args.dataset or
                                                                 args.labels):
        raise UsageError("--backbone needs --fma-dir, --dataset or --labels")
    if args.demo:
        return _train_demo(args, kinds, progress)
    if not (args.fma_dir or args.dataset or args.labels):
        raise UsageError("choose a dataset (--fma-dir, --dataset, --labels or "
                         "--demo), or `compare RUNS_DIR`")
    from genretag.training.train import train_and_export

    items, name, objective = load_items(args)
    run_dir = args.runs_dir / f"{name}-{'multilabel' if objective == 'multi' else 'top'}"
    cache = args.cache_dir or args.runs_dir / "decoded"
    reports = {}
    for kind in kinds:
        cfg = config_from_args(args, kind, objective, name)
        out = run_dir / f"{kind}.pt" if auto or not args.out else args.out
        if args.from_store:
            from genretag.core.settings import RedisSettings
            from genretag.training.from_store import train_from_store

            redis = settings_from_args(RedisSettings, args).redis
            reports[kind] = train_from_store(items, cfg, out, redis,
                                             allow_empty_split=args.allow_empty_split)
        else:
            reports[kind] = train_and_export(items, cfg, out, cache_dir=cache,
                                             progress=progress,
                                             allow_empty_split=args.allow_empty_split)
        _print_summary(out, reports[kind])
    if auto:
        from genretag.training.auto import export_best

        out, report = export_best(reports, args.out or run_dir / "auto.pt")
        _print_summary(out, report)
    if len(reports) > 1:
        return _compare(run_dir)
    return 0


def _train_demo(args: argparse.Namespace, kinds: list[str], progress: bool) -> int:
    from genretag.training.synth import make_synth_dataset
    from genretag.training.train import train_and_export

    seed = getattr(args, PREFIX + "seed", None) or 0
    items = make_synth_dataset(args.demo_dir, per_class=args.per_class, seconds=8.0, seed=seed)
    for kind in kinds:
        out = args.out or (Path("models/demo.pt") if kind == DEFAULT_KIND else
                           Path(f"models/demo-{kind}.pt"))
        cfg = config_from_args(args, kind, "single", "synthetic-demo")
        report = train_and_export(items, cfg, out, cache_dir=args.cache_dir, progress=progress)
        _print_summary(out, report)
    return 0


def _print_summary(out: Path, report: RunReport) -> None:
    """One JSON line per trained (or auto-selected) model."""
    test = report.test
    summary = {"artifact": str(out), "model": report.config.model,
               "version": report.manifest.version, "test_accuracy": report.test_accuracy,
               "test_accuracy_ci": test.get("accuracy_ci"),
               "test_macro_f1": test.get("macro_f1"), "roc_auc_macro": test.get("roc_auc_macro"),
               "validation_accuracy": report.validation_accuracy,
               "counts": report.counts, "train_seconds": round(report.train_seconds, 1),
               "skipped": report.skipped_count, "report": report.files.get("json")}
    if report.auto is not None:
        summary["auto"] = report.auto.selected
    if report.from_store is not None:
        summary["from_store"] = {"found": report.from_store.found,
                                 "missing": report.from_store.missing}
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
