"""The audio path's sections: what may be read, how it is decoded, where the windows go.

Shared by the worker, ``genretag tag``, the producer's root check and training's evaluation,
so each default lives here once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from genretag.core.settings.base import PathList, Section, setting

DecoderName = Literal["libav", "ffmpeg"]
Aggregation = Literal["mean", "trimmed"]


class AccessSection(Section):
    """Which inputs the worker may read (the producer checks the same roots)."""

    allowed_roots: PathList = Field(
        default_factory=lambda: [str(Path.cwd())],
        description="Local paths must resolve (symlinks too) under one of these directories "
        "(comma-separated; ~ and $VARS are expanded).")
    allow_http: bool = Field(default=False, description="Allow http(s) URIs (FFmpeg fetches).")
    max_file_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1,
        description="File size cap (1 GiB: a 20-minute 96 kHz/24-bit stereo WAV is ~700 MB; "
        "only the windows are read, so memory does not grow with it).")


class DecodeSection(Section):
    """How audio files become mono float32 at the model's rate."""

    decoder: DecoderName = Field(
        default="libav",
        description="libav: long-lived decoder processes seek and decode the whole-track "
        "windows in-process (less CPU per clip; windows close to FFmpeg's, same tags); ffmpeg: "
        "the FFmpeg command line seeks them, several files per process (decode_grouped). "
        "http(s) inputs always go through FFmpeg.")
    workers: int = setting(
        default_factory=lambda: os.cpu_count() or 1, public="decode_workers", ge=1,
        description="Parallel decoders (default: the CPU count).")
    grouped: bool = setting(
        True, public="decode_grouped",
        description="Decode a multi-message batch in chunks, several files per FFmpeg probe "
        "(and, with ffmpeg, per decode process) (false: one file per task, the benchmark's "
        "'before' variant).")
    timeout_s: float = setting(60.0, public="decode_timeout_s", gt=0,
                               description="Per-file decode timeout.")
    max_track_s: float = setting(
        4 * 3600.0, public="max_track_seconds", gt=0,
        description="Most seconds read to measure a track whose header has no or an estimated "
        "duration (windows are placed within them).")


class WindowSection(Section):
    """Where a track's model windows go and how their probabilities become its tags."""

    public_prefix: ClassVar[str] = "window_"

    every_s: float = setting(
        30.0, public="window_every", ge=0,
        description="Coverage of long tracks: one window per this many seconds, spread over "
        "the whole track (a 20-minute track: 40 windows); a track up to 10 clips long is "
        "analysed end to end whatever it says. 0: windows back to back (up to max_windows).")
    max_windows: int = setting(
        64, public="max_windows", ge=1, le=256,
        description="Most clip windows per track (caps --window-every on very long tracks).")
    skip_start_s: float = Field(
        default=10.0, ge=0,
        description="Seconds of intro no window starts in (less on tracks too short to spare it).")
    skip_end_s: float = Field(default=10.0, ge=0, description="Seconds of outro no window "
                              "covers (likewise).")
    aggregation: Aggregation = Field(
        default="mean",
        description="Window probabilities → track tags: mean, or trimmed (per label, without the "
        "highest and lowest quarter of windows). Silent windows never count.")
