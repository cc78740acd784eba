"""Worker service pieces without a broker: pipelined jobs, partition drops, chunked inference,
the health/metrics server, replica command lines, and signals on a real `genretag work`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from kafka import TopicPartition

from genretag.cli import build_parser
from genretag.core.cli_settings import settings_from_args
from genretag.core.settings import load_settings
from genretag.worker.settings import WorkerSettings
from genretag.cli.stack import free_port
from genretag.core.audio.windows import make_windows
from genretag.worker.cli import replica_argv
from genretag.core.audio.decoders import DecodeOptions, open_decoder
from genretag.worker.health import HealthServer, HealthState
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection
from genretag.worker.checkpoint import next_offsets
from genretag.worker.metrics import WorkerMetrics
import genretag.worker.process as process_mod
from genretag.worker.job import Outcome
from genretag.core.audio.decoders import DecodeOptions
from genretag.worker.process import Processor
from genretag.core.audio.uri import AudioSource

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


@dataclass
class Record:
    """The fields of a Kafka ConsumerRecord that the processor reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


def records_for(paths: list[Path], partitions: int = 2) -> list[Record]:
    return [
        Record("t", i % partitions, i // partitions,
               json.dumps({"track_id": f"track-{i}", "uri": str(p),
                           "enqueued_at": "2026-01-01T00:00:00+00:00"}).encode())
        for i, p in enumerate(paths)
    ]


@pytest.fixture
def settings(demo_model: Path, tmp_path: Path) -> WorkerSettings:
    return load_settings(WorkerSettings, model_path=str(demo_model), device="cpu",
                         allowed_roots=[str(tmp_path), "/tmp"], decode_workers=3)


@pytest.fixture
def tagger(settings: WorkerSettings) -> Tagger:
    return Tagger.load(ModelSection(path=settings.model.path, device="cpu", max_windows_per_call=64))


def summary(outcomes: list[Outcome]) -> list[tuple]:
    return [(o.partition, o.offset, o.record.track_id if o.record else None,
             o.record.labels if o.record else None, o.dead.reason.value if o.dead else None)
            for o in outcomes]


def test_next_offsets_is_last_offset_plus_one_per_partition() -> None:
    outcomes = [Outcome("t", 0, 5), Outcome("t", 1, 2), Outcome("t", 0, 7), Outcome("t", 0, 6)]
    offsets = next_offsets(outcomes)
    assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 8, 1: 3}


def test_overlapping_jobs_equal_one_by_one_processing(
        settings: WorkerSettings, tagger: Tagger, demo_audio, tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp3"
    records = records_for([c.path for c in demo_audio[::5]] + [missing])
    records.append(Record("t", 0, 99, b"{not json"))
    processor = Processor(settings, tagger)
    try:
        one_by_one = [o for r in records for o in processor.process([r])]
        # Three batches in flight at once: later decodes overlap earlier model passes.
        jobs = [processor.submit(records[i:i + 4], f"b{i}") for i in range(0, len(records), 4)]
        overlapped = [o for job in jobs for o in job.result()]
    finally:
        processor.close()
    assert summary(overlapped) == summary(one_by_one)
    assert [o.dead.reason.value for o in overlapped if o.dead] == ["missing_file", "bad_message"]
    for a, b in zip(one_by_one, overlapped, strict=True):
        if a.record:
            assert b.record.probabilities == pytest.approx(a.record.probabilities, abs=1e-5)
            assert a.enqueued_at == b.enqueued_at and a.enqueued_at.year == 2026


def test_a_dropped_partition_is_neither_decoded_nor_tagged(
        settings: WorkerSettings, tagger: Tagger, demo_audio) -> None:
    one_decoder = settings.updated(decode_workers=1)
    processor = Processor(one_decoder, tagger)
    try:
        job = processor.submit(records_for([c.path for c in demo_audio[:8]]), "b")
        assert job.drop({TopicPartition("t", 1)}) == 4
        kept = job.result()
    finally:
        processor.close()
    assert {o.partition for o in kept} == {0} and all(o.record for o in kept)
    assert all(o.record is None and o.dead is None for o in job.outcomes if o.partition == 1)
    assert not job.all_dropped()
    job.drop({TopicPartition("t", 0)})
    assert job.all_dropped() and job.done() and job.kept() == []


def test_chunked_inference_equals_one_call(tagger: Tagger) -> None:
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal((n, tagger.manifest.clip_samples)).astype(np.float32) * 0.1
               for n in (1, 3, 2)]
    whole = tagger.predict(windows)
    tagger.max_windows_per_call = 2
    chunked = tagger.predict(windows)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert whole.shape == (3, len(tagger.manifest.labels))


def test_cpu_optimized_model_gives_the_artifacts_probabilities(
        settings: WorkerSettings, demo_audio) -> None:
    """optimize_for_inference folds batch-norm and swaps kernels: outputs must not move."""
    plain = Tagger.load(ModelSection(path=settings.model.path, device="cpu", optimize=False))
    fast = Tagger.load(ModelSection(path=settings.model.path, device="cpu", optimize=True))
    assert list(plain.module.parameters()) and not list(fast.module.parameters())  # frozen
    opts = DecodeOptions(plain.manifest.sample_rate,
                         plain.manifest.clip_seconds * settings.windows.max_windows)
    ffmpeg = open_decoder("ffmpeg")
    windows = [make_windows(ffmpeg.decode_audio(AudioSource(str(c.path), is_local=True), opts),
                            plain.manifest.clip_samples, max_windows=2) for c in demo_audio[::12]]
    windows.append(np.zeros((2, plain.manifest.clip_samples), np.float32))
    want, got = plain.predict(windows), fast.predict(windows)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (want.argmax(1) == got.argmax(1)).all() and want.std() > 0.01


def _get(port: int, path: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            body = resp.read().decode()
            code = resp.status
    except urllib.error.HTTPError as exc:
        body, code = exc.read().decode(), exc.code
    return code, (json.loads(body) if path != "/metrics" and code != 404 else body)


def test_health_endpoints_follow_the_worker_state() -> None:
    redis_up = {"ok": False}

    def ping() -> None:
        if not redis_up["ok"]:
            raise ConnectionError("redis down")

    metrics = WorkerMetrics("w-1")
    health = HealthState(max_loop_age_s=0.3, redis_ping=ping)
    server = HealthServer("127.0.0.1", 0, metrics, health).start()
    try:
        port = server.port
        code, body = _get(port, "/readyz")
        assert code == 503 and body["model_loaded"] is False and "redis down" in body["redis_error"]
        health.model_loaded, health.joined, redis_up["ok"] = True, True, True
        assert _get(port, "/readyz")[0] == 200
        health.stopping = True
        assert _get(port, "/readyz")[0] == 503
        time.sleep(0.4)
        assert _get(port, "/healthz")[0] == 200  # still starting: no loop to watch yet
        health.loop_started = True
        health.tick()
        assert _get(port, "/healthz")[0] == 200
        time.sleep(0.4)  # the loop stopped ticking
        code, body = _get(port, "/healthz")
        assert code == 503 and body["loop_age_s"] > 0.3
        metrics.dead_letters.labels(reason="silent").inc(2)
        code, text = _get(port, "/metrics")
        assert code == 200 and 'genretag_dead_letters_total{reason="silent"} 2.0' in text
        assert 'genretag_worker_info{worker_id="w-1"} 1.0' in text
        assert 'genretag_stage_seconds_count{stage="decode"} 0.0' in text
        assert _get(port, "/nope")[0] == 404
    finally:
        server.close()


def test_replica_command_lines_keep_flags_and_get_their_own_id_and_port() -> None:
    args = build_parser().parse_args([
        "--log-level", "DEBUG", "work", "--replicas", "3", "--until-idle", "--batch-size", "8",
        "--metrics-port", "9100", "--allow-http", "--worker-id", "box"])
    settings = settings_from_args(WorkerSettings, args)
    argv = replica_argv(args, settings, 2)
    assert argv[:5] == [sys.executable, "-m", "genretag.cli", "--log-level", "DEBUG"]
    joined = " ".join(argv)
    for part in ("work --replicas 1 --until-idle", "--batch-size 8", "--allow-http",
                 "--worker-id box-2", "--metrics-port 9102"):
        assert part in joined, (part, joined)
    assert argv.count("--worker-id") == 1 and argv.count("--metrics-port") == 1


def _work(demo_model: Path, *extra: str) -> subprocess.Popen:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: startup keeps retrying
    return subprocess.Popen(
        [sys.executable, "-m", "genretag.cli", "work", "--model", str(demo_model),
         "--redis-url", dead_redis, "--device", "cpu", "--retry-initial-backoff-s", "0.2", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_event(proc: subprocess.Popen, event: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if f'"event": "{event}"' in line:
            return
    raise AssertionError(f"{event} not logged")


def test_sigterm_stops_gracefully_and_a_second_signal_exits_at_once(demo_model: Path) -> None:
    patient = _work(demo_model, "--retry-max-backoff-s", "60")
    quick = _work(demo_model, "--retry-max-backoff-s", "0.4")
    try:
        _wait_for_event(patient, "worker.transient_error")
        _wait_for_event(quick, "worker.transient_error")
        for proc in (patient, quick):
            proc.send_signal(signal.SIGTERM)
        assert quick.wait(timeout=20) == 0  # gave up retrying once stopping, exited cleanly
        time.sleep(0.5)
        assert patient.poll() is None  # still finishing (backing off towards 60 s)
        patient.send_signal(signal.SIGTERM)
        assert patient.wait(timeout=5) == 128 + signal.SIGTERM
    finally:
        for proc in (patient, quick):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_replicas_exit_non_zero_when_a_replica_fails(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "genretag.cli", "work", "--replicas", "2",
         "--model", str(tmp_path / "no-such-model.pt")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "model file not found" in proc.stderr
    assert '"event": "worker.replicas_failed"' in proc.stderr


def _render(path: Path, graph: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", graph,
                    "-ac", "2", "-b:a", "128k", str(path)], check=True)
    return path


def _no_addresses(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x?", text)


def _mixed_batch(demo_audio, tmp_path: Path) -> list[Record]:
    """Good clips with every kind of bad input between them, as one batch."""
    bad = {
        "missing": tmp_path / "missing.mp3",
        "empty": tmp_path / "empty.mp3",
        "garbage": tmp_path / "garbage.mp3",
        "huge": tmp_path / "huge.mp3",
        "short": _render(tmp_path / "short.mp3", "sine=frequency=440:duration=0.4:sample_rate=44100"),
        "silent": _render(tmp_path / "silent.mp3", "anullsrc=r=44100:cl=stereo:d=3"),
        "outside": Path("/etc/passwd"),  # a regular file outside the allowed roots, wherever the repo is
    }
    bad["empty"].write_bytes(b"")
    bad["garbage"].write_bytes(np.random.default_rng(0).bytes(50_000))
    bad["huge"].write_bytes(b"\0" * (2 << 20))
    good = [c.path for c in demo_audio[1::6]]
    paths = [good[0], bad["missing"], good[1], bad["empty"], bad["garbage"], good[2], bad["huge"],
             bad["short"], good[3], bad["silent"], bad["outside"], good[4], good[5]]
    records = records_for(paths)
    records.insert(3, Record("t", 0, 100, b"{not json"))
    records.insert(9, Record("t", 1, 101, json.dumps({"track_id": "ftp", "uri": "ftp://h/a.mp3",
                                                   "enqueued_at": "2026-01-01T00:00:00+00:00"}).encode()))
    return records


def test_chunked_decode_equals_per_file_decode_with_bad_inputs_mixed_in(
        settings: WorkerSettings, tagger: Tagger, demo_audio, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    records = _mixed_batch(demo_audio, tmp_path)
    capped = settings.updated(max_file_bytes=1 << 20)
    chunks: list[int] = []
    real_prepare = process_mod.prepare_tracks  # every decode goes through it, with its sources
    monkeypatch.setattr(process_mod, "prepare_tracks",
                        lambda refs, sources, *a, **k: chunks.append(len(sources)) or
                        real_prepare(refs, sources, *a, **k))
    outcomes = {}
    for grouped in (False, True):
        chunks.clear()  # count the grouped run's decode calls only
        processor = Processor(capped.updated(decode_grouped=grouped, decoder="ffmpeg"), tagger)
        try:
            outcomes[grouped] = processor.process(records)
        finally:
            processor.close()
    # 13 parsed messages over 3 decode workers: 3 chunks, bad URIs never reach FFmpeg.
    assert len(chunks) == 3 and sum(chunks) == 9, chunks
    per_file, chunked = outcomes[False], outcomes[True]
    assert [o.dead.reason.value for o in chunked if o.dead] == [
        "missing_file", "bad_message", "empty_file", "undecodable", "too_large", "too_short",
        "disallowed_uri", "silent", "disallowed_uri"]
    assert sum(o.record is not None for o in chunked) == 6
    for a, b in zip(per_file, chunked, strict=True):
        assert (a.partition, a.offset, a.enqueued_at) == (b.partition, b.offset, b.enqueued_at)
        if a.record:  # bit-exact decode, same batch → the very same probabilities
            assert b.record.model_dump(exclude={"processed_at"}) == \
                a.record.model_dump(exclude={"processed_at"})
        else:
            assert b.record is None
            got, want = b.dead.model_dump(), a.dead.model_dump()
            got["detail"], want["detail"] = _no_addresses(got["detail"]), _no_addresses(want["detail"])
            assert {k: v for k, v in got.items() if k != "failed_at"} == \
                {k: v for k, v in want.items() if k != "failed_at"}


def test_libav_decoder_gives_the_ffmpeg_outcomes_with_bad_inputs_mixed_in(
        settings: WorkerSettings, tagger: Tagger, demo_audio, tmp_path: Path) -> None:
    """Same labels and dead-letter reasons as the command line, window starts and durations
    up to the encoder padding FFmpeg 5.1's header counts (libav's durations are what either
    decodes); the libav processes seek the windows themselves, so probabilities are close."""
    records = _mixed_batch(demo_audio, tmp_path)
    capped = settings.updated(max_file_bytes=1 << 20)
    outcomes = {}
    for decoder in ("ffmpeg", "libav"):
        processor = Processor(capped.updated(decoder=decoder), tagger)
        try:
            outcomes[decoder] = processor.process(records)
        finally:
            processor.close()
    cli, libav = outcomes["ffmpeg"], outcomes["libav"]
    assert sum(o.record is not None for o in libav) == 6
    for a, b in zip(cli, libav, strict=True):
        assert (a.partition, a.offset) == (b.partition, b.offset)
        if a.record:
            loose = {"processed_at", "probabilities", "timeline", "duration_s"}
            assert b.record.model_dump(exclude=loose) == a.record.model_dump(exclude=loose)
            assert b.record.duration_s == pytest.approx(a.record.duration_s, abs=0.06)
            assert b.record.timeline.starts == pytest.approx(a.record.timeline.starts, abs=0.06)
            assert b.record.probabilities == pytest.approx(a.record.probabilities, abs=0.01)
        else:
            assert (b.dead.reason, b.dead.stage, b.dead.track_id) == \
                (a.dead.reason, a.dead.stage, a.dead.track_id)
    # The tags come from libav's windows: seeked windows differ from -ss in their first ms.
    assert any(b.record.probabilities != a.record.probabilities
               for a, b in zip(cli, libav, strict=True) if a.record)
