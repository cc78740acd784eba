"""Process settings: pydantic-settings models read from ``GENRETAG_*`` env vars, env files, flags.

Precedence (highest first): CLI flags, environment, ``.env``, the local stack file written by
``genretag stack up``. One settings object per process, built once by the CLI and passed down.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "GENRETAG_"


def state_dir() -> Path:
    """Where the local stack keeps its pid files, logs and connection file."""
    return Path(os.environ.get(f"{ENV_PREFIX}STATE_DIR", ".genretag")).resolve()


def stack_env_file() -> Path:
    return state_dir() / "stack.env"


def _split_csv(value: Any) -> Any:
    """``a,b`` or a JSON array ``["a","b"]`` → list of strings (env vars and flags)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True,
        hide_input_in_errors=True,  # a bad setting must not echo a password into logs
    )

    def masked(self) -> dict[str, Any]:
        """Settings as a dict for logs, secrets masked (SecretStr prints as '**********')."""
        return {k: (str(v) if isinstance(v, SecretStr) else v) for k, v in self}


class KafkaSettings(_Base):
    """Broker connection and topics; the same for producer, worker and admin commands."""

    kafka_bootstrap_servers: CsvList = Field(
        default=["127.0.0.1:9092"], description="Comma-separated host:port list of brokers."
    )
    kafka_topic: str = Field(default="genretag.tracks", description="Topic of TrackRef messages.")
    kafka_dlq_topic: str = Field(
        default="genretag.tracks.dlq", description="Dead-letter topic for messages that failed."
    )
    kafka_partitions: int = Field(default=4, ge=1, description="Partitions when creating topics.")
    kafka_replication_factor: int = Field(default=1, ge=1, description="Replication of new topics.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: str | None = Field(default=None, description="CA bundle for SSL.")
    kafka_ssl_certfile: str | None = Field(default=None, description="Client certificate (mTLS).")
    kafka_ssl_keyfile: str | None = Field(default=None, description="Client key (mTLS).")
    kafka_request_timeout_ms: int = Field(default=30000, ge=1000)

    def kafka_common(self) -> dict[str, Any]:
        """kafka-python keyword arguments shared by producer, consumer and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap_servers": list(self.kafka_bootstrap_servers),
            "security_protocol": self.kafka_security_protocol,
            "request_timeout_ms": self.kafka_request_timeout_ms,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            conf["sasl_mechanism"] = self.kafka_sasl_mechanism or "PLAIN"
            conf["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                conf["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_security_protocol.endswith("SSL"):
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, f"kafka_{key}")
                if value:
                    conf[key] = value
        return conf

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("SASL protocols need kafka_sasl_username and kafka_sasl_password")
        return self


class RedisSettings(_Base):
    """Redis connection and key layout prefix."""

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis:// or rediss:// (TLS) URL, without credentials.",
    )
    redis_username: str | None = Field(default=None, description="ACL user name.")
    redis_password: SecretStr | None = Field(default=None, description="Password (or ACL password).")
    redis_ssl_ca_certs: str | None = Field(default=None, description="CA bundle for rediss://.")
    redis_key_prefix: str = Field(default="genretag:", description="Prefix of every key we write.")
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _no_credentials_in_url(self) -> RedisSettings:
        if "@" in self.redis_url.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError(
                "redis_url must not embed credentials; set redis_username/redis_password"
            )
        return self


class ProducerSettings(KafkaSettings, RedisSettings):
    """`genretag produce`: where to send track references and how (Redis only for --backfill)."""

    producer_audio_extensions: CsvList = Field(
        default=[".mp3", ".wav", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".aiff", ".au"],
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
    max_message_bytes: int = Field(
        default=64 * 1024, ge=256,
        description="Rows whose message would exceed this are rejected (the worker's cap).",
    )


class WorkerSettings(KafkaSettings, RedisSettings):
    """`genretag work`: consumer group member that turns track references into tags."""

    model_path: Path = Field(default=Path("models/demo.pt"), description="TorchScript artifact.")
    group_id: str = Field(default="genretag-worker", description="Kafka consumer group.")
    worker_id: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="This member's name in logs, dead letters and metrics.",
    )
    batch_size: int = Field(default=16, ge=1, description="Max tracks per inference batch.")
    batch_max_wait_ms: int = Field(
        default=200, ge=0,
        description="Max wait after a batch's first message for more to arrive (latency bound).",
    )
    batch_close_when_idle: bool = Field(
        default=True,
        description="Close a partial batch before the max wait when nothing is being decoded or "
        "inferred and every partition is read to its end (light load: no latency added).",
    )
    pipeline_depth: int = Field(
        default=2, ge=1, le=8,
        description="Micro-batches in flight: 1 = sequential; 2 = decode the next batch while "
        "the model runs on the current one.",
    )
    decode_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Parallel FFmpeg decoders."
    )
    decode_timeout_s: float = Field(default=60.0, gt=0, description="Per-file FFmpeg timeout.")
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="File size cap.")
    max_message_bytes: int = Field(default=64 * 1024, ge=256, description="Message size cap.")
    max_windows: int = Field(
        default=4, ge=1, description="Clip windows averaged per track (long tracks)."
    )
    inference_max_windows: int = Field(
        default=0, ge=0,
        description="Max windows per model call (0 = by device: 8 on CPU, where small calls are "
        "~2x faster, 64 on CUDA); bigger batches run in chunks.",
    )
    allowed_roots: CsvList = Field(
        default_factory=lambda: [str(Path.cwd())],
        description="Local paths must resolve (symlinks too) under one of these directories.",
    )
    allow_http: bool = Field(default=False, description="Allow http(s) URIs (FFmpeg fetches).")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Inference device.")
    half_precision: bool = Field(
        default=False, description="On CUDA, run the model under float16 autocast (ignored on CPU)."
    )
    torch_threads: int = Field(default=0, ge=0, description="torch intra-op threads (0 = auto).")
    optimize_model: bool = Field(
        default=True,
        description="On CPU, freeze the model and apply torch.jit.optimize_for_inference "
        "(batch-norm folded into convolutions, oneDNN): 1.1-1.4x faster, same outputs.",
    )
    session_timeout_ms: int = Field(
        default=6000, ge=1000, description="Group session timeout (missed heartbeats → evicted)."
    )
    heartbeat_interval_ms: int = Field(
        default=1000, ge=100, description="Heartbeat period (background thread)."
    )
    max_poll_interval_ms: int = Field(
        default=300000, ge=1000,
        description="Kafka's bound between polls; the worker keeps polling (partitions paused) "
        "while a batch runs or a write is retried, so a slow batch never exceeds it.",
    )
    idle_exit_s: float = Field(
        default=5.0, gt=0, description="With --until-idle: exit after this long without messages."
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="Port of /metrics, /healthz and /readyz (0 = off; replica i uses port + i).",
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address the metrics server binds.")
    health_max_loop_age_s: float = Field(
        default=30.0, gt=0,
        description="/healthz fails when the consume loop has not ticked for this long.",
    )
    retry_initial_backoff_s: float = Field(
        default=0.5, gt=0, description="First wait before retrying a transient failure."
    )
    retry_max_backoff_s: float = Field(
        default=10.0, gt=0, description="Cap of the exponential backoff between retries."
    )

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> WorkerSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms should be at most a third of session_timeout_ms")
        return self


class ReaderSettings(RedisSettings, KafkaSettings):
    """Read-side commands (`tags`, `stats`, `dlq`); Kafka only for `dlq replay`."""

    dlq_replay_ack_timeout_s: float = Field(
        default=60.0, gt=0,
        description="`dlq replay`: how long to wait for the broker to acknowledge a chunk.",
    )


S = TypeVar("S", bound=_Base)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from flags (``overrides``, None ignored), env, ``.env`` and the stack file."""
    values = {k: v for k, v in overrides.items() if v is not None}
    return cls(_env_file=(stack_env_file(), ".env"), **values)  # type: ignore[call-arg]
