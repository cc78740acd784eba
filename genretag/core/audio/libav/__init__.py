"""The libav backend: long-lived decoder processes running libav in-process (PyAV).

:mod:`.decode` and :mod:`.track` run inside the decoder processes (:mod:`.child`) and import
nothing heavy; :mod:`.pool` starts, feeds and replaces them; :class:`.decoder.LibavDecoder` is
the backend's :class:`genretag.core.audio.protocol.Decoder`. This package never imports the
FFmpeg backend (an import-linter contract): the http(s) sources it cannot read are handed to the
decoder :func:`genretag.core.audio.decoders.open_decoder` gives it. Imports nothing itself, so
the decoder processes stay light.
"""
