"""Access: Redis with a password and an ACL user limited to the worker's key prefix.

Right credentials work; wrong ones and missing rights make the worker exit non-zero quickly,
with an error that names the cause; no secret ever appears in any output. The module has its
own LocalStack (redis-server with ``requirepass``).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from genretag.cli.stack import LocalStack
from tests.faults.config import REPO_ROOT, SIZES
from tests.faults.harness import (
    WorkerProc,
    agreement_problems,
    assign,
    committed,
    fault_settings,
    read_state,
    send_tracks,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

#: Mixed-case consonants, no hex digits: a 4-character piece of a secret cannot match the
#: words, hashes and ids that fill the logs by chance.
_ALPHABET = "ghjkmnpqrstvwxzGHJKMNPQRSTVWXZ"
_rng = random.SystemRandom()


def secret() -> str:
    return "".join(_rng.choice(_ALPHABET) for _ in range(20))


ADMIN_PASSWORD, USER_PASSWORD, WRONG_PASSWORD = secret(), secret(), secret()
USER = "genretag"
ACL_PREFIX = "acl:"
FAIL_FAST_S = 30.0
OUTPUTS: dict[str, str] = {}  # every process output of this module, checked for leaks last


def leaks(text: str, value: str, window: int = 4) -> bool:
    """True if ``value`` or any ``window``-character piece of it (a truncated echo) is in text."""
    return any(value[i:i + window] in text for i in range(len(value) - window + 1))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Tansu + redis-server with requirepass and an ACL user confined to ``acl:*`` keys."""
    with LocalStack(tmp_path_factory.mktemp("access-stack"),
                    redis_password=ADMIN_PASSWORD) as running:
        admin = redis.Redis(port=running.redis_port, password=ADMIN_PASSWORD)
        admin.execute_command(
            "ACL", "SETUSER", USER, "reset", "on", f">{USER_PASSWORD}", f"~{ACL_PREFIX}*",
            "resetchannels", "-@all", "+@connection", "+@read", "+@write", "+@scripting",
            "-@dangerous",
        )
        admin.close()
        yield running


def admin_client(stack: LocalStack) -> redis.Redis:
    return redis.Redis(port=stack.redis_port, password=ADMIN_PASSWORD, decode_responses=True)


def user_settings(stack: LocalStack, model: Path, root: Path, *, password: str | None,
                  username: str | None = USER, prefix: str | None = None):
    settings = fault_settings(stack, model, [root], redis_username=username,
                              redis_password=password)
    if prefix is None:
        prefix = f"{ACL_PREFIX}{settings.redis.key_prefix}"
    return settings.updated(redis_key_prefix=prefix)


def wait_exit(worker: WorkerProc, give_up_after_auth_retries: int = 3) -> tuple[int | None, float]:
    """(exit code or None if still running, seconds) within FAIL_FAST_S.

    Stops early once the worker has logged a few retries of an authentication error: that is
    the symptom of treating bad credentials as a transient outage.
    """
    while time.monotonic() - worker.started < FAIL_FAST_S:
        if not worker.alive():
            return worker.wait(10), time.monotonic() - worker.started
        if worker.lines_containing("AuthenticationError") >= give_up_after_auth_retries:
            break
        time.sleep(0.2)
    return None, time.monotonic() - worker.started


def test_acl_user_confined_to_its_prefix_tags_tracks(
    secured, demo_model, fault_clips, audio_root, reference, workers, figures
) -> None:
    settings = user_settings(secured, demo_model, audio_root, password=USER_PASSWORD)
    tracks = assign("acl", 8, fault_clips)
    missing = {"acl-missing": str(audio_root / "missing.mp3")}
    send_tracks(settings, {**tracks, **missing})
    worker = workers.start(settings, "acl", until_idle=True)
    rc = worker.wait(300)
    OUTPUTS["right credentials"] = worker.output
    state = read_state(admin_client(secured), settings.redis.key_prefix)
    lost, problems = agreement_problems(state, tracks, reference)

    user = redis.Redis(port=secured.redis_port, username=USER, password=USER_PASSWORD)
    denied = []
    for name, call in [("SET outside the prefix", lambda: user.set("other:key", "x")),
                       ("FLUSHALL", lambda: user.flushall()),
                       ("CONFIG GET", lambda: user.config_get("requirepass")),
                       ("KEYS", lambda: user.keys("*"))]:
        try:
            call()
        except redis.exceptions.NoPermissionError:
            denied.append(name)
    user.close()
    starting = worker.events_named("worker.starting")
    figures("Redis ACL user confined to its key prefix", tracks=len(tracks), lost=len(lost),
            commands_denied_outside_acl=len(denied))
    assert rc == 0, worker.tail()
    assert not lost and not problems, (lost, problems[:5])
    assert state.dlq["acl-missing"]["reason"] == "missing_file"
    assert len(denied) == 4, f"the ACL is wider than intended; denied only {denied}"
    assert starting and starting[0]["settings"]["redis_password"] == "**********"


def test_wrong_credentials_make_the_worker_exit_quickly_with_a_clear_error(
    secured, demo_model, audio_root, workers, figures
) -> None:
    """Wrong password, unknown user, no password: non-zero exit within FAIL_FAST_S, cause named."""
    runs = {
        "wrong password": user_settings(secured, demo_model, audio_root, password=WRONG_PASSWORD),
        "unknown user": user_settings(secured, demo_model, audio_root, password=USER_PASSWORD,
                                      username="nobody"),
        "no password": user_settings(secured, demo_model, audio_root, password=None,
                                     username=None),
    }
    started = {name: workers.start(s, name.replace(" ", "-")) for name, s in runs.items()}
    results = {name: wait_exit(w) for name, w in started.items()}
    for name, w in started.items():
        if w.alive():
            w.kill()
        OUTPUTS[name] = w.output
    figures("wrong Redis credentials", bad_inputs=len(runs),
            exited_non_zero=sum(1 for rc, _ in results.values() if rc not in (None, 0)),
            slowest_exit_s=round(max(s for _, s in results.values()), 1))
    for name, (rc, seconds) in results.items():
        out = started[name].output
        assert rc not in (None, 0), f"{name}: still running after {seconds:.0f}s:\n" \
                                    f"{started[name].tail(4)}"
        assert any(word in out for word in ("WRONGPASS", "NOAUTH", "uthentication")), out[-2000:]


def test_key_prefix_outside_the_acl_makes_the_worker_exit_without_committing(
    secured, demo_model, fault_clips, audio_root, workers, figures
) -> None:
    """Right credentials, but a prefix the ACL forbids: NOPERM on the first write → exit ≠ 0."""
    settings = user_settings(secured, demo_model, audio_root, password=USER_PASSWORD,
                             prefix="forbidden:")
    send_tracks(settings, assign("noperm", 4, fault_clips))
    worker = workers.start(settings, "noperm")
    deadline = time.monotonic() + 120
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = worker.alive()
    if alive:
        worker.kill()
    rc = worker.wait(10)
    OUTPUTS["forbidden prefix"] = worker.output
    written = list(admin_client(secured).scan_iter(match="forbidden:*"))
    figures("key prefix outside the Redis ACL", bad_inputs=1, exit_code=rc,
            offsets_committed=sum(committed(settings).values()))
    assert not alive, f"still running after NOPERM:\n{worker.tail(6)}"
    assert rc != 0
    assert "NOPERM" in worker.output or "NoPermissionError" in worker.output, worker.tail(6)
    assert not written and sum(committed(settings).values()) == 0


def cli_output(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genretag.cli", *args],
                          env={**os.environ, **env}, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_settings_errors_do_not_echo_secrets(secured, figures) -> None:
    """A misconfigured worker exits non-zero without repeating the password it was given."""
    pw = secret()
    cases = {  # as an operator would set them: a few variables, one of them wrong
        "credentials in the URL": {
            "GENRETAG_REDIS_URL": f"redis://{USER}:{pw}@127.0.0.1:{secured.redis_port}/0"},
        "invalid heartbeat with a password set": {
            "GENRETAG_REDIS_PASSWORD": pw, "GENRETAG_HEARTBEAT_INTERVAL_MS": "5000"},
    }
    results = {name: cli_output(env, "work", "--until-idle") for name, env in cases.items()}
    for name, proc in results.items():
        OUTPUTS[f"settings error: {name}"] = proc.stdout + proc.stderr
    echoed = [n for n, p in results.items() if leaks(p.stdout + p.stderr, pw)]
    figures("settings errors with secrets", bad_inputs=len(cases), secrets_echoed=len(echoed))
    assert all(p.returncode != 0 for p in results.values())
    assert not echoed, {n: results[n].stderr[-600:] for n in echoed}


def test_no_output_of_this_module_leaks_a_secret(figures) -> None:
    """Every worker/CLI output captured above, searched for every secret (and pieces of them)."""
    checked = {k: v for k, v in OUTPUTS.items() if not k.startswith("settings error")}
    if not checked:
        pytest.skip("runs after the other tests of this module")
    found = [(name, label) for name, text in checked.items()
             for label, value in [("admin password", ADMIN_PASSWORD),
                                  ("user password", USER_PASSWORD),
                                  ("wrong password", WRONG_PASSWORD)] if leaks(text, value)]
    figures("secrets in worker logs", outputs_checked=len(checked), leaks=len(found))
    assert not found, found
