"""Path settings are read the same way by every process: ``~`` and ``$VARS`` expanded once
(``genretag.core.settings.expand_path``), and a path in a message judged by the producer as
the worker judges it.

A ``.env`` file holds ``GENRETAG_ALLOWED_ROOTS=~/music`` (no shell expanded it): ``produce
--strict`` and the worker both read it as ``$HOME/music``, so the track is enqueued and tagged.
A row whose uri is ``~/music/x.mp3`` is relative to the worker (it refuses it as
``disallowed_uri``), so ``produce --strict`` refuses it too: before, the producer expanded the
``~`` itself, enqueued the row, and the worker dead-lettered it. Servers: the shared stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genretag.core.store import connect
from tests.faults.config import SIZES
from tests.faults.harness import fault_settings, read_state, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]


def test_allowed_roots_from_a_dotenv_file_with_a_tilde(
    stack, demo_model, fault_clips, tmp_path, figures
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    music = home / "music"
    music.mkdir(parents=True)
    cwd.mkdir()
    clip = music / "song.mp3"
    shutil.copy(fault_clips[0], clip)
    (cwd / ".env").write_text("GENRETAG_ALLOWED_ROOTS=~/music\n")
    settings = fault_settings(stack, demo_model, [tmp_path / "unused"])
    env = {k: v for k, v in {**os.environ, **settings_env(settings)}.items()
           if k != "GENRETAG_ALLOWED_ROOTS"}
    env["HOME"] = str(home)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"track_id": "home-song", "uri": str(clip)}) + "\n")
    tilde = tmp_path / "tilde.jsonl"
    tilde.write_text(json.dumps({"track_id": "tilde-song", "uri": "~/music/song.mp3"}) + "\n")

    def genretag(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "genretag.cli", *args], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    refused = genretag("produce", str(tilde), "--strict", "--no-progress", "--json")
    produced = genretag("produce", str(good), "--strict", "--no-progress", "--json")
    worker = genretag("work", "--until-idle")
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    figures("allowed roots with ~ from a .env file", bad_inputs=1, tracks=1,
            lost=0 if "home-song" in state.tracks else 1, worker_exit_code=worker.returncode,
            tilde_uri_refused_by_produce=refused.returncode != 0)
    assert refused.returncode != 0 and json.loads(
        refused.stdout.strip().splitlines()[-1])["enqueued"] == 0, (refused.stdout, refused.stderr)
    assert produced.returncode == 0, produced.stderr
    assert json.loads(produced.stdout.strip().splitlines()[-1])["enqueued"] == 1, produced.stdout
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "home-song" in state.tracks and not state.dlq, (sorted(state.tracks), state.dlq)
    assert state.tracks["home-song"]["uri"] == str(clip)
    assert Path(state.tracks["home-song"]["uri"]).is_relative_to(home)
