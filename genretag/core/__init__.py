"""The shared library layer: what producer, worker and training all use, and nothing else.

Settings bases (:mod:`genretag.core.settings`), Kafka/Redis clients and the tag store, logging, the audio
path (:mod:`genretag.core.audio`: URI vetting → the libav or FFmpeg decoder → windows), the
model artifact, the error taxonomy and the FMA format. It imports only :mod:`genretag.schemas`; services import it, never the reverse.
"""
