"""FMA's names and folder layout: subsets (small ⊂ medium ⊂ large), official splits, file paths.

The one definition of the subset and split names; CLIs, the downloader and the readers import them.
"""

from __future__ import annotations

from pathlib import Path

#: Subsets from smallest to largest; each contains the ones before it.
SUBSETS: tuple[str, ...] = ("small", "medium", "large")
#: Official split names, as written in ``('set', 'split')``.
SPLITS: tuple[str, ...] = ("training", "validation", "test")

_SUBSET_RANK = {name: rank for rank, name in enumerate(SUBSETS)}


def subset_rank(subset: str) -> int:
    """Position of ``subset`` in ``SUBSETS`` (a larger subset contains the smaller ones)."""
    try:
        return _SUBSET_RANK[subset]
    except KeyError:
        raise ValueError(
            f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}") from None


def audio_path(audio_dir: str | Path, track_id: int) -> Path:
    """Where FMA stores a track's mp3: three-digit folder of the zero-padded id, then the id.

    >>> audio_path("fma_small", 2).as_posix()
    'fma_small/000/000002.mp3'
    >>> audio_path("fma_large", 155320).as_posix()
    'fma_large/155/155320.mp3'
    """
    tid = f"{int(track_id):06d}"
    return Path(audio_dir) / tid[:3] / f"{tid}.mp3"


def metadata_dir(fma_dir: str | Path) -> Path:
    """``fma_metadata`` inside a directory holding the extracted FMA archives."""
    return Path(fma_dir) / "fma_metadata"


def subset_audio_dir(fma_dir: str | Path, subset: str) -> Path:
    """The extracted audio folder of ``subset`` (``fma_small`` etc.) inside ``fma_dir``."""
    subset_rank(subset)
    return Path(fma_dir) / f"fma_{subset}"

