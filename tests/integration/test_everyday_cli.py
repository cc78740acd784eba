"""First run and everyday use (issue 18, read side of issue 16): the CLI on the real stack.

Every command here goes through ``genretag.cli.main`` (errors become one line and an exit
status) or runs as a subprocess, as a user would type it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genretag.core.logs import PlainFormatter
from genretag.core.store import connect
from tests.store_parts import store_parts
from genretag.cli import build_parser, main
from genretag.cli.stack import free_port
from genretag.producer.ids import path_track_id
from genretag.schemas import ReasonCode
from tests.integration.test_producer import REPO, consume, flags, isolated, tag
from tests.integration.test_read_side import letter, redis_flags

pytestmark = pytest.mark.integration

def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def dead_redis() -> list[str]:
    return ["--redis-url", f"redis://127.0.0.1:{free_port()}/0"]


# -- conventions -------------------------------------------------------------------------------
def test_version_and_python_m_genretag() -> None:
    proc = subprocess.run([sys.executable, "-m", "genretag", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "genretag 0.1.0", proc


def test_global_flags_after_the_subcommand_and_stack_status_shape(
    stack, tmp_path: Path, capsys
) -> None:
    code, out, _ = run(["stack", "status", "--plain-logs", "--log-level", "DEBUG", "--debug"],
                       capsys)
    down = json.loads(out)
    assert code == 1 and down["running"] is False
    assert logging.getLogger().level == logging.DEBUG  # the flag after `status` took effect
    state = Path(os.environ["GENRETAG_STATE_DIR"])  # point the state dir at the running stack
    state.mkdir(parents=True, exist_ok=True)
    (state / "stack.json").write_text(json.dumps({"kafka_port": stack.kafka_port,
                                                  "redis_port": stack.redis_port}))
    code, out, _ = run(["stack", "status"], capsys)
    up = json.loads(out)
    assert code == 0 and up["running"] is True and up["redis"]["up"] and up["kafka"]["up"]
    assert set(up) == set(down) and set(up["kafka"]) == set(down["kafka"])
    assert set(up["redis"]) == set(down["redis"])


def test_plain_logs_keep_the_event_fields() -> None:
    record = logging.LogRecord("worker.loop", logging.WARNING, "", 0, "worker.dead_letter",
                               (), None)
    record.track_id, record.reason, record.detail = "t-1", "disallowed_uri", "outside the roots"
    line = PlainFormatter().format(record)
    assert line == ('WARNING worker.loop: worker.dead_letter track_id=t-1 '
                    'reason=disallowed_uri detail="outside the roots"')


def test_read_commands_list_only_their_settings_and_real_defaults() -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - the registered commands
    dlq_actions = sub["dlq"]._subparsers._group_actions[0].choices  # noqa: SLF001
    for name, cmd in [("tags", sub["tags"]), ("stats", sub["stats"]),
                      ("dlq list", dlq_actions["list"]), ("dlq purge", dlq_actions["purge"])]:
        text = cmd.format_help()
        assert "--kafka" not in text, name
        assert "--redis-url" in text and "--redis-password-file" in text, name
        assert "--redis-password " not in text and "--redis-password\n" not in text, name
    work_help = sub["work"].format_help()
    assert "computed" not in work_help and str(Path.cwd()) in work_help  # allowed_roots' default
    assert "--kafka-sasl-password-file" in work_help


def test_a_secret_comes_from_a_file_not_a_flag(tmp_path: Path, capsys) -> None:
    from genretag.core.cli_settings import settings_from_args
    from genretag.core.settings import RedisSettings

    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    args = build_parser().parse_args(["stats", "--redis-password-file", str(secret)])
    assert settings_from_args(RedisSettings, args).redis.password.get_secret_value() == "s3cret"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stats", "--redis-password", "s3cret"])
    assert "GENRETAG_REDIS_PASSWORD" in capsys.readouterr().err


# -- failures that explain themselves ------------------------------------------------------------
@pytest.mark.parametrize("argv", [["tags", "t1"], ["stats"], ["dlq", "list"],
                                  ["tags", "--genre", "Rock"]])
def test_redis_down_is_one_line_with_the_address_and_exit_3(argv, capsys) -> None:
    dead = dead_redis()
    code, out, err = run([*argv, *dead], capsys)
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and dead[1] in err and "genretag stack status" in err, err
    with pytest.raises(Exception, match="unreachable"):  # --debug: the real exception
        main([*argv, *dead, "--debug"])


def test_broker_down_fails_fast_in_one_line(tmp_path: Path, capsys) -> None:
    song = tmp_path / "a.mp3"
    song.write_bytes(b"x")
    dead = f"127.0.0.1:{free_port()}"
    code, _, err = run(["produce", str(song), "--no-progress", "--kafka-bootstrap-servers", dead,
                        "--allowed-roots", str(tmp_path)], capsys)
    assert code == 3 and err.count("\n") == 1 and dead in err and "is the stack up?" in err


def test_missing_model_says_how_to_get_one(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack)
    code, _, err = run(["work", "--until-idle", "--model", str(tmp_path / "none.pt"),
                        *flags(s)[:4], "--device", "cpu"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err  # a usage error, as in `tag`
    assert "--model PATH" in last
    assert last.startswith("genretag work: model file not found") and "genretag train --demo" in last
    assert "genretag models pull musicnn-msd" in last  # the real-vocabulary model too


def test_tags_exit_1_for_no_tags_and_3_for_redis_down(stack, capsys) -> None:
    s = isolated(stack)
    assert run(["tags", "nope", *redis_flags(s)], capsys)[0] == 1
    assert run(["tags", "nope", *dead_redis()], capsys)[0] == 3


@pytest.mark.parametrize("bad", [["--min-score", "nan"], ["--min-score", "inf"],
                                 ["--limit", "1e20"], ["--limit", "100000000000000000000"]])
def test_out_of_range_numbers_are_usage_errors(bad, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["tags", "--genre", "Rock", *bad, *dead_redis()])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and ("must be" in err or "not a" in err), err


# -- read side ------------------------------------------------------------------------------
def test_unknown_genre_names_the_genres_that_exist(stack, capsys) -> None:
    s = isolated(stack)
    store_parts(connect(s.redis), s.redis.key_prefix).writer.write(
        [tag("r1", "v1", genre="Rock"), tag("j1", "v1", genre="Jazz")])
    code, out, err = run(["tags", "--genre", "jazz", *redis_flags(s)], capsys)
    assert code == 1 and "unknown genre 'jazz'" in err and "Jazz, Rock" in err


def test_tags_by_file_path(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack)
    song = tmp_path / "song.mp3"
    store_parts(connect(s.redis), s.redis.key_prefix).writer.write([tag(path_track_id(song), "v1", str(song))])
    code, out, _ = run(["tags", "--uri", str(song), "--json", *redis_flags(s)], capsys)
    assert code == 0 and json.loads(out)[path_track_id(song)]["uri"] == str(song)


def test_stats_leaves_out_genres_and_versions_no_track_has(stack, capsys) -> None:
    s = isolated(stack)
    store = store_parts(connect(s.redis), s.redis.key_prefix)
    store.writer.write([tag("t1", "v1", genre="Rock")])
    store.writer.write([tag("t1", "v2", genre="Jazz")])  # re-tagged: Rock and v1 are empty now
    code, out, _ = run(["stats", "--json", *redis_flags(s)], capsys)
    got = json.loads(out)
    assert code == 0 and got["genres"] == {"Jazz": 1} and got["models"] == {"v2": 1}
    code, out, _ = run(["stats", *redis_flags(s)], capsys)
    assert "Rock" not in out and "v1" not in out


def test_dlq_survives_non_utf8_values_and_escapes_control_characters(stack, capsys) -> None:
    s = isolated(stack)
    store = store_parts(connect(s.redis), s.redis.key_prefix)
    store.writer.write([], dead_letters=[letter("ok1", ReasonCode.UNDECODABLE, 1)])
    raw = connect(s.redis).connection_pool.get_connection()
    raw.send_command("HSET", store.keys.dlq, "binary", b"\xff\xfe{not utf-8")
    raw.read_response()
    connect(s.redis).connection_pool.release(raw)
    evil = "\x1b[31mred\nfake-line"
    store.client.hset(store.keys.dlq, evil,
                      letter("x", ReasonCode.TOO_SHORT, 2).model_dump_json())
    code, out, _ = run(["dlq", "list", *redis_flags(s)], capsys)
    assert code == 0 and "\x1b" not in out and "\\x1b[31mred\\nfake-line" in out
    assert len(out.splitlines()) == 4 and "binary" in out and "unreadable" in out
    code, out, _ = run(["stats", "--json", *redis_flags(s)], capsys)
    assert code == 0 and json.loads(out)["dead_letters"]["by_reason"]["unreadable"] == 1


def test_dlq_purge_by_reason_and_replay_dry_run_says_would(stack, capsys) -> None:
    s = isolated(stack)
    store = store_parts(connect(s.redis), s.redis.key_prefix)
    store.writer.write([], dead_letters=[letter("a", ReasonCode.UNDECODABLE, 1),
                                  letter("b", ReasonCode.TOO_SHORT, 2)])
    code, out, _ = run(["dlq", "replay", "--dry-run", *flags(s)], capsys)
    assert code == 0 and "would be replayed" in out and store.dead.count() == 2
    code, out, _ = run(["dlq", "purge", "--reason", "too_short", "--dry-run", *redis_flags(s)],
                       capsys)
    assert "would be purged" in out and store.dead.count() == 2
    code, out, _ = run(["dlq", "purge", "--reason", "too_short", *redis_flags(s)], capsys)
    assert code == 0 and "purged 1" in out
    assert [e.key for e in store.dead.scan()] == ["a"]
    run(["dlq", "purge", *redis_flags(s)], capsys)
    assert store.dead.count() == 0


# -- produce ------------------------------------------------------------------------------------
def test_produce_one_file_and_the_allowed_roots_warning(stack, tmp_path: Path, capsys) -> None:
    s = isolated(stack)
    song = tmp_path / "music" / "one.mp3"
    song.parent.mkdir()
    song.write_bytes(b"not checked by the producer")
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    code, out, err = run(["produce", str(song), "--no-progress", "--json",
                          "--allowed-roots", str(elsewhere), *flags(s)], capsys)
    assert code == 0 and json.loads(out)["enqueued"] == 1
    assert "1 track(s) outside the worker's allowed roots" in err
    assert "GENRETAG_ALLOWED_ROOTS" in err and str(song) in err
    [(key, value)] = consume(s, 1)
    assert key == path_track_id(song) and value["uri"] == str(song)

    code, out, err = run(["produce", str(song), "--strict", "--no-progress", "--json",
                          "--allowed-roots", str(elsewhere), *flags(s)], capsys)
    assert code == 1 and json.loads(out)["strict_aborted"] and "GENRETAG_ALLOWED_ROOTS" in err
    code, out, err = run(["produce", str(song), "--strict", "--no-progress", "--dry-run",
                          "--allowed-roots", str(song.parent), *flags(s)], capsys)
    assert code == 0 and "allowed roots" not in err


def test_backfill_refuses_an_unknown_version_unless_forced(stack, tmp_path: Path,
                                                           capsys) -> None:
    s = isolated(stack)
    store_parts(connect(s.redis), s.redis.key_prefix).writer.write([tag("t1", "v1", "/m/t1.mp3")])
    code, out, err = run(["produce", "--backfill", "--model-version", "nosuchversion",
                          "--no-progress", "--dry-run", *flags(s)], capsys)
    assert code == 2 and out == "" and "nosuchversion" in err and "v1" in err
    code, out, _ = run(["produce", "--backfill", "--model-version", "nosuchversion", "--force",
                        "--no-progress", "--dry-run", "--json", *flags(s)], capsys)
    assert code == 0 and json.loads(out)["selected"] == 1


# -- the stack file from any folder -----------------------------------------------------------
def test_commands_find_the_stack_from_another_folder(stack, tmp_path: Path) -> None:
    from genretag.core.settings import remember_stack

    state = tmp_path / "checkout" / ".genretag"
    state.mkdir(parents=True)
    (state / "stack.json").write_text(json.dumps({"kafka_port": stack.kafka_port,
                                                  "redis_port": stack.redis_port}))
    (state / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in stack.env().items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENRETAG_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    env["PYTHONPATH"] = str(REPO)
    os.environ["XDG_STATE_HOME"] = env["XDG_STATE_HOME"]
    try:
        remember_stack(state)  # what `stack up` does
    finally:
        del os.environ["XDG_STATE_HOME"]
    music = tmp_path / "music"
    music.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "genretag", "tags", "no-such-track", "--redis-key-prefix",
         "elsewhere:"], cwd=music, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "(no tags)" in proc.stdout, proc.stderr  # reached Redis
    status = subprocess.run([sys.executable, "-m", "genretag", "stack", "status"], cwd=music,
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and json.loads(status.stdout)["state_dir"] == str(state)


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for i in range(3):
        (music / f"{i}.mp3").write_bytes(b"x")
    env = {k: v for k, v in os.environ.items()} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "genretag", "produce", str(music), "--dry-run",
         "--allowed-roots", str(music), "--log-level", "WARNING"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "3 track(s) would be enqueued" in proc.stdout, proc.stderr
    assert "\r" not in proc.stderr and "track/s" not in proc.stderr, proc.stderr


def test_backfill_with_redis_down_is_one_line(capsys) -> None:
    dead = dead_redis()
    code, out, err = run(["produce", "--backfill", "--model-version", "v1", "--dry-run",
                          "--no-progress", *dead], capsys)
    assert code == 3 and out == "" and err.count("\n") == 1 and dead[1] in err, err
