"""Settings of `genretag produce`: where track references go and how (env ``GENRETAG_*``, flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from genretag.core.audio.formats import AUDIO_EXTENSIONS
from genretag.core.settings import CsvList, KafkaSettings, RedisSettings


class ProducerSettings(KafkaSettings, RedisSettings):
    """`genretag produce`: where to send track references and how (Redis only for --backfill)."""

    producer_audio_extensions: CsvList = Field(
        default=list(AUDIO_EXTENSIONS),
        description="File extensions picked up from a directory source.",
    )
    producer_linger_ms: int = Field(
        default=20, ge=0, description="How long the client waits to fill a batch before sending."
    )
    producer_compression: Literal["gzip", "none"] = Field(
        default="gzip", description="Message compression (gzip needs no extra library)."
    )
    producer_ack_timeout_s: float = Field(
        default=60.0, gt=0,
        description="At the end, how long to wait for the broker to acknowledge what was sent.",
    )
    allowed_roots: CsvList = Field(
        default_factory=lambda: [str(Path.cwd())],
        description="The worker's allowed roots (same setting): tracks outside them are "
        "warned about, or refused with --strict.",
    )
    max_message_bytes: int = Field(
        default=64 * 1024, ge=256,
        description="Rows whose message would exceed this are rejected (the worker's cap).",
    )
