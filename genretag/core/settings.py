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


def user_state_dir() -> Path:
    """The per-user state folder: ``$XDG_STATE_HOME/genretag`` (default ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "genretag"


def _project_root(start: Path) -> Path | None:
    """The genretag checkout holding ``start`` (a folder with ``.genretag/`` or the sources)."""
    for folder in (start, *start.parents):
        if (folder / ".genretag").is_dir() or (folder / "genretag" / "cli" / "main.py").is_file():
            return folder
    return None


def state_dir() -> Path:
    """Where the local stack keeps its pid files, logs and connection file, wherever we run.

    ``GENRETAG_STATE_DIR`` if set; else the checkout's ``.genretag/`` when the current folder
    is inside it and a stack runs there; else the stack this user started last (its folder is
    remembered in the per-user state dir); else the checkout's ``.genretag/``, or the per-user
    folder outside any checkout.
    """
    explicit = os.environ.get(f"{ENV_PREFIX}STATE_DIR")
    if explicit:
        return Path(explicit).resolve()
    root = _project_root(Path.cwd().resolve())
    local = root / ".genretag" if root else None
    if local is not None and (local / "stack.json").exists():
        return local
    pointer = user_state_dir() / "current"
    if pointer.is_file():
        remembered = Path(pointer.read_text(encoding="utf-8").strip())
        if (remembered / "stack.json").exists():
            return remembered
    return local or user_state_dir()


def remember_stack(folder: Path) -> None:
    """Record ``folder`` as this user's running stack, so commands find it from any folder."""
    pointer = user_state_dir() / "current"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(str(Path(folder).resolve()) + "\n", encoding="utf-8")


def forget_stack(folder: Path) -> None:
    """Drop the per-user record of ``folder``'s stack (after ``stack down``)."""
    pointer = user_state_dir() / "current"
    if pointer.is_file() and pointer.read_text(encoding="utf-8").strip() == str(
        Path(folder).resolve()
    ):
        pointer.unlink(missing_ok=True)


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
    max_message_bytes: int = Field(
        default=64 * 1024, ge=256,
        description="Largest track message; sizes topic limits and consumer fetches too.",
    )

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
