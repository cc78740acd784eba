"""Whole-track judgement of decoded windows: too short, silent, and window probabilities → tags.

A track is judged on every sampled window, not its opening: it is ``too_short`` when its whole
duration is under the model's minimum, ``silent`` only when every window is silent, and a
silent window (a quiet intro, a pause) is left out of the track's tags.

Aggregation is a documented choice (``WINDOW_AGGREGATION``): ``mean`` (default, what the
model's validation metrics assume) or ``trimmed`` (per label, the mean without the highest
and lowest quarter of windows, when there are at least four: robust to a few atypical
windows such as an intro or a bridge, at the cost of ignoring short genre changes).
"""

from __future__ import annotations

import numpy as np

from genretag.core.errors import PermanentError
from genretag.core.settings import Aggregation
from genretag.schemas import ReasonCode

#: RMS below this is silence (the worker's long-standing threshold).
SILENCE_RMS = 1e-4



def silent_windows(windows: np.ndarray, lengths: list[int]) -> np.ndarray:
    """Boolean per window: its real samples (``lengths[i]``) are silent, or it has none."""
    out = np.ones(len(windows), dtype=bool)
    for i, n in enumerate(lengths):
        if n > 0:
            rms = float(np.sqrt(np.mean(np.square(windows[i, :n], dtype=np.float64))))
            out[i] = rms < SILENCE_RMS
    return out


def vet_track(duration_s: float, decoded_s: float, silent: np.ndarray, min_seconds: float,
              track_id: str | None = None) -> None:
    """Raise ``too_short`` or ``silent`` for the whole track (see the module docstring)."""
    seconds = min(duration_s, decoded_s) if decoded_s < min_seconds else duration_s
    if seconds < min_seconds:
        raise PermanentError(ReasonCode.TOO_SHORT,
                             f"{seconds:.2f}s of audio, minimum is {min_seconds:g}s",
                             track_id=track_id)
    if bool(np.all(silent)):
        raise PermanentError(ReasonCode.SILENT,
                             f"audio is silent (RMS below {SILENCE_RMS:g} in all "
                             f"{len(silent)} sampled windows)", track_id=track_id)


def aggregate(probs: np.ndarray, silent: np.ndarray, method: Aggregation) -> np.ndarray:
    """``(n_windows, n_labels)`` probabilities → ``(n_labels,)`` track probabilities.

    Silent windows are left out (all silent: every window counts, though the worker never
    tags such a track).
    """
    keep = probs[~silent] if not np.all(silent) else probs
    if method == "mean" or len(keep) < 4:
        return keep.mean(axis=0)
    if method == "trimmed":
        cut = len(keep) // 4
        ordered = np.sort(keep, axis=0)
        return ordered[cut:len(keep) - cut].mean(axis=0)
    raise ValueError(f"unknown aggregation {method!r}")
