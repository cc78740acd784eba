"""A worker (or producer) whose open-files limit is a few descriptors short ends at once with one
line naming ``ulimit -n``: never a hot loop, a silent hang, or good tracks misfiled.

Before, with a limit of 19 a worker wrote 93,000-99,000 log lines a minute ("Marking the
coordinator dead") and never exited; with 20 it hung quietly; with 21 every track was
dead-lettered ``internal`` with ``OSError: [Errno 24]`` and no hint. Each process here runs
with its soft and hard limits lowered (``resource.setrlimit`` in the child, as
``tests/core/audio/test_open_exhausted.py`` does). Servers: the shared session stack.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest

from genretag.core.store import connect
from tests.faults.config import REPO_ROOT, SIZES
from tests.faults.harness import fault_settings, read_state, send_tracks, settings_env
from tests.integration.helpers import committed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

LIMITS = (19, 20, 21)
#: How long a process short of descriptors may take to give up (a hot loop never does).
GIVE_UP_S = 90


def limited(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


def run_limited(argv: list[str], env: dict[str, str], n: int) -> tuple[int | None, str, float]:
    """(exit status or None if it was still running after GIVE_UP_S, output, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "genretag.cli", *argv], env=env,
                            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            preexec_fn=limited(n))
    try:
        out, _ = proc.communicate(timeout=GIVE_UP_S)
        return proc.returncode, out, time.monotonic() - started
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out, time.monotonic() - started


def test_too_few_descriptors_end_with_one_line_naming_ulimit(
    stack, demo_model, fault_clips, audio_root, tmp_path, figures
) -> None:
    settings = fault_settings(stack, demo_model, [audio_root])
    tracks = {f"fd-{i}": str(p) for i, p in enumerate(fault_clips[:3])}
    send_tracks(settings, tracks)
    env = {**os.environ, **settings_env(settings)}
    catalog = tmp_path / "rows.jsonl"
    catalog.write_text("".join(f'{{"track_id": "fdp-{i}", "uri": "{u}"}}\n'
                               for i, u in enumerate(tracks.values())))
    runs = {}
    for n in LIMITS:
        runs[f"worker, open-files limit {n}"] = run_limited(["work", "--until-idle"], env, n)
    runs[f"produce, open-files limit {LIMITS[0]}"] = run_limited(
        ["produce", str(catalog), "--no-progress"], env, LIMITS[0])
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    figures("too few file descriptors (open-files limit 19-21)", bad_inputs=len(runs),
            tracks=len(tracks), lost=len(tracks) - len(state.tracks) if committed(settings) else 0,
            cases=[{"name": name, "expected": ["exit 1, one line naming ulimit -n"],
                    "got": f"exit {rc} after {secs:.0f} s, {out.count(chr(10))} lines"}
                   for name, (rc, out, secs) in runs.items()])
    for name, (rc, out, secs) in runs.items():
        hinted = [line for line in out.splitlines() if "ulimit -n" in line]
        assert rc == 1, (name, rc, secs, out[-3000:])
        assert len(hinted) == 1 and hinted[0].startswith("genretag "), (name, out[-3000:])
        assert out.count("\n") < 50, (name, out.count("\n"), out[-2000:])
    assert not committed(settings) and not state.dlq and not state.tracks, (
        "a worker short of descriptors consumed tracks", state.dlq)
