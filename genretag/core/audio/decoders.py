"""Pick the decoder by name, for training and serving alike, and say which one it is.

``libav`` (default): long-lived decoder processes running libav in-process
(:mod:`genretag.core.audio.decoder_pool`), less CPU per clip; they also seek whole tracks' windows (they
are a :class:`genretag.core.audio.seek.WindowSeeker`). ``ffmpeg``: the FFmpeg command line
(:func:`genretag.core.audio.decode.decode_audio`; whole tracks' windows with ``-ss``). Both give the same samples for whole mp3/wav/flac
decodes and the same reason codes; after a seek the samples are close, not bit-identical. The
manifest records which one trained a model (:class:`DecoderInfo`) and :func:`mismatch` words
the warning a worker logs when it serves with another.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Protocol

import numpy as np

from genretag.core.audio.decode import DecodeOptions, decode_audio
from genretag.core.audio.uri import AudioSource
from genretag.core.settings import DecodeSection, DecoderName
from genretag.schemas import DecoderInfo

#: The measured winner (issue 17): 1.7× the FFmpeg CLI worker's clips/s on the same cores; the
#: ``decode`` section's default, for training and serving alike.
DEFAULT_DECODER: DecoderName = DecodeSection.model_fields["decoder"].default


class Decoder(Protocol):
    """What training and the worker call: one file in, mono float32 out (or PermanentError)."""

    def decode_audio(self, source: AudioSource, opts: DecodeOptions,
                     track_id: str | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


class CliDecoder:
    """The FFmpeg command line, one process per file (the fallback and the reference)."""

    def decode_audio(self, source: AudioSource, opts: DecodeOptions,
                     track_id: str | None = None) -> np.ndarray:
        return decode_audio(source, opts, track_id)

    def close(self) -> None:
        """Nothing to stop."""


def open_decoder(name: DecoderName, processes: int,
                 max_file_bytes: int | None = None) -> Decoder:
    """A ready decoder; ``processes`` is how many files may decode at once (libav children)."""
    if name == "ffmpeg":
        return CliDecoder()
    if name == "libav":
        from genretag.core.audio.decoder_pool import DecoderPool

        return DecoderPool(processes, max_file_bytes=max_file_bytes)
    raise ValueError(f"unknown decoder {name!r}: use libav or ffmpeg")


@functools.cache
def decoder_info(name: DecoderName) -> DecoderInfo:
    """The decoder and its library versions, as a manifest records them."""
    if name == "libav":
        from genretag.core.audio.libav import library_versions

        return DecoderInfo(name="libav", versions=library_versions())
    try:
        first = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                               timeout=30).stdout.splitlines()[:1]
    except (OSError, subprocess.TimeoutExpired):
        first = []
    version = first[0].split()[2] if first and len(first[0].split()) > 2 else "unknown"
    return DecoderInfo(name="ffmpeg", versions={"ffmpeg": version})


def mismatch(trained: DecoderInfo | None, serving: DecoderInfo) -> str | None:
    """One line saying how the serving decoder differs from the model's, or None if it does not.

    An artifact that records no decoder (``trained`` None: a pretrained port such as musicnn,
    whose own training decoded with librosa, or a genretag artifact older than the record) makes
    no claim to compare against: no warning. For those older genretag artifacts (FFmpeg command
    line) it would only be noise: libav's whole-file samples are bit-identical to it for mp3,
    wav and flac.
    """
    if trained is None:
        return None
    if trained.name != serving.name:
        return (f"the model was trained on audio decoded by {trained.name}, this worker decodes "
                f"with {serving.name}: samples may differ slightly")
    changed = {k: (v, serving.versions.get(k)) for k, v in trained.versions.items()
               if serving.versions.get(k) != v}
    if changed:
        return "decoder library versions differ from the model's: " + ", ".join(
            f"{k} {a} (model) vs {b} (here)" for k, (a, b) in sorted(changed.items()))
    return None
