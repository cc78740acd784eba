"""Model sets: several artifacts served by one worker (``GENRETAG_MODELS=a.pt,b.pt``).

Each track is decoded once per distinct window layout (sample rate, window length) and each
shared backbone runs once: artifacts whose manifests name the same embedding space (contract
v2: same layer of the same backbone weights, e.g. ``musicnn-msd`` and a ``train --backbone``
head on it) are served by one ``embed(wave)`` call whose embeddings go through every member's
own ``head(z)``; the contract's ``forward == head ∘ embed`` makes that exact. The sharing is
also checked at load on a probe (the embeddings must agree), so a manifest that claims a space
it does not have costs speed, never correctness. Any other member runs whole, as alone.

The first model's tags go to the store's root keys (where a one-model worker writes them); each
further model's under its namespace (its manifest ``name``, see ``KeyLayout.for_model``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from genretag.core.audio.windows import stack_windows
from genretag.core.errors import UsageError
from genretag.core.logs import get_logger
from genretag.schemas import ModelManifest
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection

log = get_logger(__name__)

#: A further model's namespace: its manifest name, usable in key names.
NAMESPACE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Most a member's probe embedding may differ from its shared backbone's (relative to the scale).
SHARE_TOLERANCE = 1e-4
#: Windows of the load-time probe that checks a shared backbone.
PROBE_WINDOWS = 2

#: One member's result of a batch: per track, its windows' probabilities and (or None) embeddings.
MemberResult = tuple[list[np.ndarray], list[np.ndarray] | None]


def layout_of(manifest: ModelManifest) -> tuple[int, int]:
    """What decides a track's windows: the sample rate and the samples per window."""
    return manifest.sample_rate, manifest.clip_samples


@dataclass
class Member:
    """One artifact of the set: where its tags go and its loaded model."""

    namespace: str  # "" for the first model: the store's root keys
    tagger: Tagger
    layout: int = 0  # index into ModelSet.layouts


@dataclass
class SharedBackbone:
    """Members whose embedding is one space: ``runner``'s embed() once, every member's head()."""

    space: str
    runner: Tagger
    members: list[int] = field(default_factory=list)


class ModelSet:
    """The artifacts a worker serves, grouped for one decode per layout and one backbone pass per
    shared space; :attr:`passes` counts the model calls per batch (``backbone:<space>`` and
    ``model:<namespace>``), which is how tests see that a shared backbone ran once."""

    def __init__(self, taggers: list[Tagger], check_sharing: bool = True) -> None:
        if not taggers:
            raise UsageError("a model set needs at least one model")
        self.members = [Member(namespace_of(t.manifest) if k else "", t)
                        for k, t in enumerate(taggers)]
        seen = [m.namespace for m in self.members[1:]] + [taggers[0].manifest.name]
        twice = sorted({n for n in seen if seen.count(n) > 1})
        if twice:
            raise UsageError(f"models: two models are named {', '.join(twice)}; each model's tags "
                             "are stored under its manifest name, so the names must differ")
        keys: list[tuple[int, int]] = []
        for m in self.members:
            key = layout_of(m.tagger.manifest)
            if key not in keys:
                keys.append(key)
            m.layout = keys.index(key)
        self.layouts = [self._layout_manifest(k) for k in range(len(keys))]
        self.shared = self._share(check_sharing)
        self.passes: Counter[str] = Counter()

    @classmethod
    def load(cls, model: ModelSection, *, warmup: bool = True, calibrate: bool = True) -> ModelSet:
        """Load every artifact of ``model.artifacts`` (each verified, optimised and calibrated
        as a lone worker's would be)."""
        return cls([Tagger.load(model.model_copy(update={"path": path}), warmup=warmup,
                                calibrate=calibrate)
                    for path in model.artifacts])

    @property
    def primary(self) -> Tagger:
        """The first model: its manifest, version and embedding are the worker's own."""
        return self.members[0].tagger

    def namespaced(self) -> list[tuple[str, ModelManifest]]:
        """(namespace, manifest) of every model after the first."""
        return [(m.namespace, m.tagger.manifest) for m in self.members[1:]]

    def _layout_manifest(self, layout: int) -> ModelManifest:
        """The manifest a layout's tracks are decoded and vetted with: its first member's, with
        the largest ``min_seconds`` of its members (a track must be long enough for each)."""
        group = [m.tagger.manifest for m in self.members if m.layout == layout]
        return group[0].model_copy(update={"min_seconds": max(g.min_seconds for g in group)})

    def _share(self, check: bool) -> list[SharedBackbone]:
        """Groups of two or more members with one layout, frontend and embedding space."""
        groups: dict[tuple, SharedBackbone] = {}
        for k, m in enumerate(self.members):
            spec = m.tagger.manifest.embedding
            if spec is None:
                continue
            key = (m.layout, spec.space, spec.size, m.tagger.manifest.frontend.model_dump_json())
            group = groups.setdefault(key, SharedBackbone(spec.space, m.tagger))
            if group.members and check and not self._same_embedding(group.runner, m.tagger):
                log.warning("model_set.backbone_differs", extra={
                    "space": spec.space, "model": m.tagger.manifest.version,
                    "why": "its embedding of a probe differs from the shared backbone's: it "
                           "runs whole"})
                continue
            group.members.append(k)
        shared = [g for g in groups.values() if len(g.members) > 1]
        for g in shared:
            log.info("model_set.shared_backbone", extra={
                "space": g.space, "models": [self.members[k].tagger.manifest.version
                                             for k in g.members]})
        return shared

    @staticmethod
    def _same_embedding(a: Tagger, b: Tagger) -> bool:
        probe = torch.randn(PROBE_WINDOWS, a.manifest.clip_samples,
                            generator=torch.Generator().manual_seed(0)) * 0.1
        za, zb = a.call("embed", probe), b.call("embed", probe)
        scale = 1.0 + float(za.abs().max())
        return za.shape == zb.shape and float((za - zb).abs().max()) <= SHARE_TOLERANCE * scale

    def infer(self, per_layout_windows: list[list[np.ndarray]]) -> list[MemberResult]:
        """Per layout, the tracks' windows ``[(n_i, clip_samples)]`` → per member, per track its
        windows' probabilities and (first model only, when it has one) embeddings."""
        results: list[MemberResult | None] = [None] * len(self.members)
        done: set[int] = set()
        for group in self.shared:
            layout = self.members[group.members[0]].layout
            tracks = per_layout_windows[layout]
            if not tracks:
                continue
            windows, _ = stack_windows(tracks)
            z = group.runner.call("embed", windows)
            self.passes[f"backbone:{group.space}"] += 1
            for k in group.members:
                tagger = self.members[k].tagger
                results[k] = split_rows(tagger, tracks, tagger.call("head", z),
                                        z if k == 0 else None)
                done.add(k)
        for k, m in enumerate(self.members):
            if k in done:
                continue
            tracks = per_layout_windows[m.layout]
            results[k] = m.tagger.infer_windows(tracks, embeddings=k == 0)
            if tracks:
                self.passes[f"model:{m.namespace}"] += 1
        return results  # type: ignore[return-value] - every member is set above


def split_rows(tagger: Tagger, tracks: list[np.ndarray], probs: torch.Tensor,
               z: torch.Tensor | None) -> MemberResult:
    """One model's probabilities (and embeddings) of stacked windows → per track; shapes checked
    so a broken model never hands one track another's rows."""
    n = sum(len(t) for t in tracks)
    want = (n, len(tagger.manifest.labels))
    if tuple(probs.shape) != want:
        raise ValueError(f"model gave {tuple(probs.shape)} probabilities for {want} "
                         "windows × labels")
    bounds = np.cumsum([0] + [len(t) for t in tracks])
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    p = probs.numpy()
    rows = [p[a:b] for a, b in spans]
    if z is None or tagger.manifest.embedding is None:
        return rows, None
    e = z.numpy()
    if e.shape != (n, tagger.manifest.embedding.size):
        raise ValueError(f"model gave {e.shape} embeddings for {n} windows × "
                         f"{tagger.manifest.embedding.size} values (manifest)")
    return rows, [e[a:b] for a, b in spans]


def namespace_of(manifest: ModelManifest) -> str:
    """A further model's namespace in the tag store: its manifest name, if usable in keys."""
    if not NAMESPACE.match(manifest.name):
        raise UsageError(f"models: model name {manifest.name!r} ({manifest.version}) cannot name a "
                         "tag namespace: use letters, digits, '.', '_' or '-' (at most 64)")
    return manifest.name
