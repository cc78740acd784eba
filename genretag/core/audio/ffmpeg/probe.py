"""How long a track is, learnt cheaply before any window is decoded.

:func:`probe_durations` asks one FFmpeg process for the container durations of a whole group
of files (FFmpeg prints each input's header and stops: nothing is decoded), so probing costs
one process start per group, whatever the tracks' lengths. Like the decoder, FFmpeg reads only
descriptors opened and vetted in Python (:func:`genretag.core.audio.uri.open_vetted`). A header
can lie or be missing (a VBR mp3 without a Xing header has its duration *estimated from the
bitrate*; raw streams have none): :func:`measure_duration` then reads the packets without
decoding them (``-c copy`` to the null muxer), which is exact, bounded by ``cap_s`` and the
timeout, and still far cheaper than a decode. Neither raises for a bad file: the window decode
words that error.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from genretag.core.audio.ffmpeg.command import GLOBAL_ARGS, input_args
from genretag.core.audio.uri import AudioSource
from genretag.core.logs import get_logger

log = get_logger(__name__)

_INPUT = re.compile(r"^Input #(\d+), ")
# Exactly two spaces: metadata lines (four spaces, or continuation lines) never match.
_DURATION = re.compile(r"^  Duration: (?:N/A|(\d+):(\d{2}):(\d{2}(?:\.\d+)?))")
_ESTIMATED = "Estimating duration from bitrate"
_OUT_TIME = re.compile(r"^out_time_us=(\d+)\s*$", re.M)
_STDERR_CAP = 1 << 20  # header dumps of a group are a few kB; metadata can not blow memory


@dataclass(frozen=True)
class Probed:
    """What a container header says: ``duration_s`` (None: no duration) and whether FFmpeg
    only estimated it from the bitrate (then it is measured before it is trusted)."""

    duration_s: float | None
    estimated: bool = False
    timed_out: bool = False  # FFmpeg did not answer in time (a stalling remote input)

    @property
    def trusted(self) -> bool:
        return self.duration_s is not None and not self.estimated


UNKNOWN = Probed(None)


def probe_durations(sources: Sequence[AudioSource], timeout_s: float = 30.0,
                    fds: Sequence[int | None] | None = None) -> list[Probed]:
    """Header duration of every source from one FFmpeg process; :data:`UNKNOWN` where none.

    FFmpeg stops at the first input it cannot open, so the rest are probed again in a new
    process (a bad file costs its group one more process start, never a decode).
    """
    fds = list(fds) if fds is not None else [None] * len(sources)
    out: list[Probed] = []
    while len(out) < len(sources):
        rest = range(len(out), len(sources))
        argv = ["ffmpeg", *GLOBAL_ARGS[:-1], "info"]
        for k in rest:
            argv += input_args(sources[k], fds[k])
        found = _run_probe(argv, [fds[k] for k in rest if fds[k] is not None], timeout_s)
        if found is None:  # timed out: no second wait for the rest of the group
            out += [Probed(None, timed_out=True)] * len(rest)
            break
        got = [found.get(j, None) for j in range(len(rest))]
        # Inputs up to the first one FFmpeg could not open are answered; that one is UNKNOWN.
        answered = next((j for j, p in enumerate(got) if p is None), len(got))
        out += [p for p in got[:answered] if p is not None]
        if answered < len(got):
            out.append(UNKNOWN)
    return out


def _run_probe(argv: list[str], pass_fds: list[int], timeout_s: float) -> dict[int, Probed] | None:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout_s, check=False,
                              pass_fds=pass_fds)
    except subprocess.TimeoutExpired:
        log.info("probe.timeout", extra={"inputs": argv.count("-i")})
        return None
    except FileNotFoundError:
        raise RuntimeError("ffmpeg is not installed: run scripts/bootstrap.sh") from None
    return parse_probe(proc.stderr[:_STDERR_CAP].decode("utf-8", "replace"))


def parse_probe(stderr: str) -> dict[int, Probed]:
    """``Input #k`` blocks of FFmpeg's header dump → ``{k: Probed}``.

    A bitrate-estimate warning is printed while input k is opened, i.e. after block k-1.
    """
    found: dict[int, Probed] = {}
    current: int | None = None
    estimated = False
    for line in stderr.splitlines():
        if _ESTIMATED in line:
            estimated = True
            continue
        m = _INPUT.match(line)
        if m:
            current = int(m.group(1))
            found[current] = Probed(None, estimated)
            estimated = False
            continue
        m = _DURATION.match(line)
        if m and current is not None and current in found:
            seconds = None
            if m.group(1) is not None:
                seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
            found[current] = Probed(seconds if seconds and math.isfinite(seconds) else None,
                                    found[current].estimated)
    return found


def measure_duration(source: AudioSource, cap_s: float, timeout_s: float = 30.0,
                     fd: int | None = None) -> float | None:
    """Seconds of audio in ``source``'s first audio stream, read packet by packet (no decode).

    At most ``cap_s`` is read (a file that goes on for hours stops there); None if FFmpeg
    could not read it or found no audio.
    """
    argv = ["ffmpeg", *GLOBAL_ARGS, "-nostats", "-progress", "pipe:1", *input_args(source, fd),
            "-map", "0:a:0", "-c", "copy", "-t", f"{cap_s:.3f}", "-f", "null", "-"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout_s, check=False,
                              pass_fds=() if fd is None else (fd,))
    except subprocess.TimeoutExpired:
        log.info("probe.measure_timeout", extra={"timeout_s": timeout_s})
        return None
    except FileNotFoundError:
        raise RuntimeError("ffmpeg is not installed: run scripts/bootstrap.sh") from None
    times = _OUT_TIME.findall(proc.stdout[-_STDERR_CAP:].decode("ascii", "replace"))
    if proc.returncode != 0 or not times:
        return None
    seconds = int(times[-1]) / 1e6
    return min(seconds, cap_s) if seconds > 0 else None
