"""The FFmpeg command lines of the project, locked down: nothing else starts FFmpeg to decode.

Every input gets a protocol whitelist (``file`` for a local file, which FFmpeg reads as the
descriptor Python opened and vetted, ``/proc/self/fd/N``; ``http,https,tcp,tls`` for a remote one,
never ``file``), the demuxer whitelist of plain audio formats shared with the libav backend
(:data:`genretag.core.audio.formats.AUDIO_DEMUXERS`: no playlist, concat or hls demuxer can send
FFmpeg to another file), a ``file:`` prefix (a path such as ``concat:a|b`` is never read as a
protocol) and ``-nostdin``. Every output is mono float32 at the model's rate with the shared
downmix, capped in length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ffmpeg

from genretag.core.audio.formats import AUDIO_DEMUXERS, REMATRIX_MAXVAL
from genretag.core.audio.protocol import DecodeOptions
from genretag.core.audio.uri import AudioSource

#: A local input is ``file:/proc/self/fd/N``: FFmpeg reads the descriptor Python opened.
LOCAL_PROTOCOLS = "file"
#: Remote inputs: no ``file`` (a remote playlist must not reach local files), no ``crypto``.
HTTP_PROTOCOLS = "http,https,tcp,tls"
GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "error")


def ffmpeg_input(source: AudioSource, opts: DecodeOptions, fd: int | None = None) -> Any:
    """One locked-down FFmpeg input: protocol and demuxer whitelists, ``file:`` prefix, offset.

    ``fd``: the descriptor :func:`genretag.core.audio.uri.open_vetted` returned (FFmpeg inherits
    it); None only for remote inputs and for showing a command line.
    """
    input_kwargs: dict[str, object] = {
        "protocol_whitelist": LOCAL_PROTOCOLS if source.is_local else HTTP_PROTOCOLS,
        "format_whitelist": AUDIO_DEMUXERS,
    }
    if opts.offset_seconds > 0:
        input_kwargs["ss"] = f"{opts.offset_seconds:.3f}"
    # "file:" stops FFmpeg from reading a protocol out of a path such as "concat:a|b".
    if not source.is_local:
        target = source.target
    elif fd is not None:
        target = f"file:/proc/self/fd/{fd}"
    else:
        target = f"file:{source.target}"
    return ffmpeg.input(target, **input_kwargs)


def output_kwargs(opts: DecodeOptions) -> dict[str, object]:
    """Output options: mono float32 little-endian at the model rate, capped at ``max_seconds``.

    The downmix is the channels' mean (:data:`genretag.core.audio.formats.REMATRIX_MAXVAL`,
    shared with the libav backend).
    """
    return {"format": "f32le", "acodec": "pcm_f32le", "ac": 1, "ar": opts.sample_rate,
            "rematrix_maxval": REMATRIX_MAXVAL, "t": f"{opts.max_seconds:.3f}"}


def ffmpeg_argv(source: AudioSource, opts: DecodeOptions, fd: int | None = None) -> list[str]:
    """The FFmpeg command line for one decode to stdout (exposed for logs, tests and benchmarks)."""
    stream = ffmpeg_input(source, opts, fd).output("pipe:", map="0:a:0", **output_kwargs(opts))
    return stream.global_args(*GLOBAL_ARGS).compile()


def multi_output_argv(inputs: Sequence[tuple[AudioSource, int | None, DecodeOptions]],
                      outputs: Sequence[str]) -> list[str]:
    """One FFmpeg command decoding input i's first audio stream to ``outputs[i]``.

    ``inputs[i]`` is (source, vetted descriptor or None, options: offset and length of that
    input). Several inputs may read one descriptor (each opens ``/proc/self/fd/N`` anew).
    Outputs are not flushed packet by packet (``-flush_packets 1`` cost 25-40 % of a group's
    decode time): after a kill, an output's last few KiB may be missing.
    """
    if len(inputs) != len(outputs) or not inputs:
        raise ValueError("need one output per input, and at least one input")
    streams = [ffmpeg_input(src, opts, fd)["a:0"].output(out, **output_kwargs(opts))
               for (src, fd, opts), out in zip(inputs, outputs, strict=True)]
    return ffmpeg.merge_outputs(*streams).global_args(*GLOBAL_ARGS).compile()


def input_args(source: AudioSource, fd: int | None = None) -> list[str]:
    """The locked-down input arguments for ``source`` alone (protocol and demuxer whitelists;
    ``fd``: the vetted descriptor FFmpeg reads as ``/proc/self/fd/N``), for probes."""
    node = ffmpeg_input(source, DecodeOptions(sample_rate=1, max_seconds=1.0), fd)
    return ffmpeg.get_args(node.output("-"))[:-1]
