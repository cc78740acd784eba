"""Show a track's genre timeline: a table for a terminal, JSON, or a genres × time heat map.

Used by ``genretag tags ID --timeline [--plot FILE.png]`` and ``genretag tag FILE --timeline``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from genretag.cli.display import clock, printable
from genretag.core.errors import FatalError
from genretag.core.timeline import timeline_sections
from genretag.schemas import TagRecord, Timeline


def timeline_json(record: TagRecord) -> dict[str, object]:
    """The timeline as plain JSON (one dict per window, and the sections read from them), with
    the track's duration."""
    tl = record.timeline
    windows = [] if tl is None else [
        {"start_s": s, "end_s": round(s + tl.clip_seconds, 3), "silent": quiet,
         "probabilities": dict(zip(tl.labels, row, strict=True))}
        for s, row, quiet in zip(tl.starts, tl.probabilities, tl.silent, strict=True)
    ]
    sections = [] if tl is None else [
        {"start_s": sec.start_s, "end_s": sec.end_s, "windows": sec.windows,
         "top": dict(sec.top)} for sec in timeline_sections(tl)]
    return {"track_id": record.track_id, "model_version": record.model_version,
            "duration_s": record.duration_s, "sections": sections, "windows": windows}


def format_timeline(record: TagRecord, top: int = 3, title: str | None = None) -> str:
    """The track's sections (time ranges with the same top genre, and their top genres), then
    one line per window: start, end and its most probable genres (or ``(silent)``)."""
    tl = record.timeline
    head = (f"{printable(title or record.track_id)}: {clock(record.duration_s or 0.0)} long, "
            f"model {printable(record.model_version)}")
    if tl is None:
        return f"{head}\n(no timeline: tagged before whole-track windows)"
    lines = [f"{head}, {len(tl.starts)} windows of {tl.clip_seconds:g} s",
             "sections (consecutive windows with the same top genre):"]
    for sec in timeline_sections(tl, top):
        what = ", ".join(f"{printable(g)} {p:.2f}" for g, p in sec.top)
        span = f"{clock(sec.start_s)}-{clock(sec.end_s)}"
        lines.append(f"  {span:>15}  {what}  ({sec.windows} window{'s' * (sec.windows > 1)})")
    lines += ["windows:", f"{'start':>7} {'end':>7}  top genres"]
    for start, row, quiet in zip(tl.starts, tl.probabilities, tl.silent, strict=True):
        best = sorted(zip(tl.labels, row, strict=True), key=lambda kv: -kv[1])[:top]
        what = "(silent)" if quiet else ", ".join(f"{printable(g)} {p:.2f}" for g, p in best)
        lines.append(f"{clock(start):>7} {clock(start + tl.clip_seconds):>7}  {what}")
    return "\n".join(lines)


def plot_timeline(record: TagRecord, path: Path, max_genres: int = 20) -> Path:
    """A heat map, genres (rows) × window start (columns), of ``record``'s timeline."""
    tl: Timeline | None = record.timeline
    if tl is None:
        raise FatalError(f"track {record.track_id} has no timeline to plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FatalError("--plot needs matplotlib: pip install 'genretag[train]'") from None
    import numpy as np

    probs = np.asarray(tl.probabilities, dtype=float).T  # labels × windows
    order = np.argsort(-probs.max(axis=1))[:max_genres]  # the genres that ever stand out
    fig, ax = plt.subplots(figsize=(min(14, 3 + 0.5 * len(tl.starts)), 1.5 + 0.35 * len(order)))
    image = ax.imshow(probs[order], aspect="auto", vmin=0.0, vmax=1.0, cmap="magma",
                      interpolation="nearest")
    ax.set_yticks(range(len(order)), [tl.labels[i] for i in order])
    ax.set_xticks(range(len(tl.starts)),
                  [clock(s) + (" (silent)" if q else "") for s, q in zip(tl.starts, tl.silent,
                                                                        strict=True)],
                  rotation=60, ha="right")
    ax.set_xlabel("window start")
    ax.set_title(f"{record.track_id} ({record.model_version})")
    fig.colorbar(image, ax=ax, label="probability")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def show_timelines(found: dict[str, TagRecord | None], as_json: bool,
                   plot: Path | None = None) -> int:
    """Print each track's timeline (JSON or table), optionally plot it; 1 if a track has none."""
    if plot is not None and len(found) != 1:
        print("genretag tags: --plot takes exactly one TRACK_ID", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({tid: (timeline_json(rec) if rec else None)
                          for tid, rec in found.items()}, indent=2))
    else:
        print("\n\n".join(format_timeline(rec) if rec else f"{tid}: (no tags)"
                          for tid, rec in found.items()))
    if plot is not None:
        [rec] = found.values()
        if rec is None:
            return 1
        plot_timeline(rec, plot)
    return 0 if all(rec is not None and rec.timeline is not None for rec in found.values()) else 1
