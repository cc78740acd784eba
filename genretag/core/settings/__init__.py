"""Settings: sections (:mod:`~genretag.core.settings.base`) composed per process.

The shared sections live here (broker, Redis, the audio path); each service composes its own
settings class from them and its own sections (``genretag.worker.settings``,
``genretag.producer.settings``). :class:`ReaderSettings` serves the read-side commands.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from genretag.core.settings.audio import (
    AccessSection, Aggregation, DecodeSection, DecoderName, WindowSection,
)
from genretag.core.settings.base import (
    ENV_PREFIX, CsvList, ExpandedPath, ExpandedPathText, PathList, S, Section, Settings,
    expand_path, load_settings, setting,
)
from genretag.core.settings.connections import KafkaSection, RedisSection
from genretag.core.settings.index import IndexSection
from genretag.core.settings.statedir import (
    MODELS_DIR_ENV, STATE_DIR_ENV, StateDir, announce, forget_stack, remember_stack,
    resolve_state_dir, stack_env_file, state_dir, user_models_dir, user_state_dir,
)


class ReplaySection(Section):
    """`genretag dlq replay`."""

    public_prefix: ClassVar[str] = "dlq_replay_"

    ack_timeout_s: float = Field(
        default=60.0, gt=0,
        description="`dlq replay`: how long to wait for the broker to acknowledge a chunk.")


class RedisSettings(Settings):
    """Commands that only read Redis (`tags`, `stats`, `dlq list|purge`)."""

    redis: RedisSection = Field(default_factory=RedisSection)


class SimilaritySettings(Settings):
    """`genretag similar` and `genretag index`: the tag store and the vector index."""

    redis: RedisSection = Field(default_factory=RedisSection)
    index: IndexSection = Field(default_factory=IndexSection)


class ReaderSettings(Settings):
    """Read-side commands (`tags`, `stats`, `dlq`); Kafka only for `dlq replay`."""

    redis: RedisSection = Field(default_factory=RedisSection)
    kafka: KafkaSection = Field(default_factory=KafkaSection)
    replay: ReplaySection = Field(default_factory=ReplaySection)


__all__ = [
    "ENV_PREFIX", "MODELS_DIR_ENV", "STATE_DIR_ENV", "AccessSection", "Aggregation", "CsvList",
    "DecodeSection", "DecoderName", "ExpandedPath", "ExpandedPathText", "IndexSection",
    "KafkaSection", "PathList", "ReaderSettings", "RedisSection", "RedisSettings", "ReplaySection",
    "S", "Section", "Settings", "SimilaritySettings", "StateDir", "WindowSection", "announce",
    "expand_path", "forget_stack", "load_settings", "remember_stack", "resolve_state_dir",
    "setting", "stack_env_file", "state_dir", "user_models_dir", "user_state_dir",
]
