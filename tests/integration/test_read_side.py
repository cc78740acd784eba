"""`genretag tags`, `stats` and `dlq list|replay` on real redis-server and Tansu."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from genretag.cli.read_cli import NothingFound

from genretag.core.store import connect
from tests.store_parts import store_parts
from genretag.schemas import DeadLetter, ReasonCode, TagRecord, TrackRef
from tests.integration.test_producer import cli, consume, flags, isolated, tag

pytestmark = pytest.mark.integration


def letter(tid: str | None, reason: ReasonCode, offset: int, with_ref: bool = True,
           minutes_ago: int = 0) -> DeadLetter:
    ref = TrackRef(track_id=tid, uri=f"/m/{tid}.mp3", metadata={"k": tid}) if with_ref else None
    return DeadLetter(
        reason=reason, detail=f"{reason.value} detail", stage="decode" if with_ref else "parse",
        track_id=tid, original=ref.model_dump_json() if ref else "not json",
        track=ref, source_topic="tracks", source_partition=0, source_offset=offset,
        worker_id="w1", failed_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )


def redis_flags(settings) -> list[str]:
    """The flags of a Redis-only read command (`tags`, `stats`, `dlq list`): no Kafka flags."""
    return ["--redis-url", settings.redis.url, "--redis-key-prefix", settings.redis.key_prefix]


@pytest.fixture
def populated(stack):
    """Nine tagged tracks over two model versions and three genres, plus four dead letters."""
    s = isolated(stack)
    store = store_parts(connect(s.redis), s.redis.key_prefix)
    store.writer.write(
        [tag(f"r{i}", "v2", genre="Rock", p=i / 10) for i in range(5, 10)]  # 0.5 … 0.9
        + [tag(f"j{i}", "v1", genre="Jazz", p=0.6 + i / 10) for i in range(3)]
        + [tag("q", "v1", genre="Pop", p=0.3)],  # below threshold: no genre membership
        dead_letters=[
            letter("bad1", ReasonCode.UNDECODABLE, 1, minutes_ago=5),
            letter("bad2", ReasonCode.UNDECODABLE, 2, minutes_ago=1),
            letter("short1", ReasonCode.TOO_SHORT, 3, minutes_ago=3),
            letter(None, ReasonCode.BAD_MESSAGE, 4, with_ref=False, minutes_ago=10),
        ],
    )
    return s, store


def test_tags_by_genre_order_min_score_limit(populated, capsys) -> None:
    s, _ = populated
    code, out, _ = cli(["tags", "--genre", "Rock", "--json", *redis_flags(s)], capsys)
    assert code == 0
    assert [r["track_id"] for r in json.loads(out)] == ["r9", "r8", "r7", "r6", "r5"]
    code, out, _ = cli(["tags", "--genre", "Rock", "--min-score", "0.65", "--limit", "2",
                        "--json", *redis_flags(s)], capsys)
    assert json.loads(out) == [{"track_id": "r9", "score": 0.9}, {"track_id": "r8", "score": 0.8}]
    code, out, _ = cli(["tags", "--genre", "Rock", "--limit", "3", *redis_flags(s)], capsys)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["r9", "r8", "r7"]
    code, out, _ = cli(["tags", "--genre", "Rock", "--limit", "3", "--offset", "3", "--json",
                        *redis_flags(s)], capsys)  # the next page
    assert [r["track_id"] for r in json.loads(out)] == ["r6", "r5"]


def test_tags_by_mood_tag_and_kind(stack, capsys) -> None:
    s = isolated(stack)
    store = store_parts(connect(s.redis), s.redis.key_prefix, {"happy": "mood", "sad": "mood"})
    store.writer.write([
        TagRecord(track_id="a", model_version="m", probabilities={"rock": 0.9, "happy": 0.7},
                  labels=["rock", "happy"]),
        TagRecord(track_id="b", model_version="m", probabilities={"rock": 0.6, "happy": 0.8,
                                                                   "sad": 0.4},
                  labels=["happy", "rock", "sad"]),
    ])
    code, out, _ = cli(["tags", "--genre", "rock", "--json", *redis_flags(s)], capsys)
    assert code == 0 and [r["track_id"] for r in json.loads(out)] == ["a", "b"]
    code, out, _ = cli(["tags", "--tag", "happy", "--json", *redis_flags(s)], capsys)
    assert code == 0 and json.loads(out) == [{"track_id": "b", "score": 0.8},
                                             {"track_id": "a", "score": 0.7}]
    with pytest.raises(NothingFound, match="'happy' is a mood tag, not a genre"):
        cli(["tags", "--genre", "happy", "--json", *redis_flags(s)], capsys)  # exit 1
    assert capsys.readouterr().out == "[]\n"  # --json: valid JSON even when empty
    code, out, _ = cli(["tags", "--kind", "mood", "--json", *redis_flags(s)], capsys)
    assert code == 0 and json.loads(out) == {"happy": 2, "sad": 1}
    code, out, _ = cli(["tags", "--kind", "mood", *redis_flags(s)], capsys)
    assert out.splitlines()[1:] == ["happy                            2",
                                    "sad                              1"]


def test_empty_answers_exit_1_with_what_exists_and_valid_json(stack, capsys) -> None:
    """--kind, --tag and --genre answer alike when nothing matches: exit 1 (through main),
    one line saying what exists instead, and with --json still a valid (empty) JSON value."""
    from genretag.cli import main

    s = isolated(stack)
    store = store_parts(connect(s.redis), s.redis.key_prefix, {"happy": "mood", "sad": "mood"})
    store.writer.write([TagRecord(track_id="a", model_version="m", labels=["rock", "happy"],
                                  probabilities={"rock": 0.9, "happy": 0.7, "sad": 0.1})])
    cases = {
        ("--kind", "era"): ("{}", "no track is tagged with any era label yet (a label must reach "
                            "its threshold); kinds with tagged tracks: genre (1 label), mood "
                            "(1 label)"),
        ("--tag", "nosuchtag"): ("[]", "unknown tag 'nosuchtag'; tags with tracks: happy"),
        ("--tag", "rock"): ("[]", "'rock' is a genre: `genretag tags --genre rock`"),
        ("--genre", "happy"): ("[]", "'happy' is a mood tag, not a genre: "
                               "`genretag tags --tag happy`"),
        ("--genre", "jazz"): ("[]", "unknown genre 'jazz'; genres with tracks: rock"),
        ("--genre", "rock", "--min-score", "0.95"): (
            "[]", "no track has 'rock' with a score of at least 0.95"),
        ("--tag", "happy", "--min-score", "0.8"): (
            "[]", "no track has 'happy' with a score of at least 0.8"),
    }
    for args, (empty, why) in cases.items():
        capsys.readouterr()
        assert main(["tags", *args, *redis_flags(s)]) == 1, args
        out, err = capsys.readouterr()
        assert out == "" and err.strip() == f"genretag tags: {why}", (args, err)
        assert main(["tags", *args, "--json", *redis_flags(s)]) == 1, args
        out, err = capsys.readouterr()
        assert json.loads(out) == json.loads(empty) and why in err, args
    assert main(["tags", "--tag", "happy", *redis_flags(s)]) == 0  # found: exit 0


def test_tags_of_tracks_and_missing_ones(populated, capsys) -> None:
    s, _ = populated
    code, out, _ = cli(["tags", "r7", "j2", "--json", *redis_flags(s)], capsys)
    data = json.loads(out)
    assert code == 0 and data["r7"]["labels"] == ["Rock"] and data["j2"]["model_version"] == "v1"
    code, out, _ = cli(["tags", "r7", "nope", *redis_flags(s)], capsys)
    assert code == 1 and "(no tags)" in out.splitlines()[2]


def test_stats_counts(populated, capsys) -> None:
    s, _ = populated
    code, out, _ = cli(["stats", "--json", *redis_flags(s)], capsys)
    assert code == 0
    assert json.loads(out) == {
        "tracks": 9,
        "genres": {"Rock": 5, "Jazz": 3},
        "models": {"v2": 5, "v1": 4},
        "dead_letters": {"total": 4,
                         "by_reason": {"undecodable": 2, "bad_message": 1, "too_short": 1}},
    }
    code, out, _ = cli(["stats", *redis_flags(s)], capsys)
    assert "tracks tagged: 9" in out and "undecodable" in out


def test_dlq_list_filters_newest_first(populated, capsys) -> None:
    s, _ = populated
    code, out, _ = cli(["dlq", "list", "--json", *redis_flags(s)], capsys)
    assert [e["key"] for e in json.loads(out)] == ["bad2", "short1", "bad1", "tracks:0:4"]
    code, out, _ = cli(["dlq", "list", "--reason", "undecodable", "--limit", "1", "--json",
                        *redis_flags(s)], capsys)
    assert [(e["key"], e["reason"]) for e in json.loads(out)] == [("bad2", "undecodable")]
    code, out, _ = cli(["dlq", "list", *redis_flags(s)], capsys)
    assert code == 0 and out.splitlines()[1].split()[:3] == ["bad2", "undecodable", "decode"]


def test_dlq_replay_round_trip(populated, capsys) -> None:
    s, store = populated
    code, out, _ = cli(["dlq", "replay", "--reason", "undecodable", "--dry-run", "--json",
                        *flags(s)], capsys)
    assert code == 0 and json.loads(out)["replayed"] == 2
    assert store.dead.count() == 4  # the dry run removed nothing

    code, out, _ = cli(["dlq", "replay", "--reason", "undecodable", "--json", *flags(s)], capsys)
    report = json.loads(out)
    assert code == 0 and (report["replayed"], report["removed"]) == (2, 2)
    assert sorted(e.key for e in store.dead.scan()) == ["short1", "tracks:0:4"]

    code, out, _ = cli(["dlq", "replay", *flags(s)], capsys)  # the rest
    assert code == 0
    assert "replayed 1 dead letter(s)" in out and "1 not replayable (no TrackRef)" in out
    assert "tracks:0:4: bad_message" in out
    assert [e.key for e in store.dead.scan()] == ["tracks:0:4"]  # kept: nothing to send

    got = consume(s, 3)  # exactly the three TrackRefs (the dry run sent nothing)
    assert sorted(k for k, _ in got) == ["bad1", "bad2", "short1"]
    for key, value in got:
        ref = TrackRef.model_validate(value)
        assert (ref.track_id, ref.uri, ref.metadata) == (key, f"/m/{key}.mp3", {"k": key})


def test_replay_keeps_a_letter_replaced_meanwhile(populated) -> None:
    """The compare-and-delete: a newer failure of the same track is not removed."""
    _, store = populated
    entry = next(e for e in store.dead.scan() if e.key == "bad1")
    store.writer.write([], dead_letters=[letter("bad1", ReasonCode.SILENT, 9)])
    assert not store.dead.remove_if_unchanged(entry)
    assert store.dead.remove_if_unchanged(next(e for e in store.dead.scan() if e.key == "bad1"))
    assert "bad1" not in {e.key for e in store.dead.scan()}


def test_dead_letter_namespaces_never_overwrite_each_other(populated, capsys) -> None:
    """An unparsed message's id is never a key; a track id that looks like coordinates is not one."""
    s, store = populated
    # A schema-invalid message claiming the id of a real track's replayable letter ("bad1"),
    # and a real track whose id is the coordinates of the unparsed letter already stored.
    forged = letter("bad1", ReasonCode.BAD_MESSAGE, 77, with_ref=False)
    lookalike = letter("tracks:0:4", ReasonCode.SILENT, 5)
    store.writer.write([], dead_letters=[forged, lookalike])
    by_track, by_message = store.keys.dlq, store.keys.dlq_msg
    entries = {(e.slot.hash_key, e.key): e.reason for e in store.dead.scan()}
    assert entries[(by_track, "bad1")] == "undecodable"  # the replayable letter is intact
    assert entries[(by_message, "tracks:0:77")] == "bad_message"
    assert entries[(by_message, "tracks:0:4")] == "bad_message"  # not replaced by the track's
    assert entries[(by_track, "tracks:0:4")] == "silent"
    assert store.dead.count() == 6
    code, out, _ = cli(["dlq", "replay", "--reason", "undecodable", "--json", *flags(s)], capsys)
    assert code == 0 and json.loads(out)["removed"] == 2
    left = {(e.slot.hash_key, e.key) for e in store.dead.scan()}
    assert (by_track, "bad1") not in left and (by_message, "tracks:0:77") in left
    code, out, _ = cli(["dlq", "list", "--json", *redis_flags(s)], capsys)
    assert code == 0 and len(json.loads(out)) == 4


def test_dlq_purge_removes_letters_of_messages_that_did_not_parse(populated, capsys) -> None:
    """Letters keyed by message coordinates (``P dlq:msg``) are purged from their own hash,
    never looked for under a track id and reported as kept."""
    s, store = populated
    code, out, _ = cli(["dlq", "purge", "--reason", "bad_message", *redis_flags(s)], capsys)
    assert code == 0 and "purged 1 dead letter(s)" in out and "kept" not in out
    assert [e.reason for e in store.dead.scan()].count("bad_message") == 0
    assert store.client.hlen(store.keys.dlq_msg) == 0 and store.dead.count() == 3
