"""Files that are valid but once broke the libav decoder, and float audio that is not finite:
generated here (numpy, FFmpeg), for the faults suite and the decoder tests alike."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np

#: Seconds of each half of the joined and chained files (their true duration is twice this).
HALF_S = 4.0
#: How far a stored duration may be from the true one (a joined mp3's second Info frame and
#: both parts' encoder padding count as audio: 8.125 s for 8 s, with either decoder).
DURATION_SLACK_S = 0.25


def float_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A mono 32-bit float WAV of ``samples`` exactly (NaN and infinities included)."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 3, 1, rate, rate * 4, 4, 32)  # format 3: IEEE float
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + fmt +
                     b"data" + struct.pack("<I", len(data)) + data)
    return path


def square_arpeggio(rate: int, seconds: float) -> np.ndarray:
    """A clean square-wave arpeggio (chiptune-like), 0.3 full scale."""
    t = np.arange(int(rate * seconds)) / rate
    notes = np.array([440.0, 554.4, 659.3, 880.0])[(t * 8).astype(int) % 4]
    return 0.3 * np.sign(np.sin(2 * np.pi * np.cumsum(notes) / rate))


def broken_streams(inside: Path) -> dict[str, Path]:
    """Valid files that once broke the libav decoder, and float audio that is not finite."""
    f: dict[str, Path] = {}
    rate = 22050
    f["nan_wav"] = float_wav(inside / "all-nan.wav", np.full(int(1.5 * rate), np.nan), rate)
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        wave = square_arpeggio(rate, 1.5)
        wave[::1000] = value  # one sample in a thousand
        f[f"square_{name}"] = float_wav(inside / f"square-{name}.wav", wave, rate)
    tone = "sine=frequency={}:duration={}:sample_rate={}"
    parts = {}
    for key, freq, srate, channels, ext, codec in (
            ("s44", 330, 44100, 2, "mp3", ("-b:a", "96k")),
            ("m22", 550, 22050, 1, "mp3", ("-b:a", "32k")),
            ("s44o", 330, 44100, 2, "ogg", ("-c:a", "libvorbis", "-q:a", "0")),
            ("m22o", 550, 22050, 1, "ogg", ("-c:a", "libvorbis", "-q:a", "0"))):
        parts[key] = inside / f"part-{key}.{ext}"
        _ffmpeg("-f", "lavfi", "-i", tone.format(freq, HALF_S, srate), "-ac", str(channels),
               *codec, str(parts[key]))
    for name, first, second in (("joined_stereo_mono", "s44", "m22"),
                                ("joined_mono_stereo", "m22", "s44"),
                                ("chained_ogg", "s44o", "m22o")):
        f[name] = inside / f"{name.replace('_', '-')}.{parts[first].suffix[1:]}"
        f[name].write_bytes(parts[first].read_bytes() + parts[second].read_bytes())
    pcm = inside / "pcm.wav"
    _ffmpeg("-f", "lavfi", "-i", tone.format(440, 1, rate), "-c:a", "pcm_s16le", str(pcm))
    raw = bytearray(pcm.read_bytes())  # 44 KB, and the header says 0 channels
    raw[22:24], raw[28:32], raw[32:34] = b"\0\0", b"\0\0\0\0", b"\0\0"
    f["zero_channels"] = inside / "zero-channels.wav"
    f["zero_channels"].write_bytes(bytes(raw))
    return f


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True, timeout=120)
