"""What ``genretag train``'s flags ask for: the kinds to train (checked), each kind's
``TrainConfig`` (preset, then flags), auto's candidates, and the labelled items to read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from genretag.core.cli_settings import model_overrides
from genretag.core.errors import ModelNotFound, UsageError
from genretag.training.config import TrainConfig
from genretag.training.presets import resolve_config
from genretag.training.registry import choose_kinds, get_spec, specs

#: argparse dest prefix of the flags generated from ``TrainConfig``.
PREFIX = "train."


def chosen_kinds(args: argparse.Namespace) -> list[str]:
    """The kinds ``--arch`` (with ``--backbone`` and ``--fine-tune``) asks for, checked."""
    backbone_path = getattr(args, PREFIX + "backbone", None)
    backbone = backbone_path is not None
    if args.no_backbone and backbone:
        raise UsageError("--no-backbone and --backbone contradict each other")
    try:
        kinds = choose_kinds(arch_of(args), backbone, args.fine_tune)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.from_store and not (backbone and not args.fine_tune):
        raise UsageError("--from-store needs --backbone PATH (the model whose stored embeddings "
                         "it reads) and fits a frozen head (no --fine-tune)")
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
    if backbone and not Path(backbone_path).is_file():
        raise ModelNotFound(f"--backbone {backbone_path}: no such file; pull a pretrained "
                            "model with `genretag models pull musicnn-msd`")
    return kinds


def arch_of(args: argparse.Namespace) -> str | None:
    """``--arch`` as given; none given: ``transfer`` with --from-store (a head on the stored
    embeddings is the only kind that needs no decoding), ``auto`` on real data, the default
    kind for --demo."""
    if args.arch is None and getattr(args, "from_store", False):
        return "transfer"
    if args.arch is None and not getattr(args, "demo", False):
        return "auto"
    return args.arch


def config_from_args(args: argparse.Namespace, kind: str, objective: str, dataset: str,
                     backbone: Path | None = None) -> TrainConfig:
    """The ``TrainConfig`` of one kind: its preset (real data or demo), then the flags given
    (``backbone``: auto's default backbone, when --backbone was not given)."""
    flags: dict[str, Any] = model_overrides(args, PREFIX)
    if backbone is not None:
        flags["backbone"] = backbone
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


def auto_configs(args: argparse.Namespace, kinds: list[str], objective: str, name: str
                 ) -> list[tuple[str, TrainConfig]]:
    """auto's candidates: each kind that needs no backbone, and each backbone kind on every
    backbone (--backbone, else the pulled ones), named ``transfer@musicnn-msd`` when several."""
    from genretag.training.selection.candidates import backbone_name, default_backbones

    given = getattr(args, PREFIX + "backbone", None)
    backbones = [given] if given else [] if args.no_backbone else default_backbones()
    configs = [(k, config_from_args(args, k, objective, name)) for k in kinds
               if not get_spec(k).needs_backbone]
    backbone_kinds = [s.name for s in specs() if s.needs_backbone and s.fine_tuned]
    if args.fine_tune:
        backbone_kinds += [get_spec(k).fine_tuned or k for k in backbone_kinds]
    for path in backbones:
        for kind in backbone_kinds:
            label = kind if len(backbones) == 1 else f"{kind}@{backbone_name(path)}"
            configs.append((label, config_from_args(args, kind, objective, name, path)))
    return configs
