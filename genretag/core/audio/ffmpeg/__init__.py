"""The FFmpeg command-line backend: one locked-down FFmpeg process per file or per group of files.

:mod:`.command` builds the only command lines it runs (protocol and demuxer whitelists, inputs
read from descriptors vetted in Python), :mod:`.decode` runs them, :mod:`.probe` reads headers,
:mod:`.seek` decodes a group's windows, and :class:`.decoder.FFmpegDecoder` is the backend's
:class:`genretag.core.audio.protocol.Decoder`. It also reads every http(s) source, for either
backend. Reached through :func:`genretag.core.audio.decoders.open_decoder`.
"""
