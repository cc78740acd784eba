"""Poison pills and sandbox escapes: messages that once stopped every worker, files that once
let FFmpeg read outside the allowed roots. One running worker gets them among good tracks and
must dead-letter each with the right reason (Redis and the DLQ topic), tag the good ones, commit
everything and keep running. Servers: the shared session stack.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from genretag.core.store import connect
from genretag.schemas import DeadLetter
from tests.faults.config import SIZES
from tests.faults.harness import (
    committed,
    consistency_problems,
    end_offsets_of,
    fault_settings,
    read_state,
    read_topic,
    send_values,
)
from tests.faults.test_hostile_input import TAGGED, Case, ref

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

MAX_MESSAGE_BYTES = 16384


def escape_files(inside: Path, outside: Path, clip: Path) -> dict[str, Path]:
    """Playlists inside the root (under audio names) whose entries point outside it."""
    inside.mkdir()
    outside.mkdir()
    secret = outside / "secret.mp3"
    shutil.copy(clip, secret)
    f = {"secret": secret}
    texts = {
        "hls_as_mp3": f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:2.5,\n{secret}\n#EXT-X-ENDLIST\n",
        "hls_file_url": (f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:2.5,\nfile:{secret}\n"
                         "#EXT-X-ENDLIST\n"),
        "ffconcat": f"ffconcat version 1.0\nfile '{secret}'\n",
    }
    for name, text in texts.items():
        f[name] = inside / f"{name}.mp3"
        f[name].write_text(text)
    f["m3u8"] = inside / "list.m3u8"
    f["m3u8"].write_text(texts["hls_as_mp3"])
    f["fifo"] = inside / "fifo.mp3"
    os.mkfifo(f["fifo"])
    f["plain"] = inside / "plain.mp3"
    shutil.copy(clip, f["plain"])
    return f


def poison_cases(f: dict[str, Path], inside: Path, good_id: str) -> list[Case]:
    bad = ("bad_message",)
    nested = b'{"track_id":"p-deep","uri":"/x.mp3","metadata":' + b"[" * 3000 + b"]" * 3000 + b"}"
    return [
        Case("lone surrogate id, uri a number", b'{"track_id":"\\ud800","uri":5}', bad),
        Case("a good track's id on an invalid message",
             json.dumps({"track_id": good_id, "uri": 5}).encode(), bad),
        Case("JSON nested 3000 deep", nested, bad),
        Case("integer of 5000 digits",
             b'{"track_id":"p-int","uri":"/x.mp3","metadata":{"n":' + b"7" * 5000 + b"}}", bad),
        Case("ANSI escape and newline in id",
             b'{"track_id":"p\\u001b[2J\\n","uri":"/x.mp3"}', bad),
        Case("surrogate in a metadata key",
             b'{"track_id":"p-meta","uri":"' + str(f["plain"]).encode() + b' ","metadata":{"\\udc00":1}}',
             bad),
        Case("uri with trailing whitespace",
             json.dumps({"track_id": "p-space", "uri": f"{f['plain']} "}).encode(), bad,
             track_id="p-space"),
        Case("%00 in a file:// URI", ref("p-nul", f"file://{inside}/a%00.mp3"),
             ("disallowed_uri",), track_id="p-nul"),
        Case("hls playlist named .mp3 -> outside", ref("p-hls", str(f["hls_as_mp3"])),
             ("undecodable",), track_id="p-hls"),
        Case("hls playlist with file: URL -> outside", ref("p-hls-url", str(f["hls_file_url"])),
             ("undecodable",), track_id="p-hls-url"),
        Case(".m3u8 playlist -> outside", ref("p-m3u8", str(f["m3u8"])), ("undecodable",),
             track_id="p-m3u8"),
        Case("ffconcat named .mp3 -> outside", ref("p-ffconcat", str(f["ffconcat"])),
             ("undecodable",), track_id="p-ffconcat"),
        Case("FIFO named .mp3 (never blocks)", ref("p-fifo", str(f["fifo"])), ("missing_file",),
             track_id="p-fifo"),
    ]


def test_poison_pills_and_sandbox_escapes_to_one_running_worker(
    stack, demo_model, fault_clips, audio_root, workers, tmp_path, figures
) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    files = escape_files(inside, outside, fault_clips[0])
    settings = fault_settings(stack, demo_model, [inside, audio_root],
                              max_message_bytes=MAX_MESSAGE_BYTES)
    good = [Case(f"good clip {i}", ref(f"p-good-{i}", str(p)), (TAGGED,), track_id=f"p-good-{i}")
            for i, p in enumerate(fault_clips[:6])]
    bad = poison_cases(files, inside, good[0].track_id)
    cases = [c for pair in zip(bad, good + [None] * len(bad)) for c in pair if c is not None]
    coords = send_values(settings, [(c.track_id, c.value) for c in cases])
    for case, coord in zip(cases, coords, strict=True):
        case.coord = coord

    worker = workers.start(settings, "poison", until_idle=True)
    rc = worker.wait(300)
    state = read_state(connect(settings.redis), settings.redis.key_prefix)

    def got(case: Case) -> str:
        if case.track_id and case.track_id in state.tracks and case.expected == (TAGGED,):
            return TAGGED
        if case.track_id and case.track_id in state.dlq and case.expected != ("bad_message",):
            return state.dlq[case.track_id]["reason"]
        letter = state.dlq_msg.get(f"{settings.kafka.topic}:{case.coord[0]}:{case.coord[1]}")
        return letter["reason"] if letter else "nothing"

    outcomes = {c.name: got(c) for c in cases}
    wrong = {c.name: (c.expected, outcomes[c.name]) for c in cases
             if outcomes[c.name] not in c.expected}
    on_topic = read_topic(settings, settings.kafka.dlq_topic, len(bad))
    letters = [DeadLetter.model_validate_json(r.value) for r in on_topic]
    topic_reasons = {(d.source_partition, d.source_offset): d.reason.value for d in letters}
    topic_wrong = [c.name for c in bad if topic_reasons.get(c.coord) != outcomes[c.name]]
    ends, done = end_offsets_of(coords), committed(settings)
    outside_read = [c.name for c in bad if c.track_id in state.tracks]
    figures("poison pills and sandbox escapes to one running worker", bad_inputs=len(bad),
            tracks=len(good), lost=sum(1 for c in good if outcomes[c.name] != TAGGED),
            dead_letters=len(letters), wrong_outcomes=len(wrong),
            files_read_outside_roots=len(outside_read),
            worker_process_starts=worker.count("worker.starting"), exit_code=rc,
            cases=[{"name": c.name, "expected": list(c.expected), "got": outcomes[c.name]}
                   for c in bad])

    assert rc == 0 and worker.count("worker.starting") == 1, worker.tail()
    assert not wrong, wrong
    assert not outside_read, outside_read
    assert not topic_wrong, f"dead letters missing or different on the DLQ topic: {topic_wrong}"
    assert all(d.track_id is None or d.track is not None or d.track_id.startswith("p-")
               for d in letters)  # no untrusted id is carried as a key
    assert good[0].track_id not in state.dlq  # the forged id did not touch the real track
    assert all(done.get(p, 0) == end for p, end in ends.items()), (done, ends)
    assert not consistency_problems(state), consistency_problems(state)[:5]


def test_a_hanging_remote_input_costs_one_timeout_and_no_redecodes(
    stack, demo_model, fault_clips, audio_root, workers, figures
) -> None:
    """ALLOW_HTTP: a server that stalls mid-file sits in a batch of good tracks. It is decoded
    alone (one timeout, one request); the good tracks are decoded once and tagged."""
    from tests.stall_server import stalling_server

    timeout_s = 3.0
    settings = fault_settings(stack, demo_model, [audio_root], allow_http=True,
                              decode_timeout_s=timeout_s, batch_size=4, decode_workers=1,
                              batch_max_wait_ms=2000)
    good = [(f"s-good-{i}", str(p)) for i, p in enumerate(fault_clips[:3])]
    body = fault_clips[0].read_bytes()[: fault_clips[0].stat().st_size // 2]
    with stalling_server(body, name="stall.mp3") as (url, seen):
        items = [(good[0][0], ref(*good[0])), ("s-hang", ref("s-hang", url)),
                 *[(tid, ref(tid, path)) for tid, path in good[1:]]]
        send_values(settings, items)
        worker = workers.start(settings, "hang", until_idle=True)
        rc = worker.wait(300)
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    # A group of files decoded again after a failed FFmpeg run logs this (the worker's window
    # groups; "decode.group_retry" was bench.decode_many's, which the worker never ran).
    decodes = worker.count("decode.windows_group_retry")
    figures("hanging remote input in a batch", bad_inputs=1, tracks=len(good),
            lost=sum(1 for tid, _ in good if tid not in state.tracks),
            requests_to_stalled_server=len(seen), group_retries=decodes,
            worker_process_starts=worker.count("worker.starting"), exit_code=rc)
    assert rc == 0 and worker.count("worker.starting") == 1, worker.tail()
    assert state.dlq["s-hang"]["reason"] == "decode_timeout", state.dlq.get("s-hang")
    assert all(tid in state.tracks for tid, _ in good), sorted(state.tracks)
    assert len(seen) == 1 and decodes == 0  # one timeout, nothing decoded twice
