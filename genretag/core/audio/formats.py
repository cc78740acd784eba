"""Which files count as audio, and how both decoders read them: the one suffix list the
producer's directory scan and the training folder reader share (a suffix is only a cheap first
filter), and the demuxer whitelist and downmix option that the FFmpeg command line
(:mod:`genretag.core.audio.ffmpeg.command`) and the libav decoder processes
(:mod:`genretag.core.audio.libav.decode`) share, so the two give the same samples and refuse the
same files. Free of heavy imports: the decoder processes load it."""

from __future__ import annotations

from collections.abc import Iterable

#: Audio file suffixes picked up from folders (lower-case, with the dot).
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".mp3", ".au", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff",
    ".wma",
)


#: Demuxers either decoder may probe: plain audio containers only (no hls, concat, playlists,
#: images), FFmpeg's short names.
AUDIO_DEMUXERS = ("mp3,wav,w64,flac,ogg,mov,aac,aiff,au,matroska,webm,caf,wv,ape,tta,asf,"
                  "ac3,eac3,dts,amr,mpc,mpc8,dsf")
#: libswresample's ``rematrix_maxval`` for the downmix to mono: 1 makes stereo the channels'
#: mean, as librosa and torchaudio do (FFmpeg's default is (L+R)/√2: 3 dB louder, and above
#: 1.0 on loud masters), and 5.1 its standard matrix normalised; the pretrained musicnn models
#: were trained on mean-downmixed audio.
REMATRIX_MAXVAL = 1.0


def normalise_extensions(extensions: Iterable[str]) -> set[str]:
    """``mp3``/``.MP3`` → ``.mp3``: extensions compare case-insensitively, dot optional."""
    out = set()
    for ext in extensions:
        ext = ext.strip().lower()
        if ext:
            out.add(ext if ext.startswith(".") else f".{ext}")
    return out
