"""Hostile input: one running worker gets every kind of bad message among good ones.

Each bad input must become a dead letter with the right reason code (in Redis and on the DLQ
topic) while the same worker process goes on and tags the good tracks. Producer-side, bad
JSONL rows are reported with their line numbers. Servers: the shared session stack.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from genretag.core.store import connect
from genretag.worker.cli import ALL_DEAD_LETTERED
from genretag.schemas import DeadLetter, TrackRef
from tests.faults.broken_files import DURATION_SLACK_S, HALF_S, broken_streams
from tests.faults.config import REPO_ROOT, SIZES
from tests.faults.harness import (
    StoreState,
    agreement_problems,
    committed,
    consistency_problems,
    end_offsets_of,
    fault_settings,
    read_state,
    read_topic,
    send_values,
    settings_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

TAGGED = "tagged"
MAX_FILE_BYTES = 150_000
MAX_MESSAGE_BYTES = 4096


@dataclass
class Case:
    """One message and the outcomes the policy allows (reason codes, or ``tagged``)."""

    name: str
    value: bytes | None
    expected: tuple[str, ...]
    track_id: str | None = None
    coord: tuple[int, int] | None = None
    #: A tagged track's true duration: what the worker must store (the whole file, not a part;
    #: within :data:`DURATION_SLACK_S`, the encoder padding and frames of joined mp3s).
    duration_s: float | None = None


def ref(track_id: str, uri: str) -> bytes:
    return TrackRef(track_id=track_id, uri=uri).model_dump_json().encode()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True, timeout=120)


def make_files(inside: Path, outside: Path, clip: Path) -> dict[str, Path]:
    """The bad (and oddly named but good) files, all made here with FFmpeg or by hand."""
    from genretag.training.synth import synth_clip

    inside.mkdir()
    outside.mkdir()
    data = clip.read_bytes()
    f: dict[str, Path] = {}
    f["empty"] = inside / "empty.mp3"
    f["empty"].write_bytes(b"")
    f["truncated"] = inside / "truncated.mp3"
    f["truncated"].write_bytes(data[:400])
    garbled = bytearray(data)
    rng = random.Random(3)
    for i in range(len(data) // 3, len(data) // 3 + 4000):
        garbled[i] = rng.randrange(256)
    f["garbage_middle"] = inside / "garbage-middle.mp3"
    f["garbage_middle"].write_bytes(bytes(garbled))
    f["random"] = inside / "random.mp3"
    f["random"].write_bytes(bytes(random.Random(5).randrange(256) for _ in range(30000)))
    f["text"] = inside / "text.mp3"
    f["text"].write_text("this is not audio, it is a text file renamed .mp3\n" * 40)
    png = inside / "red.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=32x32", "-frames:v", "1", str(png))
    f["image"] = inside / "image.mp3"
    png.rename(f["image"])
    f["silence"] = inside / "silence.mp3"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "3", "-c:a", "libmp3lame",
           str(f["silence"]))
    f["too_short"] = synth_clip(inside / "too-short.mp3", "techno", 0.4, seed=11)
    f["too_large"] = synth_clip(inside / "too-large.mp3", "ambient", 15.0, seed=12)
    assert f["too_large"].stat().st_size > MAX_FILE_BYTES > len(data)
    f["fifo"] = inside / "fifo.mp3"
    os.mkfifo(f["fifo"])
    f["directory"] = inside / "directory.mp3"
    f["directory"].mkdir()
    f["loop"] = inside / "loop.mp3"
    f["loop"].symlink_to(f["loop"])
    f["outside"] = outside / "outside.mp3"
    shutil.copy(clip, f["outside"])
    f["symlink_out"] = inside / "symlink-out.mp3"
    f["symlink_out"].symlink_to(f["outside"])
    f["colon_pipe_name"] = inside / "concat:a.mp3|b.mp3"
    shutil.copy(clip, f["colon_pipe_name"])
    f["unicode_name"] = inside / "ünïcødé ♫ track.mp3"
    shutil.copy(clip, f["unicode_name"])
    f.update(broken_streams(inside))
    return f


def hostile_cases(f: dict[str, Path], inside: Path, outside: Path) -> list[Case]:
    bad_msg, bad_uri = ("bad_message",), ("disallowed_uri",)

    def c(name: str, uri: str, *expected: str, duration_s: float | None = None) -> Case:
        tid = "h-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:100]
        return Case(name, ref(tid, uri), tuple(expected), track_id=tid, duration_s=duration_s)

    big = json.dumps({"track_id": "h-oversized", "uri": str(f["text"]),
                      "metadata": {"pad": "x" * (MAX_MESSAGE_BYTES + 100)}}).encode()
    return [
        # files
        c("missing file", str(inside / "no-such-file.mp3"), "missing_file"),
        c("missing file outside the roots", str(outside / "nope.mp3"), *bad_uri),
        c("empty file", str(f["empty"]), "empty_file"),
        c("truncated mp3 (400 bytes)", str(f["truncated"]), "undecodable", "too_short"),
        c("garbage in the middle of an mp3", str(f["garbage_middle"]), TAGGED, "undecodable"),
        c("random bytes named .mp3", str(f["random"]), "undecodable", "too_short"),
        c("text file renamed .mp3", str(f["text"]), "undecodable"),
        c("PNG image renamed .mp3", str(f["image"]), "undecodable"),
        c("silence only", str(f["silence"]), "silent"),
        c("0.4 s clip (minimum 1 s)", str(f["too_short"]), "too_short"),
        c(f"file over the {MAX_FILE_BYTES}-byte cap", str(f["too_large"]), "too_large"),
        c("FIFO (would hang a decoder)", str(f["fifo"]), "missing_file"),
        c("float WAV, every sample NaN", str(f["nan_wav"]), "invalid_audio"),
        c("square-wave arpeggio, 1 sample in 1000 NaN", str(f["square_nan"]), "invalid_audio"),
        c("square-wave arpeggio, 1 sample in 1000 +Inf", str(f["square_inf"]), "invalid_audio"),
        c("WAV header claiming 0 channels (44 KB)", str(f["zero_channels"]), "undecodable"),
        c("two mp3s joined: 44.1 kHz stereo, then 22.05 kHz mono", str(f["joined_stereo_mono"]),
          TAGGED, duration_s=2 * HALF_S),
        c("two mp3s joined: 22.05 kHz mono, then 44.1 kHz stereo", str(f["joined_mono_stereo"]),
          TAGGED, duration_s=2 * HALF_S),
        c("chained Ogg: 44.1 kHz stereo, then 22.05 kHz mono", str(f["chained_ogg"]), TAGGED,
          duration_s=2 * HALF_S),
        c("directory named .mp3", str(f["directory"]), "missing_file"),
        c("symlink loop", str(f["loop"]), "missing_file"),
        # paths and schemes
        c("relative ../ path", "../" + outside.name + "/outside.mp3", *bad_uri),
        c("absolute path with ../ out of the root", f"{inside}/../{outside.name}/outside.mp3",
          *bad_uri),
        c("absolute path elsewhere (/etc/passwd)", "/etc/passwd", *bad_uri),
        c("device file (/dev/zero)", "/dev/zero", *bad_uri),
        c("symlink pointing out of the root", str(f["symlink_out"]), *bad_uri),
        c("file:// URI elsewhere", "file:///etc/passwd", *bad_uri),
        c("file:// URI with a host", "file://evil.example.com/x.mp3", *bad_uri),
        c("file:// URI with %2e%2e", f"file://{inside}/%2e%2e/{outside.name}/outside.mp3",
          *bad_uri),
        c("http:// URL", "http://127.0.0.1:9/x.mp3", *bad_uri),
        c("https:// URL", "https://example.com/x.mp3", *bad_uri),
        c("concat: protocol", f"concat:{f['garbage_middle']}|{f['garbage_middle']}", *bad_uri),
        c("subfile: protocol", f"subfile:{f['garbage_middle']}", *bad_uri),
        c("subfile,, options form", f"subfile,,start,0,end,100,,:{f['garbage_middle']}",
          *bad_uri),
        c("data: URI", "data:audio/mpeg;base64,SUQzBAAAAAAA", *bad_uri),
        c("pipe: protocol", "pipe:0", *bad_uri),
        # messages
        Case("not JSON", b"this is not json {", bad_msg),
        Case("invalid UTF-8", b"\xff\xfe\x00{\"track_id\": 1}", bad_msg),
        Case("JSON array", b"[1, 2, 3]", bad_msg),
        Case("JSON null", b"null", bad_msg),
        Case("empty message", b"", bad_msg),
        Case("tombstone (no value)", None, bad_msg),
        Case("schema: uri missing", b'{"track_id": "h-no-uri"}', bad_msg, track_id="h-no-uri"),
        Case("schema: uri is a number", b'{"track_id": "h-uri-int", "uri": 42}', bad_msg,
             track_id="h-uri-int"),
        Case("schema: unknown schema_version",
             b'{"schema_version": 2, "track_id": "h-v2", "uri": "/x.mp3"}', bad_msg,
             track_id="h-v2"),
        Case("schema: track id with spaces", b'{"track_id": "bad id!", "uri": "/x.mp3"}',
             bad_msg, track_id="bad id!"),
        Case("schema: control character in uri",
             b'{"track_id": "h-ctrl", "uri": "/a\\u0000b.mp3"}', bad_msg, track_id="h-ctrl"),
        Case(f"oversized message (> {MAX_MESSAGE_BYTES} bytes)", big, bad_msg),
    ]


def good_cases(clips: list[Path], f: dict[str, Path]) -> list[Case]:
    cases = [Case(f"good clip {i}", ref(f"h-good-{i}", str(p)), (TAGGED,), track_id=f"h-good-{i}")
             for i, p in enumerate(clips)]
    cases.append(Case("file named 'concat:a.mp3|b.mp3' inside the root",
                      ref("h-colon-name", str(f["colon_pipe_name"])), (TAGGED,),
                      track_id="h-colon-name"))
    cases.append(Case("unicode file name", ref("h-unicode-name", str(f["unicode_name"])),
                      (TAGGED,), track_id="h-unicode-name"))
    return cases


def outcome(case: Case, settings, state, dlq_key_of) -> str:
    """What became of one message: ``tagged``, a reason code, or ``nothing``."""
    if case.track_id and case.track_id in state.tracks:
        return TAGGED
    namespace, key = dlq_key_of(case)
    letter = (state.dlq if namespace == "track" else state.dlq_msg).get(key)
    return letter["reason"] if letter else "nothing"


def test_one_worker_survives_every_bad_input_and_tags_the_good_ones(
    stack, demo_model, fault_clips, audio_root, reference, workers, tmp_path, figures
) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    files = make_files(inside, outside, fault_clips[0])
    settings = fault_settings(stack, demo_model, [inside, audio_root],
                              max_file_bytes=MAX_FILE_BYTES, max_message_bytes=MAX_MESSAGE_BYTES)
    bad = hostile_cases(files, inside, outside)
    good = good_cases(fault_clips[:6], files)
    cases = [c for pair in zip(bad, good + [None] * len(bad)) for c in pair if c is not None]
    coords = send_values(settings, [(c.track_id or "raw", c.value) for c in cases])
    for case, coord in zip(cases, coords, strict=True):
        case.coord = coord

    worker = workers.start(settings, "hostile", until_idle=True)
    rc = worker.wait(300)
    state = read_state(connect(settings.redis), settings.redis.key_prefix)

    def dlq_key_of(case: Case) -> tuple[str, str]:
        if case.track_id and case.track_id in state.dlq:
            return "track", case.track_id
        return "msg", f"{settings.kafka.topic}:{case.coord[0]}:{case.coord[1]}"

    got = {c.name: outcome(c, settings, state, dlq_key_of) for c in cases}
    wrong = {c.name: (c.expected, got[c.name]) for c in cases if got[c.name] not in c.expected}
    short = {c.name: state.tracks[c.track_id]["duration_s"] for c in cases
             if c.duration_s and got[c.name] == TAGGED
             and abs(state.tracks[c.track_id]["duration_s"] - c.duration_s) > DURATION_SLACK_S}
    dead = [c for c in cases if got[c.name] != TAGGED]
    on_topic = read_topic(settings, settings.kafka.dlq_topic, len(dead))
    topic_reasons = {(d.source_partition, d.source_offset): d.reason.value
                     for d in (DeadLetter.model_validate_json(r.value) for r in on_topic)}
    topic_wrong = [c.name for c in dead if topic_reasons.get(c.coord) != got[c.name]]
    ends = end_offsets_of(coords)
    done = committed(settings)
    figures("hostile input to one running worker", bad_inputs=len(bad),
            tracks=len(good), lost=sum(1 for c in good if got[c.name] != TAGGED),
            dead_letters=len(dead), wrong_outcomes=len(wrong),
            worker_process_starts=worker.count("worker.starting"), exit_code=rc,
            decoder_restarts=worker.count("decode.child_failed"),
            cases=[{"name": c.name, "expected": list(c.expected), "got": got[c.name]}
                   for c in bad])

    assert rc == 0 and worker.count("worker.starting") == 1, worker.tail()
    assert not wrong, wrong
    assert not short, f"tagged from part of the file only (stored duration_s): {short}"
    # Every bad input is answered by the decoder process: none costs it a restart.
    assert worker.count("decode.child_failed") == 0, worker.tail()
    assert not topic_wrong, f"dead letters missing or different on the DLQ topic: {topic_wrong}"
    assert all(done.get(p, 0) == end for p, end in ends.items()), (done, ends)
    tagged = {c.track_id: str(fault_clips[i]) for i, c in enumerate(good[:6])}
    only_refs = {t: v for t, v in state.tracks.items() if t in tagged}
    lost, problems = agreement_problems(StoreState(tracks=only_refs), tagged, reference)
    assert not lost and not problems, (lost, problems[:5])
    assert not consistency_problems(state), consistency_problems(state)[:5]


def test_decode_timeout_is_dead_lettered_and_the_worker_goes_on(
    stack, demo_model, fault_clips, tmp_path, workers, figures
) -> None:
    """A decode slower than ``decode_timeout_s`` (20 ms for a 30 s mp3) → DECODE_TIMEOUT."""
    from genretag.training.synth import synth_clip

    slow = synth_clip(tmp_path / "thirty-seconds.mp3", "noise", 30.0, seed=21)
    settings = fault_settings(stack, demo_model, [tmp_path], decode_timeout_s=0.02)
    send_values(settings, [("h-slow", ref("h-slow", str(slow))),
                           ("h-after", ref("h-after", str(tmp_path / "missing.mp3")))])
    worker = workers.start(settings, "timeout", until_idle=True)
    rc = worker.wait(300)
    dlq = read_state(connect(settings.redis), settings.redis.key_prefix).dlq
    figures("FFmpeg decode timeout", bad_inputs=1,
            cases=[{"name": "decode slower than decode_timeout_s (20 ms)",
                    "expected": ["decode_timeout"],
                    "got": dlq.get("h-slow", {}).get("reason", "nothing")}])
    assert rc == ALL_DEAD_LETTERED, worker.tail()  # both tracks dead-lettered: scripts notice
    assert dlq["h-slow"]["reason"] == "decode_timeout", dlq.get("h-slow")
    assert dlq["h-after"]["reason"] == "missing_file"


def test_producer_reports_malformed_jsonl_rows_with_line_numbers(
    stack, demo_model, fault_clips, tmp_path, figures
) -> None:
    """``genretag produce rows.jsonl``: bad rows skipped and named by line; --strict sends none."""
    settings = fault_settings(stack, demo_model, [tmp_path])
    good = str(fault_clips[0])
    rows = [
        json.dumps({"track_id": "p-good-1", "uri": good}),         # 1
        "this is not json",                                          # 2
        "[1, 2]",                                                    # 3
        json.dumps({"track_id": "bad id!", "uri": good}),          # 4
        json.dumps({"track_id": "p-no-uri"}),                      # 5
        "",                                                          # 6 (blank: skipped)
        json.dumps({"track_id": "p-ctrl", "uri": "/a\u0001b.mp3"}),  # 7
        json.dumps({"track_id": "p-v2", "uri": good, "schema_version": 2}),  # 8
        json.dumps({"track_id": "p-good-2", "uri": good}),         # 9
        json.dumps({"track_id": "p-good-1", "uri": good}),         # 10 (duplicate id)
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(rows) + "\n")
    bad_lines = [2, 3, 4, 5, 7, 8]
    env = {**os.environ, **settings_env(settings)}

    def produce(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "genretag.cli", "produce", str(path), "--no-progress",
             "--json", *flags], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=180)

    loose = produce()
    strict = produce("--strict")
    report = json.loads(loose.stdout.strip().splitlines()[-1])
    strict_report = json.loads(strict.stdout.strip().splitlines()[-1])
    named = [n for n in bad_lines if f"{path}:{n}:" in loose.stderr]
    figures("producer: malformed JSONL rows", bad_inputs=len(bad_lines),
            rows_named_by_line=len(named))
    assert named == bad_lines, loose.stderr
    for n in (1, 6, 9, 10):
        assert f"{path}:{n}:" not in loose.stderr, loose.stderr
    assert report["enqueued"] == 2, report
    assert strict.returncode != 0 and strict_report["enqueued"] == 0, strict_report
