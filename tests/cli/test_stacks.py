"""Stacks stay put: a stack belongs to its state folder, and `stack up|down` act on the folder
the command resolves, never on whichever stack was started last.

Real `genretag stack` processes (Tansu + redis-server) in folders laid out like checkouts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def genretag(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genretag", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No GENRETAG_STATE_DIR (tests/conftest.py sets one), a per-user state folder of our own."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GENRETAG_")}
    return base | {"XDG_STATE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(REPO)}


def checkout(path: Path) -> Path:
    """A folder genretag treats as a checkout (it has a ``.genretag/``)."""
    (path / ".genretag").mkdir(parents=True)
    return path


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


def up(cwd: Path, env: dict[str, str], *extra: str) -> dict:
    proc = genretag(["stack", "up", *extra], cwd, env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_two_stacks_in_two_folders_each_down_stops_only_its_own(tmp_path: Path, env) -> None:
    a, b = checkout(tmp_path / "a"), checkout(tmp_path / "b")
    stack_a = up(a, env)
    try:
        stack_b = up(b, env)  # b was started last: the per-user pointer now names b
        try:
            assert stack_a["state_dir"] == str(a / ".genretag")
            assert stack_b["state_dir"] == str(b / ".genretag")  # its own, not a's `already_up`
            assert "already_up" not in stack_b
            assert stack_a["GENRETAG_REDIS_URL"] != stack_b["GENRETAG_REDIS_URL"]
            # Inside a, every command sees a's stack, although b was started last.
            status = genretag(["stack", "status"], a, env)
            assert json.loads(status.stdout)["redis"]["url"] == stack_a["GENRETAG_REDIS_URL"]
            down = genretag(["stack", "down"], a, env)
            assert down.returncode == 0
            assert json.loads(down.stdout) == {"down": True, "state_dir": str(a / ".genretag"),
                                               "stopped": True}
            assert f"stopped the stack of {a / '.genretag'}" in down.stderr
            assert not redis_answers(stack_a["GENRETAG_REDIS_URL"])
            assert redis_answers(stack_b["GENRETAG_REDIS_URL"])  # b's stack is untouched
            again = genretag(["stack", "down"], a, env)  # nothing left in a: b still untouched
            assert json.loads(again.stdout)["stopped"] is False
            assert f"no stack runs in {a / '.genretag'}" in again.stderr
            assert redis_answers(stack_b["GENRETAG_REDIS_URL"])
        finally:
            down_b = genretag(["stack", "down"], b, env)
        assert json.loads(down_b.stdout)["stopped"] is True
        assert not redis_answers(stack_b["GENRETAG_REDIS_URL"])
    finally:
        genretag(["stack", "down"], a, env)


def test_a_named_state_dir_is_never_stopped_from_a_checkout(tmp_path: Path, env) -> None:
    """The reported bug: `stack down` in a checkout stopped a stack started elsewhere with
    GENRETAG_STATE_DIR (a running `make demo` of another clone)."""
    elsewhere = tmp_path / "demo-state"
    named = env | {"GENRETAG_STATE_DIR": str(elsewhere)}
    started = up(tmp_path, named)
    try:
        assert started["state_dir"] == str(elsewhere)
        repo = checkout(tmp_path / "repo")
        up_here = up(repo, env)  # never attaches to the other folder's stack
        assert up_here["state_dir"] == str(repo / ".genretag") and "already_up" not in up_here
        genretag(["stack", "down"], repo, env)
        assert redis_answers(started["GENRETAG_REDIS_URL"])
        # --state-dir (after the subcommand too) names the folder explicitly.
        status = genretag(["stack", "status", "--state-dir", str(elsewhere)], repo, env)
        assert status.returncode == 0 and json.loads(status.stdout)["state_dir"] == str(elsewhere)
        down = genretag(["--state-dir", str(elsewhere), "stack", "down"], repo, env)
        assert json.loads(down.stdout)["stopped"] is True
        assert not redis_answers(started["GENRETAG_REDIS_URL"])
    finally:
        genretag(["stack", "down"], tmp_path, named)


def test_outside_any_checkout_the_last_stack_is_a_fallback_and_says_so(tmp_path: Path,
                                                                        env) -> None:
    repo = checkout(tmp_path / "repo")
    started = up(repo, env)
    try:
        music = tmp_path / "music"
        music.mkdir()
        tags = genretag(["tags", "no-such-track"], music, env)
        assert tags.returncode == 1 and "(no tags)" in tags.stdout, tags.stderr  # reached it
        notice = [line for line in tags.stderr.splitlines() if "using the stack of" in line]
        assert notice == [f"genretag: using the stack of {repo / '.genretag'} (the last one "
                          "`genretag stack up` started; --state-dir or GENRETAG_STATE_DIR "
                          "chooses another)"]
        status = genretag(["stack", "status"], music, env)
        assert json.loads(status.stdout)["redis"]["url"] == started["GENRETAG_REDIS_URL"]
        # `up` outside a checkout starts the per-user folder's own stack, not the remembered one.
        own = up(music, env)
        try:
            assert own["state_dir"] == str(tmp_path / "xdg" / "genretag")
            assert own["GENRETAG_REDIS_URL"] != started["GENRETAG_REDIS_URL"]
        finally:
            genretag(["stack", "down", "--state-dir", own["state_dir"]], music, env)
        assert redis_answers(started["GENRETAG_REDIS_URL"])
    finally:
        genretag(["stack", "down"], repo, env)
