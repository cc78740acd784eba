"""Settings of `genretag produce`: where track references go and how (env ``GENRETAG_*``, flags)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from genretag.core.audio.formats import AUDIO_EXTENSIONS
from genretag.core.settings import (
    AccessSection, CsvList, KafkaSection, RedisSection, Section, Settings,
)


class ProducerSection(Section):
    """How the catalog is read and sent (public names ``producer_*``)."""

    public_prefix: ClassVar[str] = "producer_"

    audio_extensions: CsvList = Field(
        default=list(AUDIO_EXTENSIONS),
        description="File extensions picked up from a directory source.")
    linger_ms: int = Field(
        default=20, ge=0, description="How long the client waits to fill a batch before sending.")
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Message compression (gzip needs no extra library).")
    ack_timeout_s: float = Field(
        default=60.0, gt=0,
        description="At the end, how long to wait for the broker to acknowledge what was sent.")


class ProducerSettings(Settings):
    """`genretag produce`: where to send track references and how (Redis only for --backfill).

    ``access.allowed_roots`` is the worker's setting: tracks outside them are warned about (or
    refused with --strict); ``kafka.max_message_bytes`` rejects rows the worker would refuse.
    """

    kafka: KafkaSection = Field(default_factory=KafkaSection)
    redis: RedisSection = Field(default_factory=RedisSection)
    producer: ProducerSection = Field(default_factory=ProducerSection)
    access: AccessSection = Field(default_factory=AccessSection)
