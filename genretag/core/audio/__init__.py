"""The audio path shared by serving and training: ``uri`` (vet a reference) → a
:class:`~genretag.core.audio.protocol.Decoder` from
:func:`~genretag.core.audio.decoders.open_decoder` (the libav decoder processes, :mod:`.libav`,
or the FFmpeg command line, :mod:`.ffmpeg`: mono float32 at the model's rate, a track's windows
placed by :mod:`.placement`) → ``windows`` / ``aggregate`` (model inputs, whole-track
judgement). Layout and choices: ``docs/audio-backends.md``."""
