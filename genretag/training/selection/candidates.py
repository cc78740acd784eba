"""The candidates ``auto`` compares: a config per kind, and a head on each pulled backbone.

A candidate knows how to build a fresh model, which frontend makes its features and under which
plans and cache key (the same the trainers use, so the winner's refit reuses the features the
cross-validation computed). Backbones: ``--backbone PATH`` when given; otherwise every artifact
in the pretrained folder (``$XDG_CACHE_HOME/genretag/models``), musicnn-msd pulled there when
missing; when it cannot be fetched, one line says so and the run goes on without it.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from genretag.core.artifact import ArtifactError, read_manifest
from genretag.core.errors import FatalError
from genretag.schemas import LogMelParams, ModelManifest
from genretag.training.config import TrainConfig
from genretag.training.features import WindowPlan
from genretag.training.registry import ModelSpec, get_spec
from genretag.training.train import build_model, window_plans
from genretag.training.transfer import (
    TransferModel,
    backbone_windows,
    load_backbone,
    transfer_plans,
)

#: The backbone pulled for ``auto`` when none is given or found.
DEFAULT_BACKBONE = "musicnn-msd"


@dataclass
class Candidate:
    """One model ``auto`` may pick: a resolved config (a backbone kind's has the backbone's
    rate and clip) and, for backbone kinds, the backbone network loaded once."""

    name: str
    cfg: TrainConfig
    net: nn.Module | None = None
    backbone: ModelManifest | None = None
    _probe: nn.Module | None = field(default=None, repr=False)

    @property
    def spec(self) -> ModelSpec:
        """The registry entry of the candidate's kind."""
        return get_spec(self.cfg.model)

    def build(self, n_labels: int) -> nn.Module:
        """A fresh, untrained model (a backbone kind gets its own copy of the backbone)."""
        if self.net is not None:
            return TransferModel(copy.deepcopy(self.net), n_labels)
        return build_model(self.cfg, n_labels)

    def frontend(self, n_labels: int) -> nn.Module:
        """The module whose output is cached per window (the same for any fitted copy)."""
        if self._probe is None:
            self._probe = self.build(n_labels).frontend
        return self._probe

    def plans(self) -> tuple[WindowPlan, WindowPlan, str]:
        """(training plan, evaluation plan, cache key), as its trainer computes them."""
        if self.backbone is not None:
            return transfer_plans(self.cfg, self.backbone)
        return window_plans(self.cfg)


def make_candidate(cfg: TrainConfig, name: str | None = None) -> Candidate:
    """The candidate of a resolved config (loads a backbone kind's backbone once)."""
    if not get_spec(cfg.model).needs_backbone:
        return Candidate(name or cfg.model, cfg)
    assert cfg.backbone is not None  # TrainConfig refuses a backbone kind without one
    net, manifest = load_backbone(cfg.backbone)
    return Candidate(name or cfg.model, backbone_windows(cfg, manifest), net, manifest)


def pretrained_dir() -> Path:
    """Where ``auto`` keeps and looks for pretrained backbones."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genretag" / "models"


def default_backbones(folder: Path | None = None) -> list[Path]:
    """Every pretrained backbone artifact in ``folder`` (default :func:`pretrained_dir`),
    musicnn-msd pulled there first when missing. A pull that fails prints one line on stderr
    and the run goes on with what is there (possibly nothing)."""
    from genretag.training.pretrained.pull import pull

    folder = folder or pretrained_dir()
    target = folder / f"{DEFAULT_BACKBONE}.pt"
    if not target.is_file():
        try:
            pull(DEFAULT_BACKBONE, target, folder.parent)
        except (FatalError, ArtifactError, OSError) as exc:
            print(f"genretag train: no pretrained backbone candidate ({DEFAULT_BACKBONE} could "
                  f"not be fetched: {str(exc).splitlines()[0] if str(exc) else exc!r}); "
                  f"`genretag models pull {DEFAULT_BACKBONE} --out {target}` adds it",
                  file=sys.stderr)
    return [p for p in sorted(folder.glob("*.pt")) if _is_backbone(p)]


def _is_backbone(path: Path) -> bool:
    try:
        return isinstance(read_manifest(path).frontend, LogMelParams)
    except ArtifactError:
        return False


def backbone_name(path: Path) -> str:
    """A short name for a candidate on this backbone: the artifact's model name."""
    try:
        return read_manifest(path).name
    except ArtifactError:
        return path.stem
