"""FFmpeg decoding to mono float32 at the model's sample rate: the one decoder of the project.

Training and serving both call :func:`decode_audio`, so a model never sees audio decoded
differently from what it was trained on. FFmpeg is built with ffmpeg-python and run as a
subprocess with a protocol whitelist, ``-nostdin``, a timeout and an output length cap.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import ffmpeg
import numpy as np

from schemas import ReasonCode
from worker.errors import PermanentError
from worker.uri import AudioSource

LOCAL_PROTOCOLS = "file,pipe"
HTTP_PROTOCOLS = "file,pipe,http,https,tcp,tls,crypto"


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: rate, length cap and limits. ``max_seconds`` bounds output size."""

    sample_rate: int
    max_seconds: float
    timeout_s: float = 60.0
    offset_seconds: float = 0.0


def ffmpeg_argv(source: AudioSource, opts: DecodeOptions) -> list[str]:
    """The FFmpeg command line for one decode (exposed for logs, tests and benchmarks)."""
    input_kwargs: dict[str, object] = {
        "protocol_whitelist": LOCAL_PROTOCOLS if source.is_local else HTTP_PROTOCOLS,
    }
    if opts.offset_seconds > 0:
        input_kwargs["ss"] = f"{opts.offset_seconds:.3f}"
    # "file:" stops FFmpeg from reading a protocol out of a path such as "concat:a|b".
    target = f"file:{source.target}" if source.is_local else source.target
    stream = ffmpeg.input(target, **input_kwargs).output(
        "pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=opts.sample_rate,
        t=f"{opts.max_seconds:.3f}", map="0:a:0",
    )
    return stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile()


def decode_audio(source: AudioSource, opts: DecodeOptions, track_id: str | None = None) -> np.ndarray:
    """Decode ``source`` to a 1-D float32 array at ``opts.sample_rate`` (mono, ≤ max_seconds).

    Raises :class:`PermanentError` with ``UNDECODABLE`` (FFmpeg failed or produced no audio)
    or ``DECODE_TIMEOUT``.
    """
    argv = ffmpeg_argv(source, opts)
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=opts.timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise PermanentError(
            ReasonCode.DECODE_TIMEOUT, f"FFmpeg did not finish within {opts.timeout_s:g}s",
            track_id=track_id,
        ) from None
    except FileNotFoundError:
        raise RuntimeError("ffmpeg is not installed: run scripts/bootstrap.sh") from None
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    usable = len(proc.stdout) - len(proc.stdout) % 4
    if proc.returncode != 0 and usable == 0:
        raise PermanentError(
            ReasonCode.UNDECODABLE, f"FFmpeg exit {proc.returncode}: {_last_lines(stderr)}",
            track_id=track_id,
        )
    if usable == 0:
        raise PermanentError(
            ReasonCode.UNDECODABLE, f"no audio decoded: {_last_lines(stderr) or 'empty output'}",
            track_id=track_id,
        )
    return np.frombuffer(proc.stdout, dtype="<f4", count=usable // 4)


def _last_lines(text: str, n: int = 3, limit: int = 500) -> str:
    return " | ".join(text.splitlines()[-n:])[-limit:]
