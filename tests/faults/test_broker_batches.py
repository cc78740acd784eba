"""Record batches from the broker that the client cannot read, or that inflate too far.

One running worker reads, on one partition, good batches compressed with each codec
kafka-python knows (gzip, snappy, lz4, zstd, as Java and librdkafka producers send them and
Apache Kafka keeps them), hostile batches (a gzip payload that is not deflate data with a valid
CRC, inflated bytes that are not records, a bad CRC, an unknown codec, a cut lz4 frame) and
gzip bombs, between good plain messages. Each hostile batch must become one ``bad_message``
dead letter at its last offset, the worker must go on (one process start) and commit past it,
and the bombs must not raise the worker's peak memory by more than the inflate cap allows.

Tansu stores batches uncompressed, so the batches are swapped in on the fetch path by a proxy
in front of a real Tansu (:mod:`tests.faults.swap_proxy`).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import kafka.codec
import pytest

from genretag.core.kafka import ensure_topics
from genretag.core.store import connect
from genretag.schemas import TrackRef
from tests.faults.config import FULL, SIZES
from tests.faults.harness import (
    agreement_problems,
    all_committed,
    consistency_problems,
    fault_settings,
    read_state,
    wait_until,
)
from tests.faults.swap_proxy import (
    ProxiedTansu,
    build_batch,
    make_swap,
    produce_raw,
    records_of,
    with_bad_crc,
    with_payload,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

#: Inflate cap of the worker under test, and the bombs (the issue's: 8 × 100 MB of spaces).
INFLATE_CAP = 4 * 1024 * 1024
BOMBS, BOMB_BYTES = (8, 100 * 1024 * 1024) if FULL else (2, 64 * 1024 * 1024)
#: Most the bombs may add to the worker's peak RSS (without the cap each adds ~3× its size).
BOMB_RSS_BOUND = 48 * 1024 * 1024


@dataclass
class Hostile:
    name: str
    batch: bytes
    last_offset: int = -1


def refs(prefix: str, clips: list[Path], n: int) -> dict[str, str]:
    return {f"{prefix}-{i}": str(clips[i % len(clips)]) for i in range(n)}


def encoded(tracks: dict[str, str]) -> list[bytes]:
    return [TrackRef(track_id=t, uri=u).model_dump_json().encode() for t, u in tracks.items()]


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_compressed_and_unreadable_batches_are_read_or_parked(
    stack, demo_model, fault_clips, audio_root, reference, workers, tmp_path, figures
) -> None:
    assert kafka.codec.has_snappy() and kafka.codec.has_lz4() and kafka.codec.has_zstd(), (
        "kafka-python's codecs are not installed (lz4, zstandard, python-snappy)")
    broker = ProxiedTansu(tmp_path)
    try:
        settings = fault_settings(stack, demo_model, [audio_root],
                                  kafka_bootstrap_servers=broker.bootstrap, kafka_partitions=1,
                                  kafka_max_batch_bytes=INFLATE_CAP)
        ensure_topics(settings.kafka)
        topic = settings.kafka.topic
        expected: dict[str, str] = {}

        def plain(prefix: str) -> int:
            tracks = refs(prefix, fault_clips, 1)
            expected.update(tracks)
            return produce_raw(broker.bootstrap, topic, 0, build_batch(encoded(tracks)))

        def swapped(batch: bytes) -> int:
            swap = broker.proxy.add(make_swap(batch))
            return produce_raw(broker.bootstrap, topic, 0, swap.sentinel) + records_of(batch) - 1

        # good batches, one per codec
        for codec in ("gzip", "snappy", "lz4", "zstd"):
            tracks = refs(f"bb-{codec}", fault_clips, 3)
            swapped(build_batch(encoded(tracks), codec))
            expected.update(tracks)
        # hostile batches, each between good plain messages
        some = encoded(refs("bb-lost", fault_clips, 2))
        gz, lz = build_batch(some, "gzip"), build_batch(some, "lz4")
        hostile = [
            Hostile("gzip payload that is not deflate data (valid CRC)",
                    with_payload(gz, b"\x1f\x8b\x08\x00" + b"not deflate data " * 8,
                                 attributes=1)),
            Hostile("gzip that inflates to bytes that are not records",
                    with_payload(gz, gzip.compress(b"\x7f garbage records " * 30), attributes=1)),
            Hostile("batch whose CRC does not match", with_bad_crc(gz)),
            Hostile("unknown compression codec (attributes say 5)",
                    with_payload(gz, gz[61:], attributes=5)),
            Hostile("lz4 frame cut short", with_payload(lz, lz[61:-20], attributes=3)),
        ]
        plain("bb-first")
        for i, case in enumerate(hostile):
            case.last_offset = swapped(case.batch)
            plain(f"bb-between-{i}")
        worker = workers.start(settings, "batches")
        ends = {0: plain("bb-last") + 1}
        wait_until(lambda: all_committed(settings, ends) or not worker.alive(), 300,
                   "the first batches committed", diagnose=worker.tail)
        assert worker.alive(), worker.tail()
        before_bombs = peak_rss(worker.proc.pid)

        bomb = build_batch([b" " * BOMB_BYTES], "gzip")
        bombs = [Hostile(f"gzip bomb: {BOMB_BYTES >> 20} MiB of spaces in {len(bomb) >> 10} KiB",
                         bomb) for _ in range(BOMBS)]
        for i, case in enumerate(bombs):
            case.last_offset = swapped(case.batch)
            ends = {0: plain(f"bb-after-bomb-{i}") + 1}
        wait_until(lambda: all_committed(settings, ends) or not worker.alive(), 300,
                   "every batch committed", diagnose=worker.tail)
        added = peak_rss(worker.proc.pid) - before_bombs
        alive = worker.alive()
        worker.signal(15)
        rc = worker.wait(60)

        state = read_state(connect(settings.redis), settings.redis.key_prefix)
        got = {}
        for case in hostile + bombs:
            letter = state.dlq_msg.get(f"{topic}:0:{case.last_offset}")
            got[case.name] = letter["reason"] if letter else "nothing"
            if letter:
                assert "record batch at offsets" in letter["detail"], letter
        lost, problems = agreement_problems(state, expected, reference)
        unswapped = [s.marker for s in broker.proxy.swaps if not s.swapped]
        figures("unreadable and compressed record batches from the broker",
                bad_inputs=len(hostile) + len(bombs), tracks=len(expected), lost=len(lost),
                worker_process_starts=worker.count("worker.starting"),
                bomb_peak_rss_added_mb=round(added / 2**20, 1), inflate_cap_mb=INFLATE_CAP >> 20,
                cases=[{"name": c.name, "expected": ["bad_message"], "got": got[c.name]}
                       for c in hostile + bombs[:1]],
                notes=["Tansu stores every batch uncompressed (it inflates on produce, and a gzip "
                       "batch it cannot inflate is stored with its codec bits cleared), so the "
                       "compressed and hostile batches of 'unreadable and compressed record "
                       "batches' are swapped in on the fetch path by a proxy in front of a real "
                       "Tansu (tests/faults/swap_proxy.py)."])
        assert not unswapped, f"the proxy never served {len(unswapped)} of the batches"
        assert alive and worker.count("worker.starting") == 1, worker.tail()
        assert rc == 0, worker.tail()
        assert all(v == "bad_message" for v in got.values()), got
        assert not lost and not problems, (lost, problems[:5])
        assert not consistency_problems(state), consistency_problems(state)
        assert added < BOMB_RSS_BOUND, (
            f"{BOMBS} bombs of {BOMB_BYTES >> 20} MiB added {added >> 20} MiB to peak RSS")
    finally:
        broker.close()

