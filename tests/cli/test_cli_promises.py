"""The command line keeps its promises: one vocabulary for the model file, exit statuses from
one table, no traceback on a closed pipe, help that states defaults and env variables, logs
that fit where they go, and `models pull` without --out."""

from __future__ import annotations

import argparse
import ast
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from genretag.cli import build_parser, main
from genretag.cli.main import hoist_global_flags
from genretag.core import errors
from genretag.core.exits import EXIT_CODES, Exit, exit_table_markdown
from genretag.core.logs import wants_json
from genretag.worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]


def genretag(args: list[str], cwd: Path = REPO, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()} | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "genretag", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, **kwargs)


def subcommand_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of every command and action, e.g. ('dlq', 'list')."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subcommand_parsers(sub, (*path, name))


# -- the model file is --model everywhere ---------------------------------------------------------
def test_work_takes_model_and_keeps_model_path_as_a_deprecated_alias(tmp_path, capsys) -> None:
    from genretag.core.cli_settings import settings_from_args

    args = build_parser().parse_args(["work", "--model", str(tmp_path / "m.pt")])
    assert settings_from_args(WorkerSettings, args).model.path == tmp_path / "m.pt"
    assert capsys.readouterr().err == ""
    args = build_parser().parse_args(["work", "--model-path", str(tmp_path / "old.pt")])
    assert settings_from_args(WorkerSettings, args).model.path == tmp_path / "old.pt"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["genretag work: --model-path is deprecated and goes in the next release; "
                   "use --model"]
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["work"]
                         .format_help().split())
    assert "--model PATH The model artifact file (TorchScript). [env GENRETAG_MODEL_PATH;" in help_text
    assert "--model-path MODEL_PATH" not in help_text  # the alias is not advertised as a flag


def test_the_env_variable_keeps_its_name(tmp_path, monkeypatch) -> None:
    from genretag.core.cli_settings import settings_from_args

    monkeypatch.setenv("GENRETAG_MODEL_PATH", str(tmp_path / "env.pt"))
    args = build_parser().parse_args(["work"])
    assert settings_from_args(WorkerSettings, args).model.path == tmp_path / "env.pt"


def test_replicas_get_the_new_flag(tmp_path) -> None:
    from genretag.core.cli_settings import settings_from_args
    from genretag.worker.cli import replica_argv

    args = build_parser().parse_args(hoist_global_flags([
        "work", "--model-path", str(tmp_path / "m.pt"), "--log-format", "json",
        "--no-optimize-model"]))
    argv = replica_argv(args, settings_from_args(WorkerSettings, args), 0)
    assert argv[argv.index("--model") + 1] == str(tmp_path / "m.pt")
    assert "--model-path" not in argv and "--no-optimize-model" in argv
    assert argv[argv.index("--log-format") + 1] == "json"


@pytest.mark.parametrize("command", [["work", "--until-idle"], ["tag", "x.mp3"]])
def test_a_missing_model_is_a_usage_error_in_every_command(command, tmp_path, capsys) -> None:
    (tmp_path / "x.mp3").write_bytes(b"x")
    argv = [*command, "--model", str(tmp_path / "none.pt")]
    argv = [tmp_path / "x.mp3" if a == "x.mp3" else a for a in argv]
    assert main([str(a) for a in argv]) == Exit.USAGE == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"genretag {command[0]}: model file not found: {tmp_path}")
    assert "--model PATH" in err[-1] and "genretag models pull musicnn-msd" in err[-1]


# -- exit statuses --------------------------------------------------------------------------------
def _error_classes() -> list[type]:
    import genretag.cli.read_cli  # noqa: F401 - their error classes register as subclasses
    import genretag.core.artifact  # noqa: F401
    import genretag.core.reach  # noqa: F401

    todo, seen = [errors.GenretagError], []
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += cls.__subclasses__()
    return seen


def test_every_error_exits_with_a_documented_status() -> None:
    documented = {row.code for row in EXIT_CODES}
    for cls in _error_classes():
        code = getattr(cls, "exit_code", None)
        if code is not None:
            assert code in documented, (cls, code)
    assert errors.UsageError.exit_code == errors.ModelNotFound.exit_code == 2
    from genretag.core.artifact import ArtifactError, MissingArtifact
    from genretag.core.reach import UnreachableError

    assert issubclass(MissingArtifact, ArtifactError) and MissingArtifact.exit_code == 2
    assert UnreachableError.exit_code == 3
    table = exit_table_markdown()
    assert all(f"| {row.code.value} | {row.meaning} |" in table for row in EXIT_CODES)


def test_no_command_raises_a_bare_systemexit_message() -> None:
    """`raise SystemExit("why")` exits 1 where a usage error must exit 2: the code uses
    UsageError (and the CLI maps any such SystemExit to 2 as well)."""
    found = []
    for path in (REPO / "genretag").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and getattr(node.exc.func, "id", None) == "SystemExit"
                    and node.exc.args and isinstance(node.exc.args[0], ast.Constant | ast.JoinedStr)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, found


@pytest.mark.parametrize(("argv", "words"), [
    (["work", "--replicas", "0"], "--replicas must be at least 1"),
    (["train", "--arch", "svm", "--labels", "x.csv"], "unknown model"),
    (["train", "--labels", "x.csv", "--arch", "logreg,dense", "--out", "m.pt"], "single --arch"),
    (["train", "--fine-tune", "--labels", "x.csv"], "--fine-tune needs --backbone"),
    (["train", "--labels", "x.csv", "--backbone", "nope.pt"], "--backbone nope.pt: no such"),
    (["train", "compare"], "give RUNS_DIR"),
    (["train"], "choose a dataset"),
    (["tags"], "give TRACK_IDs"),
])
def test_usage_errors_exit_2_in_one_line(argv, words, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"genretag {argv[0]}: ") and words in err[0], err


def test_main_help_states_the_exit_table() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "Exit status: 0 done, 1 failed, or nothing found, 2 usage or settings error" in text


# -- a closed pipe --------------------------------------------------------------------------------
@pytest.mark.heavy  # spawns genretag processes or converts a model
def test_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command prints a byte
    try:
        env = {k: v for k, v in os.environ.items()} | {"PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-m", "genretag", "stack", "status"], cwd=REPO,
                              env=env, stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == Exit.BROKEN_PIPE == 141
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


# -- help -----------------------------------------------------------------------------------------
def test_help_never_says_default_none_and_names_each_settings_env_variable() -> None:
    parser = build_parser()
    for path, sub in subcommand_parsers(parser):
        text = " ".join(sub.format_help().split())
        assert "(default: None)" not in text and "default None" not in text, path
        for action in sub._actions:
            if action.dest.startswith(("setting_", "secretfile_")) and action.help != "==SUPPRESS==":
                name = action.dest.split("_", 1)[1]
                assert f"GENRETAG_{name.upper()}" in action.help, (path, action.dest)


# -- logs -----------------------------------------------------------------------------------------
class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_log_format_rules() -> None:
    for command in ("work", "produce", "tags", "train", "stack"):
        assert wants_json("auto", command, _Stream(tty=True)) is False  # a person reads it
        assert wants_json("json", command, _Stream(tty=True)) is True
        assert wants_json("plain", command, _Stream(tty=False)) is False
    assert wants_json("auto", "work", _Stream(tty=False)) is True  # collectors read services
    assert wants_json("auto", "produce", _Stream(tty=False)) is True
    assert wants_json("auto", "tags", _Stream(tty=False)) is False


def _produce_logs(tmp_path: Path, flags: list[str], tty: bool) -> str:
    """stderr of a dry-run `produce` (a service), on a pipe or a terminal."""
    (tmp_path / "a.mp3").write_bytes(b"x")
    argv = [sys.executable, "-m", "genretag", *flags, "produce", str(tmp_path), "--dry-run",
            "--allowed-roots", str(tmp_path), "--no-progress"]
    env = {k: v for k, v in os.environ.items()} | {"PYTHONPATH": str(REPO)}
    if not tty:
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120).stderr
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=secondary, timeout=120)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    return b"".join(chunks).decode()


@pytest.mark.heavy  # spawns genretag processes or converts a model
def test_a_service_logs_json_to_a_pipe_and_plain_text_to_a_terminal(tmp_path: Path) -> None:
    piped = _produce_logs(tmp_path, [], tty=False)
    assert json.loads(piped.strip().splitlines()[-1])["event"] == "produce.done"
    on_terminal = _produce_logs(tmp_path, [], tty=True)
    assert "INFO genretag.producer.publish: produce.done " in on_terminal, on_terminal
    assert "{" not in on_terminal.split("produce.done")[0]
    forced = _produce_logs(tmp_path, ["--log-format", "json"], tty=True)
    assert json.loads(forced.strip().splitlines()[-1])["event"] == "produce.done"
    plain = _produce_logs(tmp_path, ["--plain-logs"], tty=False)  # the old switch still works
    assert "INFO genretag.producer.publish: produce.done " in plain


# -- models pull ----------------------------------------------------------------------------------
def test_models_pull_has_a_documented_default_folder(tmp_path, monkeypatch) -> None:
    from genretag.training.models_cli import default_model_path

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_model_path("musicnn-msd") == tmp_path / "data/genretag/models/musicnn-msd.pt"
    monkeypatch.setenv("GENRETAG_MODELS_DIR", str(tmp_path / "mine"))
    assert default_model_path("vgg-mtt") == tmp_path / "mine" / "vgg-mtt.pt"
    args = build_parser().parse_args(["models", "pull", "musicnn-msd"])
    assert args.out is None  # --out is optional
    help_text = " ".join(subcommand_parsers_dict()[("models", "pull")].format_help().split())
    assert "$GENRETAG_MODELS_DIR or $XDG_DATA_HOME/genretag/models" in help_text


def subcommand_parsers_dict() -> dict:
    return dict(subcommand_parsers(build_parser()))


@pytest.mark.heavy  # spawns genretag processes or converts a model
def test_models_pull_without_out_writes_to_the_models_folder(tmp_path, monkeypatch,
                                                              capsys) -> None:
    from tests.training.pretrained.conftest import CACHE
    from genretag.training.pretrained.pull import PullError, fetch_wheel

    try:
        wheel = fetch_wheel(CACHE)
    except PullError as exc:
        pytest.skip(f"musicnn wheel unavailable: {exc}")
    monkeypatch.setenv("GENRETAG_MODELS_DIR", str(tmp_path / "models"))
    assert main(["models", "pull", "vgg-mtt", "--wheel", str(wheel)]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "models" / "vgg-mtt.pt"
    assert written.is_file() and out.startswith(f"{written}: vgg-mtt ")


# -- the demo uses the command line only ---------------------------------------------------------
def test_demo_script_uses_only_the_cli() -> None:
    script = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "python" in line or "import " in line], code
    assert "--model-path" not in script and "genretag.producer" not in script


def test_reusing_the_demo_model_still_makes_missing_demo_audio(demo_model, tmp_path,
                                                               capsys) -> None:
    audio = tmp_path / "demo"
    assert main(["train", "--demo", "--reuse", "--out", str(demo_model), "--demo-dir",
                 str(audio), "--per-class", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["reused"] == str(demo_model)
    made = sorted(p.relative_to(audio).as_posix() for p in audio.rglob("*.mp3"))
    assert len(made) == 8 and made[0].endswith("_000.mp3")  # 4 genres × 2 clips


@pytest.mark.integration
def test_dlq_list_json_into_head_is_no_traceback(stack, tmp_path: Path) -> None:
    """The reported case: `genretag dlq list --json | head` with more letters than a pipe
    holds, so the command is still writing when head exits."""
    from datetime import UTC, datetime

    from genretag.core.settings import RedisSection
    from genretag.core.store import connect
    from genretag.schemas import DeadLetter, ReasonCode
    from tests.store_parts import store_parts

    prefix = f"pipe{os.getpid()}:"
    letters = [DeadLetter(reason=ReasonCode.BAD_MESSAGE, detail="x" * 200, stage="parse",
                          original="not json", source_topic="t", source_partition=0,
                          source_offset=i, worker_id="w", failed_at=datetime.now(UTC))
               for i in range(2000)]  # ~1 MB of JSON: far over a 64 KiB pipe
    store_parts(connect(RedisSection(url=stack.redis_url)), prefix).writer.write([], letters)
    env = {k: v for k, v in os.environ.items()} | {"PYTHONPATH": str(REPO)}
    command = (f"set -o pipefail; {sys.executable} -m genretag dlq list --json --redis-url "
               f"{stack.redis_url} --redis-key-prefix {prefix} | head -n 2")
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.stdout.splitlines()[0] == "["  # head got the start of the array
    assert proc.returncode == Exit.BROKEN_PIPE, proc  # pipefail: genretag's own status
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
