"""Settings of `genretag work`: one consumer-group member, in sections (env ``GENRETAG_*``, flags).

Each part of the worker receives its own section: the consumer its ``consumer``, the decoders
``access`` and ``decode``, the window placement ``windows``, the model loader ``model``, the
poller ``batching``, the probes ``health``, the retry policy ``retry``, the outputs
``outputs`` and the events sink ``events``. Public names (env and flags) are those of
:mod:`genretag.core.settings.base`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from genretag.core.settings import (
    AccessSection, CsvList, DecodeSection, ExpandedPath, KafkaSection, PathList, RedisSection,
    Section, Settings, WindowSection, setting,
)


class ConsumerSection(Section):
    """Group membership: which group, and the timers that keep us in it."""

    group_id: str = Field(default="genretag-worker", description="Kafka consumer group.")
    session_timeout_ms: int = Field(
        default=6000, ge=1000, description="Group session timeout (missed heartbeats → evicted).")
    heartbeat_interval_ms: int = Field(default=1000, ge=100,
                                       description="Heartbeat period (background thread).")
    max_poll_interval_ms: int = Field(
        default=300000, ge=1000,
        description="Kafka's bound between polls; the worker keeps polling (partitions paused) "
        "while a batch runs or a write is retried, so a slow batch never exceeds it.")

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> ConsumerSection:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms should be at most a third of session_timeout_ms")
        return self


class ModelSection(Section):
    """Which artifact (or set of artifacts), on which device, called how."""

    path: ExpandedPath = setting("models/demo.pt", public="model_path", flag="model",
                                 description="The model artifact file (TorchScript).")
    paths: PathList = setting(
        [], public="models",
        description="A model set: several artifacts served by one worker (a,b; overrides "
        "--model). Each track is decoded once per sample rate/window length and a backbone "
        "shared by schema-2 models runs once; the first model's tags go where a one-model "
        "worker's do, each other's under its name (`genretag tags ID` shows all).")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Inference device.")
    half_precision: bool = Field(
        default=False, description="On CUDA, run the model under float16 autocast (ignored on CPU).")
    torch_threads: int = Field(default=0, ge=0, description="torch intra-op threads (0 = auto).")
    optimize: bool = setting(
        True, public="optimize_model",
        description="On CPU, freeze the model and apply torch.jit.optimize_for_inference "
        "(batch-norm folded into convolutions, oneDNN): 1.1-1.4x faster, same outputs.")
    max_windows_per_call: int = setting(
        0, public="inference_max_windows", ge=0,
        description="Max windows per model call (0 = measured at load on CPU: the largest size "
        "within 5% of the best windows/s; 64 on CUDA); bigger batches run in chunks.")

    @property
    def artifacts(self) -> list[Path]:
        """The artifacts to serve, first model first: ``paths``, else ``path`` alone."""
        return [Path(p) for p in self.paths] or [self.path]


class BatchingSection(Section):
    """How polled messages become micro-batches, and how many are in flight."""

    public_prefix: ClassVar[str] = "batch_"

    size: int = Field(
        default=16, ge=1,
        description="Max messages per micro-batch (model calls are sized by inference_max_windows).")
    max_wait_ms: int = Field(
        default=200, ge=0,
        description="Max wait after a batch's first message for more to arrive (latency bound).")
    close_when_idle: bool = Field(
        default=True,
        description="Close a partial batch before the max wait when nothing is being decoded or "
        "inferred and every partition is read to its end (light load: no latency added).")
    pipeline_depth: int = setting(
        2, public="pipeline_depth", ge=1, le=8,
        description="Micro-batches in flight: 1 = sequential; 2 = decode the next batch while "
        "the model runs on the current one.")


class HealthSection(Section):
    """Probes and metrics, start-up and idle bounds."""

    metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="Port of /metrics, /healthz and /readyz (0 = off; replica i uses port + i).")
    metrics_host: str = Field(default="0.0.0.0", description="Address the metrics server binds.")
    max_loop_age_s: float = setting(
        30.0, public="health_max_loop_age_s", gt=0,
        description="/healthz fails when the consume loop has not ticked for this long.")
    startup_timeout_s: float = Field(
        default=120.0, gt=0,
        description="With --until-idle: give up (one line, exit 3) if Redis or the broker do "
        "not answer (or refuse) within this long at startup; a service keeps retrying.")
    idle_exit_s: float = Field(
        default=5.0, gt=0, description="With --until-idle: exit after this long without messages.")


class RetrySection(Section):
    """Backoff between retries of a transient failure (the policy itself is data in
    :mod:`genretag.worker.retry`)."""

    public_prefix: ClassVar[str] = "retry_"

    initial_backoff_s: float = Field(default=0.5, gt=0,
                                     description="First wait before retrying a transient failure.")
    max_backoff_s: float = Field(default=10.0, gt=0,
                                 description="Cap of the exponential backoff between retries.")


class OutputsSection(Section):
    """Where a settled batch goes, in order, before its offsets are committed."""

    sinks: CsvList = setting(
        ["tags"], public="sinks",
        description="Outputs of a settled batch, in order (dead letters always go first, the "
        "commit last); 'tags' (the Redis tag store) must come first; 'embeddings' stores each "
        "track's vector for `genretag similar` (a schema-2 model); 'events' adds tag events on "
        "kafka_events_topic.")

    @field_validator("sinks")
    @classmethod
    def _tags_first(cls, value: list[str]) -> list[str]:
        if not value or value[0] != "tags" or len(set(value)) != len(value):
            raise ValueError("sinks must start with 'tags' and name each sink once")
        return value


class EventsSection(Section):
    """The events sink (``GENRETAG_SINKS=tags,events``): tag events on ``kafka_events_topic``."""

    public_prefix: ClassVar[str] = "events_"

    mode: Literal["changed", "all"] = setting(
        "changed", public="events",
        description="With the events sink: 'changed' publishes an event when a track's tags "
        "are new or changed (model version, labels, primary genre); 'all' every time a track "
        "is tagged (a re-tag with the same content repeats its event id).")
    top_k: int = Field(default=5, ge=0, le=100,
                       description="Most probable labels (with p) carried by each event.")


class WorkerSettings(Settings):
    """`genretag work`: consumer group member that turns track references into tags."""

    worker_id: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="This member's name in logs, dead letters and metrics.")
    kafka: KafkaSection = Field(default_factory=KafkaSection)
    redis: RedisSection = Field(default_factory=RedisSection)
    consumer: ConsumerSection = Field(default_factory=ConsumerSection)
    access: AccessSection = Field(default_factory=AccessSection)
    decode: DecodeSection = Field(default_factory=DecodeSection)
    windows: WindowSection = Field(default_factory=WindowSection)
    model: ModelSection = Field(default_factory=ModelSection)
    batching: BatchingSection = Field(default_factory=BatchingSection)
    health: HealthSection = Field(default_factory=HealthSection)
    retry: RetrySection = Field(default_factory=RetrySection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    events: EventsSection = Field(default_factory=EventsSection)
