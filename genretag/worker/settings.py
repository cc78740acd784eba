"""Settings of `genretag work`: one consumer-group member (env ``GENRETAG_*``, flags, .env)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from genretag.core.audio.decoders import DEFAULT_DECODER, DecoderName
from genretag.core.settings import CsvList, KafkaSettings, RedisSettings


class WorkerSettings(KafkaSettings, RedisSettings):
    """`genretag work`: consumer group member that turns track references into tags."""

    model_path: Path = Field(default=Path("models/demo.pt"), description="TorchScript artifact.")
    group_id: str = Field(default="genretag-worker", description="Kafka consumer group.")
    worker_id: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="This member's name in logs, dead letters and metrics.",
    )
    batch_size: int = Field(
        default=16, ge=1,
        description="Max messages per micro-batch (model calls are sized by inference_max_windows).",
    )
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
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Parallel decoders."
    )
    decoder: DecoderName = Field(
        default=DEFAULT_DECODER,
        description="libav: long-lived decoder processes seek and decode the whole-track "
        "windows in-process (less CPU per clip; windows close to FFmpeg's, same tags); ffmpeg: "
        "the FFmpeg command line seeks them, several files per process (decode_grouped). "
        "http(s) inputs always go through FFmpeg.",
    )
    decode_grouped: bool = Field(
        default=True,
        description="Decode a multi-message batch in chunks, several files per FFmpeg probe "
        "(and, with ffmpeg, per decode process) (false: one file per task, the benchmark's "
        "'before' variant).",
    )
    decode_timeout_s: float = Field(default=60.0, gt=0, description="Per-file FFmpeg timeout.")
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="File size cap.")
    max_message_bytes: int = Field(default=64 * 1024, ge=256, description="Message size cap.")
    max_windows: int = Field(
        default=4, ge=1, le=256,
        description="Most clip windows per track, spread evenly over its whole duration.",
    )
    window_skip_start_s: float = Field(
        default=10.0, ge=0,
        description="Seconds of intro no window starts in (less on tracks too short to spare it).",
    )
    window_skip_end_s: float = Field(
        default=10.0, ge=0, description="Seconds of outro no window covers (likewise)."
    )
    window_aggregation: Literal["mean", "trimmed"] = Field(
        default="mean",
        description="Window probabilities → track tags: mean, or trimmed (per label, without the "
        "highest and lowest quarter of windows). Silent windows never count.",
    )
    max_track_seconds: float = Field(
        default=4 * 3600.0, gt=0,
        description="Most seconds read to measure a track whose header has no or an estimated "
        "duration (windows are placed within them).",
    )
    inference_max_windows: int = Field(
        default=0, ge=0,
        description="Max windows per model call (0 = measured at load on CPU: the largest size "
        "within 5% of the best windows/s; 64 on CUDA); bigger batches run in chunks.",
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
    startup_timeout_s: float = Field(
        default=120.0, gt=0,
        description="With --until-idle: give up (one line, exit 3) if Redis or the broker do "
        "not answer (or refuse) within this long at startup; a service keeps retrying.",
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
