"""Presets: the ``TrainConfig`` a run starts from, before the flags given on the line.

Real data (FMA, a folder, a CSV): ``REAL_DATA`` over ``TrainConfig``'s defaults, then the kind's
own preset (``ModelSpec.preset``, e.g. the TD-CNN's 10 s windows), then the flags. The
synthetic demo: ``DEMO`` for every kind, then the flags. Values are documented in
docs/guides/training.md; ``default_text`` renders them for ``train --help``. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo

from genretag.training.config import TrainConfig
from genretag.training.registry import ModelSpec, get_spec, specs

#: Real data: more epochs and patience than the bare defaults, mixup, 8 decoders.
REAL_DATA: dict[str, Any] = {"epochs": 40, "patience": 8, "mixup": 0.2, "decode_workers": 8}
#: ``train --demo``: 6 s clips of the synthetic set, a small TD-CNN-sized network.
DEMO: dict[str, Any] = {
    "sample_rate": 22050, "clip_seconds": 6.0, "frontend.chunk_frames": 32,
    "channels": (16, 32, 64), "epochs": 12, "batch_size": 16, "lr": 3e-3, "version": "demo-1",
}
#: What a field whose default is None means, where its description does not say.
NONE_MEANS = {"frontend.f_max": "half the sample rate"}


def resolve_config(kind: str, flags: Mapping[str, Any], *, objective: str, dataset: str,
                   demo: bool = False) -> TrainConfig:
    """The config of one run: the preset of ``kind`` (real data or demo), then ``flags``
    (dotted field paths, as ``model_overrides`` gives them), then the run's own fields."""
    spec = get_spec(kind)
    fields: dict[str, Any] = dict(DEMO if demo else {**REAL_DATA, **_static(spec)})
    fields.update(flags)
    if not demo:
        for path, value in spec.preset.items():
            if callable(value) and path not in flags:
                fields[path] = value(_resolved(fields))
    crop, clip = fields.get("crop_seconds"), _resolved(fields)["clip_seconds"]
    if crop is not None and crop > clip:
        fields["crop_seconds"] = None  # one --crop-seconds serves every kind of a list
    if not spec.seeds:
        fields["ensemble"] = 1
    fields.update(model=kind, objective=objective, dataset=dataset)
    return TrainConfig(**nest(fields))


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"frontend.deltas": 1}`` → ``{"frontend": {"deltas": 1}}``."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _static(spec: ModelSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.preset.items() if not callable(v)}


def _resolved(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Every field's value so far: ``fields`` over the defaults (flat, dotted)."""
    return {**_defaults(), **fields}


def _defaults() -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, field in TrainConfig.model_fields.items():
        value = field.get_default(call_default_factory=True)
        if hasattr(value, "model_dump"):
            flat.update({f"{name}.{k}": v for k, v in value.model_dump().items()})
        else:
            flat[name] = value
    return flat


def default_text(path: str, field: FieldInfo) -> str | None:
    """The defaults of a field as ``train --help`` shows them: the real-data value, then the
    kinds and the demo that differ (``default 30.0; tdcnn: 10.0; --demo: 6.0``)."""
    base = _resolved(REAL_DATA).get(path)
    parts = [] if base in (None, "") else [f"default {_show(base)}"]
    if base is None and path in NONE_MEANS:
        parts.append(f"default {NONE_MEANS[path]}")
    by_value: dict[str, list[str]] = {}
    for spec in specs():
        if path in spec.preset and spec.preset[path] != base:
            by_value.setdefault(_show(spec.preset[path]), []).append(spec.name)
    parts += [f"{', '.join(names)}: {text}" for text, names in by_value.items()]
    if path in DEMO and DEMO[path] != base:
        parts.append(f"--demo: {_show(DEMO[path])}")
    return "; ".join(parts) or None


def _show(value: Any) -> str:
    if callable(value):  # a preset computed from other fields says how
        return (value.__doc__ or value.__name__).strip()
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)
