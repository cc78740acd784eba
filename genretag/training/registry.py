"""The model registry: one ``ModelSpec`` per architecture — how it is built, how it fits, its
preset, its help line and rough cost — so a new kind is one ``register`` call and nothing else.

The trainers (``train.train_and_export``, ``transfer.train_transfer``), ``TrainConfig``'s check
of ``model``, the ``train --arch`` choices and help, the presets and ``--arch all/auto`` all
read this table. Torch-free at import (builders import their modules when called), so the CLI
lists and validates kinds without loading torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn

    from genretag.training.config import TrainConfig

#: How a kind fits, i.e. which trainer and which loop train it.
Recipe = Literal["lbfgs", "adamw", "backbone-head", "backbone-fine-tune"]
RECIPES: dict[str, str] = {
    "lbfgs": "LBFGS to convergence on standardised window statistics, C chosen on validation",
    "adamw": "AdamW on cached windows (one-cycle LR, augmentation, early stopping; --ensemble)",
    "backbone-head": "logistic head by LBFGS on a frozen pretrained backbone's cached embeddings",
    "backbone-fine-tune": "that head, then the backbone's dense back end with it by AdamW",
}
#: Words of ``--arch`` that are not kinds.
SELECTORS = ("all", "auto")
#: The kind trained when none is named (no backbone).
DEFAULT_KIND = "tdcnn"
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")

Builder = Callable[["TrainConfig", int], "nn.Module"]


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: everything training needs to know about it, in one place.

    ``preset`` overrides ``TrainConfig`` fields for real data (dotted keys for the front end:
    ``frontend.deltas``); a value may be a function of the resolved fields, whose docstring is
    its help text. ``feature_cost``/``fit_cost`` are measured times relative to ``logreg`` on
    the same tracks (docs/reports/training.md), None where not measured: ``auto``'s budgeted search
    plans with them. ``serve_cost``: the artifact's time per track in the worker relative to
    ``logreg``'s (docs/reports/training.md); of candidates that tie, ``auto`` picks the cheapest.
    """

    name: str
    help: str
    build: Builder
    recipe: Recipe
    preset: Mapping[str, Any] = field(default_factory=dict)
    feature_cost: float | None = None
    fit_cost: float | None = None
    fine_tuned: str | None = None  # the kind ``--fine-tune`` turns this one into
    serve_cost: float | None = None  # worker time per track relative to logreg (auto's ties)

    @property
    def needs_backbone(self) -> bool:
        """Whether the kind is a head on a pretrained backbone (``TrainConfig.backbone``)."""
        return self.recipe.startswith("backbone")

    @property
    def seeds(self) -> bool:
        """Whether ``--ensemble N`` trains N seeds of it (only the AdamW loop is seeded)."""
        return self.recipe == "adamw"


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a kind (its name: lowercase letters, digits, dashes; not ``all``/``auto``)."""
    if not _NAME.match(spec.name) or spec.name in SELECTORS:
        raise ValueError(f"model kind name {spec.name!r} must match {_NAME.pattern} and not be "
                         f"{' or '.join(SELECTORS)}")
    if spec.name in _SPECS:
        raise ValueError(f"model kind {spec.name!r} is already registered")
    if spec.recipe not in RECIPES:
        raise ValueError(f"{spec.name}: recipe {spec.recipe!r} is not one of {', '.join(RECIPES)}")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a kind (tests that register their own)."""
    _SPECS.pop(name, None)


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name``; ValueError naming the registered kinds otherwise."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(_SPECS)}") from None


def specs() -> tuple[ModelSpec, ...]:
    """Every registered kind, in registration order (the order of ``--arch all``)."""
    return tuple(_SPECS.values())


def kind_names() -> tuple[str, ...]:
    """Names of every registered kind, in registration order."""
    return tuple(_SPECS)


def _frozen_backbone_kinds() -> list[str]:
    tuned = {s.fine_tuned for s in _SPECS.values()}
    return [s.name for s in _SPECS.values() if s.needs_backbone and s.name not in tuned]


def choose_kinds(text: str | None, backbone: bool, fine_tune: bool) -> list[str]:
    """``--arch`` → kinds. None: tdcnn, or the backbone kinds with a backbone (the CLI passes
    ``auto`` on real data); ``all`` and ``auto``: every kind that needs no backbone, plus the
    backbone kinds when one is given; ``fine_tune`` turns each kind into its fine-tuned
    variant (``auto`` keeps both, to compare them). ValueError for unknown names."""
    if text is None:
        names = _frozen_backbone_kinds() if backbone else [DEFAULT_KIND]
    elif text in SELECTORS:
        names = [s.name for s in _SPECS.values() if not s.needs_backbone]
        names += _frozen_backbone_kinds() if backbone else []
    else:
        names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        bad = [n for n in names if n not in _SPECS]
        if bad or not names:
            raise ValueError(f"unknown model(s) {bad or text!r}; choose from "
                             f"{', '.join(_SPECS)}, a comma-separated list, all or auto")
    if fine_tune:
        tuned = [_SPECS[n].fine_tuned or n for n in names]
        names = list(dict.fromkeys([*names, *tuned] if text == "auto" else tuned))
    return names


# --- the built-in kinds -------------------------------------------------------------------

def _tdcnn(cfg: TrainConfig, n_labels: int) -> nn.Module:
    from genretag.training.models import TimeDistributedCNN

    return TimeDistributedCNN(n_labels, cfg.sample_rate, cfg.frontend, cfg.channels, cfg.dropout,
                              cfg.temporal, cfg.stats_branch)


def _logreg(cfg: TrainConfig, n_labels: int) -> nn.Module:
    from genretag.training.baselines import StatsClassifier

    return StatsClassifier(n_labels, cfg.sample_rate, cfg.frontend)


def _dense(cfg: TrainConfig, n_labels: int) -> nn.Module:
    from genretag.training.baselines import StatsClassifier

    # fit full-batch by LBFGS: L2, no dropout (it would make the objective stochastic)
    return StatsClassifier(n_labels, cfg.sample_rate, cfg.frontend,
                           (cfg.hidden, max(1, cfg.hidden // 2)))


def _cnn(cfg: TrainConfig, n_labels: int) -> nn.Module:
    from genretag.training.baselines import Cnn2d

    return Cnn2d(n_labels, cfg.sample_rate, cfg.frontend, tuple(cfg.channels), cfg.dropout)


def _lstm(cfg: TrainConfig, n_labels: int) -> nn.Module:
    from genretag.training.baselines import LstmClassifier

    return LstmClassifier(n_labels, cfg.sample_rate, cfg.frontend, max(1, cfg.hidden // 2),
                          cfg.dropout)


def _transfer(cfg: TrainConfig, n_labels: int) -> nn.Module:
    from genretag.training.transfer import TransferModel, load_backbone

    if cfg.backbone is None:
        raise ValueError(f"{cfg.model} needs a backbone")
    return TransferModel(load_backbone(cfg.backbone)[0], n_labels)


def _crop_long_clips(fields: Mapping[str, Any]) -> float | None:
    """25 s when the clip is ≥ 30 s"""
    return 25.0 if fields["clip_seconds"] >= 30 else None


# serve_cost: `python -m bench.serve_cost` (the serving model on the worker's windows of a
# 30 s track, one torch thread, median of 7 interleaved rounds, load 15-19, 2026-12-06):
# logreg 0.11 s, dense 1.16x, lstm 1.6x, cnn 1.96x, tdcnn 1.99x, musicnn heads 14.2x (transfer
# and transfer-ft run the same network; 14.5x measured for the latter).
# Costs: docs/reports/training.md, cross-validation on 207 tracks, 2 CPU cores, load 1-3: features
# once 35 s (MFCC windows of 30 s, shared by logreg/dense/cnn/lstm) and 59 s (tdcnn); fits of
# 5 folds 2.5 s logreg, 58 s dense, 644 s cnn, 252 s lstm, 107 s tdcnn. The musicnn heads:
# bench.realset_cv on 248 tracks, beside logreg in the same run (load 20-27, 2026-12-06):
# the frozen head's 5 fits 297 s against logreg's 51 s (5.8); transfer-ft shares the frozen
# head's embedding cache. Its feature_cost is for the default run's set size (~250 clips) and
# the head trained on the worker's windows (10 per 30 s clip, transfer.transfer_plans): the
# median of four measurements on the 248 clips, fast port, 2026-12-06 (docs/reports/
# training.md): `python -m bench.feature_cost --every 1 --rounds 2` 3.7 and 4.1 (load 1-5),
# the default `train --labels` runs' own ratios 6.9 (embeddings 83.8 s, logreg 12.1 s, load
# 1.6-4.4) and 2.7 (75.2 s, 27.4 s, load 2-8). The head's pass varied less (48-95 s) than
# logreg's (12-27 s), which scales the estimate. Training windows every 1.5 s (19 per clip,
# before) measured 4.3 and 8.0 in those rounds and 12.6 in a default run at load 6-8. The
# ratio grows with the clip count, logreg's pass being mostly fixed cost.
register(ModelSpec(
    "tdcnn", "serving model: MFCC + deltas + rhythm channels in chunks, a shared CNN per chunk, "
    "attention (or --temporal gru) over chunks, plus the window's MFCC statistics",
    _tdcnn, "adamw", preset={
        "clip_seconds": 10.0, "frontend.deltas": 1, "frontend.rhythm": True,
        "channels": (16, 32, 64), "stats_branch": True, "epoch_windows": 1},
    feature_cost=1.7, fit_cost=43.0, serve_cost=1.99))
register(ModelSpec(
    "logreg", "logistic regression on standardised MFCC mean/std over time",
    _logreg, "lbfgs", feature_cost=1.0, fit_cost=1.0, serve_cost=1.0))
register(ModelSpec(
    "dense", "2-layer MLP on the same statistics",
    _dense, "lbfgs", feature_cost=1.0, fit_cost=23.0, serve_cost=1.16))
register(ModelSpec(
    "cnn", "2-D CNN over the whole MFCC, globally pooled",
    _cnn, "adamw", preset={"crop_seconds": _crop_long_clips}, feature_cost=1.0, fit_cost=258.0,
    serve_cost=1.96))
register(ModelSpec(
    "lstm", "2-layer LSTM over MFCC frames",
    _lstm, "adamw", preset={"crop_seconds": _crop_long_clips}, feature_cost=1.0, fit_cost=101.0,
    serve_cost=1.6))
# no train_hop_seconds: a head trains on the worker's windows (transfer.transfer_plans)
_BACKBONE_PRESET = {"lr": 1e-3, "batch_size": 64}
register(ModelSpec(
    "transfer", "a linear head on a pretrained backbone's embeddings (--backbone PATH)",
    _transfer, "backbone-head", preset=_BACKBONE_PRESET, fine_tuned="transfer-ft",
    feature_cost=3.9, fit_cost=5.8, serve_cost=14.2))
register(ModelSpec(
    "transfer-ft", "the transfer head, then musicnn's dense back end trained with it",
    _transfer, "backbone-fine-tune", preset=_BACKBONE_PRESET, serve_cost=14.2))
