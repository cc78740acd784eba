"""The genre timeline: built from per-window probabilities, stored compactly in the track hash,
read back as sections (runs of windows with the same top label) for people.

Encoding (the ``timeline`` field of ``P track:<id>``): one JSON object
``{"v": 1, "c": clip_seconds, "l": [labels], "t": [starts], "p": [per-mille ints, row-major],
"s": "0110..."}``. Probabilities are kept to 3 decimals, so per-mille integers hold them
exactly: ~4 bytes per window and label (8 windows × 163 FMA genres ≈ 5 kB), bounded by
:data:`genretag.schemas.tags.TIMELINE_MAX_WINDOWS`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from genretag.schemas import Timeline

FORMAT_VERSION = 1


def build_timeline(labels: Sequence[str], clip_seconds: float, starts: Sequence[float],
                   probs: Iterable[Iterable[float]], silent: Sequence[bool]) -> Timeline:
    """A :class:`Timeline` from ``(n_windows, n_labels)`` probabilities (an array or nested
    rows), clipped to [0, 1] and rounded to 3 decimals.

    Plain Python on purpose: this module is on the read path of :mod:`genretag.client`, whose
    light install has no numpy.
    """
    return Timeline(
        clip_seconds=float(clip_seconds), labels=list(labels),
        starts=[round(float(s), 3) for s in starts],
        probabilities=[[round(_clip01(float(p)), 3) for p in row] for row in probs],
        silent=[bool(s) for s in silent],
    )


def _clip01(p: float) -> float:
    """``p`` within [0, 1] (NaN stays NaN, as numpy's clip leaves it)."""
    return p if p != p else min(max(p, 0.0), 1.0)


def encode_timeline(timeline: Timeline) -> str:
    """The compact string stored in Redis."""
    flat = [round(p * 1000) for row in timeline.probabilities for p in row]
    return json.dumps({
        "v": FORMAT_VERSION, "c": timeline.clip_seconds, "l": timeline.labels,
        "t": timeline.starts, "p": flat, "s": "".join("1" if s else "0" for s in timeline.silent),
    }, separators=(",", ":"))


def decode_timeline(text: str) -> Timeline:
    """Inverse of :func:`encode_timeline`; ValueError with one clear line if it is malformed."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown timeline format {data.get('v') if isinstance(data, dict) else data!r}")
        labels, flat, width = data["l"], data["p"], len(data["l"])
        if width == 0 or len(flat) % width:
            raise ValueError("probabilities do not fill whole rows")
        rows = [[v / 1000 for v in flat[i:i + width]] for i in range(0, len(flat), width)]
        return Timeline(clip_seconds=data["c"], labels=labels, starts=data["t"],
                        probabilities=rows, silent=[ch == "1" for ch in data["s"]])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable timeline: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"invalid timeline: {exc.errors()[0]['msg']}") from None


@dataclass(frozen=True)
class Section:
    """A run of consecutive audible windows with the same most probable label: from the first
    window's start to the last one's end, with the run's mean probability of every label."""

    start_s: float
    end_s: float
    windows: int
    top: list[tuple[str, float]]  # (label, mean probability), most probable first

    @property
    def label(self) -> str:
        return self.top[0][0]


def timeline_sections(timeline: Timeline, top: int = 3) -> list[Section]:
    """The timeline read as sections: what the track does, where (silent windows split runs
    and belong to none). Plain Python: the light install (the client) reads timelines too."""
    sections: list[Section] = []
    run: list[int] = []
    rows = timeline.probabilities

    def argmax(row: Sequence[float]) -> int:
        return max(range(len(row)), key=lambda j: (row[j], -j))  # the first of ties, as numpy

    def close() -> None:
        if run:
            mean = [sum(rows[k][j] for k in run) / len(run) for j in range(len(timeline.labels))]
            order = sorted(range(len(mean)), key=lambda j: -mean[j])[:top]  # stable
            sections.append(Section(
                timeline.starts[run[0]], round(timeline.starts[run[-1]] + timeline.clip_seconds, 3),
                len(run), [(timeline.labels[k], round(mean[k], 3)) for k in order]))
            run.clear()

    for k, quiet in enumerate(timeline.silent):
        if quiet or (run and argmax(rows[k]) != argmax(rows[run[-1]])):
            close()
        if not quiet:
            run.append(k)
    close()
    return sections
