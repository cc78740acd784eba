"""`genretag produce` on real Tansu + redis-server: every source kind, strictness, backfill.

What was sent is checked by consuming the topic from the earliest offset with a fresh group.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from genretag.cli import build_parser, main
from genretag.core.kafka import ensure_topics, make_consumer, make_producer
from genretag.core.settings import load_settings
from genretag.producer.settings import ProducerSettings
from genretag.core.store import connect
from tests.store_parts import store_parts
from genretag.producer.send import AckingSender
from genretag.producer.ids import fma_track_id, path_track_id
from genretag.schemas import TagRecord, TrackRef

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SENTINEL = "zz-sentinel"


# -- helpers (also used by test_read_side.py) ----------------------------------------------
def isolated(stack, **overrides) -> ProducerSettings:
    """Settings on the test stack with a fresh topic and key prefix."""
    run = uuid.uuid4().hex[:8]
    base = dict(kafka_bootstrap_servers=stack.bootstrap, redis_url=stack.redis_url,
                kafka_topic=f"tracks-{run}", kafka_dlq_topic=f"dlq-{run}",
                redis_key_prefix=f"p{run}:", kafka_partitions=1)
    base.update(overrides)
    return load_settings(ProducerSettings, **base)


def flags(settings) -> list[str]:
    """The CLI flags that point a command at ``settings``' stack, topic and prefix."""
    return ["--kafka-bootstrap-servers", ",".join(settings.kafka.bootstrap_servers),
            "--redis-url", settings.redis.url, "--kafka-topic", settings.kafka.topic,
            "--redis-key-prefix", settings.redis.key_prefix,
            "--kafka-partitions", str(settings.kafka.partitions)]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a genretag subcommand in-process (as the entry point does, minus log setup)."""
    args = build_parser().parse_args(argv)
    code = int(args.func(args) or 0)
    out, err = capsys.readouterr()
    return code, out, err


def consume(settings, expected: int, timeout_s: float = 20.0, settle_s: float = 1.0,
            until_key: str | None = None) -> list[tuple[str, dict]]:
    """(key, value) of the topic read from earliest by a fresh group: ``expected`` messages
    (then ``settle_s`` more to catch extras) or, with ``until_key``, up to that key."""
    consumer = make_consumer(settings.kafka, group_id=f"check-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([settings.kafka.topic])
    out: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    settle_end = None
    try:
        while time.monotonic() < (settle_end or deadline):
            for batch in consumer.poll(timeout_ms=300).values():
                out += [(m.key.decode(), json.loads(m.value)) for m in batch]
            if until_key is not None and any(k == until_key for k, _ in out):
                break
            if until_key is None and settle_end is None and len(out) >= expected:
                settle_end = time.monotonic() + settle_s
    finally:
        consumer.close()
    return out


def send_sentinel(settings) -> None:
    """One marker message: on a one-partition topic, everything sent before it precedes it."""
    producer = make_producer(settings.kafka)
    ref = TrackRef(track_id=SENTINEL, uri="/dev/null")
    producer.send(settings.kafka.topic, key=SENTINEL.encode(), value=ref.model_dump_json().encode())
    producer.flush()
    producer.close()


def tag(tid: str, version: str, uri: str | None = "/m/x.mp3", genre: str = "Rock",
        p: float = 0.9) -> TagRecord:
    return TagRecord(track_id=tid, model_version=version, probabilities={genre: p},
                     labels=[genre] if p >= 0.5 else [], uri=uri)


# -- tests -------------------------------------------------------------------------------------
def test_directory_twice_same_ids_keyed_partitioned(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack, kafka_partitions=3)
    music = tmp_path / "music"
    files = [music / "a" / "one.mp3", music / "a" / "b" / "two.FLAC", music / "three.wav"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"not decoded by the producer")
    (music / "cover.jpg").write_bytes(b"x")
    for _ in range(2):
        code, out, _ = cli(["produce", str(music), "--no-progress", "--json", *flags(s)], capsys)
        assert code == 0 and json.loads(out)["enqueued"] == 3
    got = consume(s, 6)
    assert len(got) == 6
    ids = {path_track_id(f) for f in files}
    assert {k for k, _ in got} == ids and all(k == v["track_id"] for k, v in got)
    assert sorted(k for k, _ in got) == sorted(list(ids) * 2)  # same ids both runs
    assert {v["uri"] for _, v in got} == {str(f.resolve()) for f in files}
    consumer = make_consumer(s.kafka, group_id="meta")
    try:
        assert consumer.partitions_for_topic(s.kafka.topic) == {0, 1, 2}
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def fma_fx(tmp_path_factory):
    from tests.fixtures.fma import make_fma_fixture

    return make_fma_fixture(tmp_path_factory.mktemp("fma"), n_per_genre=3,
                            genres=("Rock", "Hip-Hop"), seconds=1.0, n_medium_only=1,
                            n_large_only=1, workers=2)


def test_fma_tracks_csv_subset_split_metadata(stack, fma_fx, capsys) -> None:
    s = isolated(stack)
    code, out, _ = cli(["produce", str(fma_fx.tracks_csv), "--subset", "small", "--split",
                        "training", "--no-progress", "--json", *flags(s)], capsys)
    wanted = fma_fx.ids("small", "training")  # includes the broken clips: the worker judges them
    assert code == 0 and json.loads(out)["enqueued"] == len(wanted)
    got = dict(consume(s, len(wanted)))
    assert sorted(got) == sorted(fma_track_id(t) for t in wanted)
    for t in wanted:
        ref = TrackRef.model_validate(got[fma_track_id(t)])
        assert ref.uri == str(fma_fx.path(t).resolve())
        assert ref.metadata["genre_top"] == fma_fx.genre_top[t]
        assert (ref.metadata["subset"], ref.metadata["split"]) == ("small", "training")
        assert ref.metadata["title"] and ref.metadata["artist"]


def test_fma_bad_rows_reported_with_line_and_strict_sends_nothing(
    stack, fma_fx, tmp_path: Path, capsys
) -> None:
    meta = tmp_path / "fma_metadata"
    meta.mkdir()
    bad_csv = meta / "tracks.csv"
    text = fma_fx.tracks_csv.read_text()
    n_lines = text.count("\n")
    bad_csv.write_text(text + "999999,not,enough,fields\n" + "abc" + "," * 52 + "\n")
    args = [str(bad_csv), "--audio-dir", str(fma_fx.audio_dir), "--no-progress", "--json",
            "--allowed-roots", str(fma_fx.audio_dir)]  # the worker's roots hold the audio

    s = isolated(stack)
    ensure_topics(s.kafka, [s.kafka.topic])
    code, out, err = cli(["produce", *args, "--strict", *flags(s)], capsys)
    report = json.loads(out)
    assert code == 1 and report["strict_aborted"] and report["enqueued"] == 0
    assert f"error: {bad_csv}:{n_lines + 1}: expected 53 fields, got 4" in err
    assert f"error: {bad_csv}:{n_lines + 2}: track_id 'abc' is not an integer" in err
    send_sentinel(s)
    assert [k for k, _ in consume(s, 1, until_key=SENTINEL)] == [SENTINEL]

    code, out, err = cli(["produce", *args, *flags(s)], capsys)  # not strict: the rest goes
    report = json.loads(out)
    assert code == 0 and report["skipped"] == {"invalid": 2}
    assert report["enqueued"] == len(fma_fx.ids("small"))


def test_jsonl_file_and_stdin(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join([
        json.dumps({"track_id": "j1", "uri": "/m/1.mp3", "metadata": {"genre": "Jazz"}}),
        json.dumps({"uri": "/m/2.mp3"}),
        "{broken",
    ]) + "\n")
    code, out, err = cli(["produce", str(catalog), "--no-progress", *flags(s)], capsys)
    assert code == 0 and out.startswith("enqueued 2 track(s)") and "invalid 1" in out
    assert f"{catalog}:3: invalid JSON" in err

    stdin = f'{json.dumps({"track_id": "s1", "uri": "/m/3.mp3"})}\n{tmp_path}/4.mp3\n'
    proc = subprocess.run(
        [str(REPO / ".venv/bin/genretag"), "--log-level", "WARNING", "produce", "-",
         "--no-progress", "--json", *flags(s)],
        input=stdin, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["enqueued"] == 2
    got = dict(consume(s, 4))
    assert sorted(got) == sorted(["j1", path_track_id("/m/2.mp3"), "s1",
                                  path_track_id(tmp_path / "4.mp3")])
    assert got["j1"]["metadata"] == {"genre": "Jazz"}


def test_limit_and_dry_run(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack)
    catalog = tmp_path / "c.jsonl"
    catalog.write_text("".join(json.dumps({"track_id": f"t{i}", "uri": f"/m/{i}.mp3"}) + "\n"
                               for i in range(10)))
    code, out, _ = cli(["produce", str(catalog), "--dry-run", "--no-progress", *flags(s)], capsys)
    assert code == 0 and out.startswith("dry run: 10 track(s) would be enqueued")
    code, out, _ = cli(["produce", str(catalog), "--limit", "3", "--max-rate", "50",
                        "--no-progress", "--json", *flags(s)], capsys)
    assert code == 0 and json.loads(out)["enqueued"] == 3
    assert [k for k, _ in consume(s, 3)] == ["t0", "t1", "t2"]  # the dry run sent nothing


def test_a_message_up_to_the_cap_is_sent_past_the_client_default_request_limit(
        stack, tmp_path: Path, capsys) -> None:
    """Our cap decides what is sendable: a 1.2 MB message under a 2 MiB cap is acknowledged,
    although kafka-python refuses requests over 1 MiB by default (the producer's request limit
    sits above the dead-letter bound, docs/reliability.md)."""
    s = isolated(stack)
    catalog = tmp_path / "c.jsonl"
    huge = {"track_id": "big", "uri": "/m/big.mp3", "metadata": {"blob": "x" * 1_200_000}}
    catalog.write_text(json.dumps({"track_id": "ok", "uri": "/m/ok.mp3"}) + "\n"
                       + json.dumps(huge) + "\n")
    code, out, err = cli(["produce", str(catalog), "--no-progress", "--json",
                          "--max-message-bytes", str(2 << 20), *flags(s)], capsys)
    report = json.loads(out)
    assert code == 0 and report["failed"] == 0 and report["enqueued"] == 2, err
    got = dict(consume(s, 2))
    assert set(got) == {"ok", "big"} and len(got["big"]["metadata"]["blob"]) == 1_200_000


def test_a_message_the_producer_refuses_is_counted_and_named(stack) -> None:
    """Not acknowledged is never silent: a message over the producer's request limit is counted
    as failed and named with the broker client's reason (publish exits 1 on any failure)."""
    s = isolated(stack)
    errors: list[str] = []
    sender = AckingSender(s.kafka, s.kafka.topic, on_error=errors.append,
                          max_request_size=1_000_000)
    sender.send("ok", b'{"track_id": "ok", "uri": "/m/ok.mp3"}')
    sender.send("big", b"x" * 1_200_000)
    sender.close(20.0)
    assert (sender.acked, sender.failed) == (1, 1)
    assert errors == [errors[0]] and errors[0].startswith("big: not acknowledged: "
                                                          "MessageSizeTooLargeError")


def test_backfill_selects_exactly_the_stale_tracks(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack)
    store = store_parts(connect(s.redis), s.redis.key_prefix)
    store.writer.write([
        tag("cur", "v2", "/m/cur.mp3"),
        tag("old1", "v1", "/m/old1.mp3"),
        tag("old0", "v0", "/m/old0.mp3", p=0.2),
        tag("old_nouri", "v1", None),
    ])
    # Without a source: the stale tagged tracks, by their stored uri.
    code, out, _ = cli(["produce", "--backfill", "--model-version", "v2", "--no-progress",
                        "--json", *flags(s)], capsys)
    report = json.loads(out)
    assert code == 0 and report["enqueued"] == 2 and report["skipped"] == {"no_uri": 1}

    # With a source: the source's tracks that have no tags or stale ones.
    catalog = tmp_path / "c.jsonl"
    catalog.write_text("".join(json.dumps({"track_id": t, "uri": f"/m/{t}.mp3"}) + "\n"
                               for t in ("cur", "old1", "old_nouri", "new")))
    code, out, _ = cli(["produce", str(catalog), "--backfill", "--model-version", "v2",
                        "--no-progress", "--json", *flags(s)], capsys)
    report = json.loads(out)
    assert code == 0 and report["enqueued"] == 3 and report["skipped"] == {"up_to_date": 1}

    got = consume(s, 5)  # one partition: the first run's messages come first
    assert len(got) == 5
    first, second = dict(got[:2]), dict(got[2:])
    assert sorted(first) == ["old0", "old1"]
    assert first["old1"]["uri"] == "/m/old1.mp3"
    assert first["old1"]["metadata"]["previous_model_version"] == "v1"
    assert sorted(second) == ["new", "old1", "old_nouri"]


def test_usage_errors_exit_2(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack)
    for argv, message in [
        (["produce", *flags(s)], "give a SOURCE"),
        (["produce", str(tmp_path / "nope"), *flags(s)], "no such file"),
        (["produce", "--backfill", *flags(s)], "go together"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "tracks.csv").write_text("a,b\n1,2\n")
    assert main(["produce", str(tmp_path / "tracks.csv"), "--audio-dir", str(tmp_path),
                 *flags(s)]) == 2
    assert "three header rows" in capsys.readouterr().err


def test_names_that_are_not_utf8_are_reported_and_the_rest_enqueued(stack, tmp_path: Path,
                                                                     capsys) -> None:
    """A directory entry or stdin line that is not UTF-8 is one bad row, not the end of the run."""
    import os
    import sys

    s = isolated(stack)
    folder = tmp_path / "lib"
    folder.mkdir()
    for name in (b"a.mp3", b"b\xff.mp3", b"c.mp3"):
        (folder / os.fsdecode(name)).write_bytes(b"x")
    code, out, err = cli(["produce", str(folder), "--no-progress", *flags(s)], capsys)
    assert code == 0 and out.startswith("enqueued 2 track(s)") and "invalid 1" in out
    assert "not valid UTF-8" in err and "b\\xff.mp3" in err

    stdin = (json.dumps({"track_id": "s1", "uri": "/m/3.mp3"}).encode() + b"\n"
             + b"/m/\xfe\xff.mp3\n" + json.dumps({"track_id": "s2", "uri": "/m/4.mp3"}).encode())
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from genretag.cli import main; sys.exit(main())",
         "--log-level", "WARNING", "produce", "-", "--no-progress", "--json", *flags(s)],
        input=stdin, capture_output=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["enqueued"] == 2 and report["skipped"]["invalid"] == 1, report
    got = dict(consume(s, 4))
    assert sorted(got) == sorted(["s1", "s2", path_track_id(folder / "a.mp3"),
                                  path_track_id(folder / "c.mp3")])
