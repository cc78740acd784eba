"""`genretag work` and `produce --backfill --model` as a user runs them (issue 18), real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genretag.core.store import connect
from tests.store_parts import store_parts
from genretag.cli import main
from genretag.cli.stack import free_port
from tests.faults.harness import settings_env
from tests.integration.helpers import produce_refs, send_raw
from tests.integration.test_producer import REPO, flags, isolated, tag
from genretag.worker.cli import ALL_DEAD_LETTERED

pytestmark = pytest.mark.integration


def work(settings, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "genretag", "work", "--until-idle", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_batch_run_that_dead_letters_every_track_exits_4(worker_settings, tmp_path) -> None:
    settings = worker_settings(allowed_roots=[str(tmp_path / "music")], idle_exit_s=2.0)
    send_raw(settings, [b"not json"])
    produce_refs(settings, [{"track_id": "outside", "uri": "/etc/hostname"}])
    proc = work(settings, "--log-level", "WARNING", "--worker-id", "solo")
    assert proc.returncode == ALL_DEAD_LETTERED, proc.stderr[-2000:]
    assert "every track (2) was dead-lettered" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["dead_lettered"] == 2 and summary["tagged"] == 0
    assert summary["worker_id"] == "solo"


def test_replicas_label_their_summaries(worker_settings) -> None:
    settings = worker_settings(idle_exit_s=2.0)
    send_raw(settings, [b"not json"])
    proc = work(settings, "--replicas", "2", "--log-level", "WARNING", "--worker-id", "box")
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert sorted((s["replica"], s["worker_id"]) for s in lines) == [(0, "box-0"), (1, "box-1")]
    assert sum(s["dead_lettered"] for s in lines) == 1
    assert proc.returncode == 0, proc.stderr[-2000:]  # one replica had nothing: not a failure


@pytest.mark.parametrize("down", ["kafka", "redis"])
def test_a_batch_run_with_the_broker_or_redis_down_is_one_line(
    stack, tmp_path: Path, down: str, capsys
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    where = (["--kafka-bootstrap-servers", dead, "--redis-url", stack.redis_url]
             if down == "kafka" else
             ["--kafka-bootstrap-servers", stack.bootstrap, "--redis-url", f"redis://{dead}/0"])
    model = tmp_path / "m.pt"
    model.write_bytes(b"")  # present (a missing model is a usage error, checked first)
    code = main(["work", "--until-idle", "--model", str(model), *where,
                 "--log-level", "CRITICAL"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and dead in err and "is the stack up?" in err, err


def test_backfill_reads_the_version_from_a_model_file(stack, demo_model: Path, capsys) -> None:
    s = isolated(stack)
    store_parts(connect(s.redis), s.redis.key_prefix).writer.write(
        [tag("cur", "test-1", "/m/cur.mp3"), tag("old", "v0", "/m/old.mp3")])
    code = main(["produce", "--backfill", "--model", str(demo_model), "--dry-run", "--json",
                 "--no-progress", *flags(s)])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["selected"] == 1  # only "old": test-1 is current
