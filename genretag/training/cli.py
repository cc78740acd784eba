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
from typing import TYPE_CHECKING

from genretag.core.cli_settings import (
    add_model_arguments, add_settings_arguments, settings_from_args,
)
from genretag.core.errors import UsageError
from genretag.core.fma.layout import SUBSETS
from genretag.schemas.manifest import TAG_KINDS
from genretag.training.cli_inputs import (
    PREFIX, arch_of, auto_configs, chosen_kinds, config_from_args, load_items,
)
from genretag.training.config import TrainConfig
from genretag.training.presets import default_text
from genretag.training.selection.limits import CV_BELOW, DEFAULT_BUDGET, DEFAULT_FOLDS
from genretag.training.registry import (
    DEFAULT_KIND,
    RECIPES,
    get_spec,
    kind_names,
    specs,
)

if TYPE_CHECKING:
    from genretag.training.run_report import RunReport

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
    "bootstrap intervals. Without --arch (or with `--arch auto`) it chooses the model: see "
    "'choosing a model' below. "
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
    lines += textwrap.wrap(f"{'auto':<{width}}  the default: all of them and a head on each "
                           "pretrained backbone; exports the one chosen by cross-validation "
                           "(small sets) or validation as auto.pt", 94, initial_indent="  ",
                           subsequent_indent=" " * (width + 4))
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
                        "comma-separated list, 'all', or 'auto' (choose one: by cross-"
                        f"validation on small sets; export it as auto.pt). Default: auto "
                        f"(--demo: {DEFAULT_KIND}).")
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
    choice = parser.add_argument_group(
        "choosing a model (--arch auto, the default)",
        f"With fewer than {CV_BELOW} validation tracks, auto cross-validates the candidates "
        "over training + validation (folds by the CSV's group column), eliminates those "
        "clearly behind after each fold, then refits the winner; otherwise it trains each "
        "once and keeps the best on validation. Candidates: every kind, plus a head on each "
        "pretrained backbone (--backbone, else every one in $XDG_CACHE_HOME/genretag/models, "
        "musicnn-msd pulled there when missing).")
    choice.add_argument("--time-budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                        help="Seconds the cross-validated choice may take, refit included: "
                        "candidates that cannot fit are skipped or stopped (the cheapest "
                        f"always runs). 0: no limit. Default {DEFAULT_BUDGET:g}.")
    choice.add_argument("--folds", type=int, default=DEFAULT_FOLDS, metavar="K",
                        help=f"Cross-validation folds, at least 3 (default {DEFAULT_FOLDS}).")
    choice.add_argument("--no-backbone", action="store_true",
                        help="auto: no pretrained backbone candidates (nothing is pulled).")
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
    auto = arch_of(args) == "auto"
    if auto and args.folds < 3:
        raise UsageError("--folds must be at least 3 (test, validation, training)")
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
    if auto:
        return _train_auto(args, kinds, items, name, objective, run_dir, cache, progress)
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
    if len(reports) > 1:
        return _compare(run_dir)
    return 0


def _train_auto(args: argparse.Namespace, kinds: list[str], items: list, name: str,
                objective: str, run_dir: Path, cache: Path, progress: bool) -> int:
    """auto: cross-validation on small sets, the validation choice on large ones."""
    from genretag.training.auto import choose_by_cross_validation, export_best
    from genretag.training.splits import by_split
    from genretag.training.train import train_and_export

    configs = auto_configs(args, kinds, objective, name)
    out = args.out or run_dir / "auto.pt"
    if len(by_split(items)["validation"]) < CV_BELOW:
        def say(text: str) -> None:
            print(f"auto: {text}", file=sys.stderr)

        out, report = choose_by_cross_validation(
            items, configs, out, folds=args.folds, budget=args.time_budget or None,
            cache_dir=cache, progress=progress, allow_empty_split=args.allow_empty_split,
            say=None if args.no_progress else say)
        _print_summary(out, report)
        return 0
    reports = {}
    for label, cfg in configs:
        reports[label] = train_and_export(items, cfg, run_dir / f"{label}.pt", cache_dir=cache,
                                          progress=progress,
                                          allow_empty_split=args.allow_empty_split)
        _print_summary(run_dir / f"{label}.pt", reports[label])
    out, report = export_best(reports, out)
    _print_summary(out, report)
    return _compare(run_dir)


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
