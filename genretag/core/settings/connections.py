"""The broker and Redis sections, the same for every process that connects to them."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from genretag.core.settings.base import CsvList, ExpandedPathText, Section, setting


class KafkaSection(Section):
    """Broker connection and topics (public names ``kafka_*``)."""

    public_prefix: ClassVar[str] = "kafka_"

    bootstrap_servers: CsvList = Field(
        default=["127.0.0.1:9092"], description="Comma-separated host:port list of brokers.")
    topic: str = Field(default="genretag.tracks", description="Topic of TrackRef messages.")
    dlq_topic: str = Field(default="genretag.tracks.dlq",
                           description="Dead-letter topic for messages that failed.")
    partitions: int = Field(default=4, ge=1, description="Partitions when creating topics.")
    replication_factor: int = Field(default=1, ge=1, description="Replication of new topics.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when the protocol is SASL_* (PLAIN if unset).")
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    ssl_cafile: ExpandedPathText | None = Field(default=None, description="CA bundle for SSL.")
    ssl_certfile: ExpandedPathText | None = Field(default=None,
                                                  description="Client certificate (mTLS).")
    ssl_keyfile: ExpandedPathText | None = Field(default=None, description="Client key (mTLS).")
    request_timeout_ms: int = Field(default=30000, ge=1000,
                                    description="How long a broker request may take.")
    max_message_bytes: int = setting(
        64 * 1024, public="max_message_bytes", ge=256,
        description="Largest track message; sizes topic limits and consumer fetches too.")
    max_batch_bytes: int = Field(
        default=16 * 1024 * 1024, ge=64 * 1024,
        description="Most bytes one record batch may inflate to when the consumer decompresses "
        "it (checked while inflating); a bigger or unreadable batch becomes one dead letter "
        "naming its offsets, and the offset moves on.")

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments shared by producer, consumer and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol.startswith("SASL"):
            conf["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            conf["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                conf["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol.endswith("SSL"):
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, key)
                if value:
                    conf[key] = value
        return conf

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSection:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError("SASL protocols need kafka_sasl_username and kafka_sasl_password")
        return self


class RedisSection(Section):
    """Redis connection and key layout prefix (public names ``redis_*``)."""

    public_prefix: ClassVar[str] = "redis_"

    url: str = Field(default="redis://127.0.0.1:6379/0",
                     description="redis:// or rediss:// (TLS) URL, without credentials.")
    username: str | None = Field(default=None, description="ACL user name.")
    password: SecretStr | None = Field(default=None, description="Password (or ACL password).")
    ssl_ca_certs: ExpandedPathText | None = Field(default=None,
                                                  description="CA bundle for rediss://.")
    key_prefix: str = Field(default="genretag:", description="Prefix of every key we write.")
    socket_timeout_s: float = Field(default=5.0, gt=0,
                                    description="How long one Redis command may take.")
    allow_eviction: bool = Field(
        default=False,
        description="Run against a Redis whose maxmemory-policy may evict keys (allkeys-*), "
        "which the worker otherwise refuses at start: committed tags could vanish.")

    @model_validator(mode="after")
    def _no_credentials_in_url(self) -> RedisSection:
        if "@" in self.url.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError(
                "redis_url must not embed credentials; set redis_username/redis_password")
        return self
