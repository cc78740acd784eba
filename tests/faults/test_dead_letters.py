"""Dead letters bounded in encoded size: a message whose bytes JSON-escape to six times their
size must not become a letter the DLQ topic (or the producer) refuses.

Before, a 250,000-byte message of 0x01 bytes under ``MAX_MESSAGE_BYTES=262144`` became a
1.5 MB letter (each byte escaped as ``\\u0001``) and the worker died with
``MessageSizeTooLargeError`` on every start. Servers: the shared session stack.
"""

from __future__ import annotations

import json

import pytest

from genretag.core.kafka import dead_letter_max_bytes, topic_max_bytes
from genretag.core.store import connect
from genretag.schemas import TrackRef
from tests.faults.config import SIZES
from tests.faults.harness import (
    end_offsets_of,
    fault_settings,
    read_state,
    read_topic,
    send_values,
)
from tests.faults.swap_proxy import ProxiedTansu
from tests.integration.helpers import committed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

CAP = 262_144


def test_dead_letters_fit_the_dead_letter_topic_whatever_the_bytes(
    stack, demo_model, fault_clips, audio_root, workers, tmp_path, figures
) -> None:
    settings = fault_settings(stack, demo_model, [audio_root], max_message_bytes=CAP)
    escaped_meta = {"note": "\u0001" * ((CAP - 400) // 6)}  # 6 bytes each in the message
    outside = TrackRef(track_id="dl-outside", uri="/etc/passwd", metadata=escaped_meta)
    cases = {
        "250,000 bytes of 0x01": b"\x01" * 250_000,
        f"{CAP} bytes of 0x01 (exactly the cap)": b"\x01" * CAP,
        "256 KiB of quotes and backslashes": b'"\\' * (CAP // 2),
        "a reference outside the roots carrying 43,000 escaped control characters":
            outside.model_dump_json().encode(),
    }
    assert len(cases["a reference outside the roots carrying 43,000 escaped control "
                     "characters"]) <= CAP
    good = {f"dl-good-{i}": str(p) for i, p in enumerate(fault_clips[:2])}
    items = [(tid, TrackRef(track_id=tid, uri=u).model_dump_json().encode())
             for tid, u in list(good.items())[:1]]
    items += [(None, v) for v in cases.values()]
    items += [(tid, TrackRef(track_id=tid, uri=u).model_dump_json().encode())
              for tid, u in list(good.items())[1:]]
    coords = send_values(settings, items)
    worker = workers.start(settings, "letters", until_idle=True)
    rc = worker.wait(300)

    bound = dead_letter_max_bytes(settings.kafka)
    letters = read_topic(settings, settings.kafka.dlq_topic, want=len(cases), timeout_s=30)
    sizes = [len(r.value) for r in letters]
    parsed = [json.loads(r.value) for r in letters]
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    figures("dead letters of messages that escape six-fold", bad_inputs=len(cases),
            tracks=len(good), lost=len(set(good) - set(state.tracks)),
            largest_letter_bytes=max(sizes, default=0), letter_bound_bytes=bound,
            dlq_topic_limit_bytes=topic_max_bytes(settings.kafka, settings.kafka.dlq_topic),
            worker_process_starts=worker.count("worker.starting"), exit_code=rc)
    assert rc == 0 and worker.count("worker.starting") == 1, worker.tail()
    assert len(letters) == len(cases), [p.get("reason") for p in parsed]
    assert max(sizes) <= bound, sizes
    assert sorted(p["reason"] for p in parsed) == sorted(
        ["bad_message"] * 3 + ["disallowed_uri"]), parsed
    control = [p for p in parsed if p["original"].startswith("\x01")]
    assert len(control) == 2, "the 0x01 messages kept none of their original"
    for letter in control:  # 6x on escaping: cut, and saying so
        assert "original cut to its first" in letter["detail"], letter["detail"][-200:]
    assert set(good) <= set(state.tracks), sorted(state.tracks)
    ends = end_offsets_of(list(coords))
    done = committed(settings)
    assert all(done.get(p, 0) >= e for p, e in ends.items()), (done, ends)


def test_the_dead_letter_topic_limit_is_read_at_start(
    stack, demo_model, fault_clips, audio_root, workers, tmp_path, figures
) -> None:
    """The worker reads the DLQ topic's ``max.message.bytes`` (DescribeConfigs, answered by the
    proxy as Apache Kafka would: Tansu does not): it keeps its letters under a 40,000-byte limit,
    and refuses to start, in one line, under a limit too small for any letter."""
    broker = ProxiedTansu(tmp_path)
    try:
        runs = {}
        for limit in (40_000, 20_000):
            settings = fault_settings(stack, demo_model, [audio_root],
                                      kafka_bootstrap_servers=broker.bootstrap)
            broker.proxy.topic_limits[settings.kafka.dlq_topic] = limit
            good = {f"lim-{limit}": str(fault_clips[0])}
            send_values(settings, [(None, b"\x01" * 30_000)] + [
                (t, TrackRef(track_id=t, uri=u).model_dump_json().encode())
                for t, u in good.items()])
            worker = workers.start(settings, f"limit-{limit}", until_idle=True)
            rc = worker.wait(300)
            letters = read_topic(settings, settings.kafka.dlq_topic, want=1, timeout_s=10)
            state = read_state(connect(settings.redis), settings.redis.key_prefix)
            runs[limit] = (rc, worker, letters, state, settings)
        rc, worker, letters, state, _ = runs[40_000]
        refused_rc, refused, _, _, refused_settings = runs[20_000]
        said = [line for line in refused.lines if "max.message.bytes" in line
                and line.startswith("genretag work:")]
        figures("a dead-letter topic with a small max.message.bytes", bad_inputs=2, tracks=1,
                lost=0 if "lim-40000" in state.tracks else 1,
                letter_bytes_under_40000_limit=max((len(r.value) for r in letters), default=0),
                refused_exit_code_under_20000_limit=refused_rc)
        assert rc == 0 and len(letters) == 1, worker.tail()
        assert len(letters[0].value) <= 40_000 - 1024, len(letters[0].value)
        assert "original cut to its first" in json.loads(letters[0].value)["detail"]
        assert "lim-40000" in state.tracks, worker.tail()
        assert refused_rc == 3 and len(said) == 1, refused.tail()
        assert not committed(refused_settings), refused.tail()
    finally:
        broker.close()
