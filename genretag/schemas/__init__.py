"""Wire contracts of genretag: every Kafka message (tracks, dead letters, tag events), Redis
tag record and model manifest.

Each model is frozen, forbids unknown fields, and carries ``schema_version`` so a reader can
reject data written by a newer, incompatible writer with a clear message instead of guessing.
"""

from genretag.schemas._base import describe_errors
from genretag.schemas.events import TagChange, TagEvent, tag_event_id
from genretag.schemas.manifest import (
    TAG_KINDS, DecoderInfo, EmbeddingSpec, FrontendParams, LogMelParams, ModelManifest, TagKind,
)
from genretag.schemas.messages import SCHEMA_VERSION, DeadLetter, ReasonCode, TrackRef
from genretag.schemas.tags import TagRecord, Timeline

__all__ = [
    "SCHEMA_VERSION",
    "TAG_KINDS",
    "DeadLetter",
    "DecoderInfo",
    "EmbeddingSpec",
    "FrontendParams",
    "LogMelParams",
    "ModelManifest",
    "ReasonCode",
    "TagChange",
    "TagEvent",
    "TagKind",
    "TagRecord",
    "Timeline",
    "TrackRef",
    "describe_errors",
    "tag_event_id",
]
