"""The libav decoder processes under faults, through real workers, the real broker and Redis.

Faults injected at every step of a decoder exchange inside a running worker
(tests/faults/exchange_faults.py, installed in the worker process): no track is ever stored with
another file's result. Files that once made a decoder process raise cost no restart. The tracks
are WAVs of distinct lengths, so a result stored under the wrong track shows in its duration.
Servers: the shared session stack.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from genretag.core.artifact import read_manifest
from genretag.core.store import connect
from tests.faults import exchange_faults
from tests.faults.config import SIZES
from tests.faults.harness import (
    Reference,
    agreement_problems,
    all_committed,
    committed,
    consistency_problems,
    end_offsets_of,
    fault_settings,
    read_state,
    send_tracks,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

RATE = 16000


def _wavs(root: Path, count: int) -> list[Path]:
    """``count`` tone WAVs of distinct lengths (1.5 s + 0.25 s steps) and pitches."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = root / f"len-{k:02d}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"anoisesrc=d={1.5 + 0.25 * k}:r={RATE}:c=pink:seed={k},"
                        f"volume={0.2 + 0.03 * k}", "-c:a", "pcm_s16le", str(path)], check=True)
        paths.append(path)
    return paths


def _run(workers, settings, tracks: dict[str, str], name: str, **kwargs):
    coords = send_tracks(settings, tracks)
    worker = workers.start(settings, name, until_idle=True, **kwargs)
    rc = worker.wait(300)
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    return worker, rc, state, end_offsets_of(list(coords.values()))


def test_faults_in_every_step_of_the_decoder_exchange_never_give_a_track_another_files_result(
        stack, demo_model, workers, tmp_path, figures) -> None:
    """Every file's first exchange meets one of the faults, in turn (a cut request, EMFILE or a
    timeout while waiting, a short read, garbage, a stale reply, another request's id, a
    process killed mid-reply, a reply claiming too many samples). Each track must be stored once
    with its own file's duration and tags: those of a clean run of the same files."""
    files = _wavs(tmp_path / "audio", 2 * len(exchange_faults.FAULTS))
    clean = fault_settings(stack, demo_model, [tmp_path / "audio"])
    tracks = {f"x-{k:02d}": str(p) for k, p in enumerate(files)}
    _, rc, ref_state, _ = _run(workers, clean, {f"ref-{k}": u for k, u in
                                                enumerate(tracks.values())}, "clean")
    assert rc == 0 and len(ref_state.tracks) == len(files), sorted(ref_state.dlq)
    manifest = read_manifest(demo_model)
    reference = Reference(by_uri={t["uri"]: t for t in ref_state.tracks.values()},
                          thresholds=dict(manifest.thresholds), version=manifest.version)

    settings = fault_settings(stack, demo_model, [tmp_path / "audio"])
    worker, rc, state, ends = _run(
        workers, settings, tracks, "faulted", python_code=exchange_faults.PRELOAD,
        env={"EXCHANGE_FAULTS": ",".join(exchange_faults.FAULTS)})
    failed = worker.events_named("decode.child_failed")
    kinds = {e.get("kind") for e in failed}
    lost, problems = agreement_problems(state, tracks, reference)
    wrong_duration = {t: (s["duration_s"], reference.by_uri[tracks[t]]["duration_s"])
                      for t, s in state.tracks.items()
                      if s["duration_s"] != reference.by_uri[tracks[t]]["duration_s"]}
    figures("decoder exchange faults in a running worker", bad_inputs=len(failed),
            tracks=len(tracks), lost=len(lost) + len(state.dlq), faults_injected=len(failed),
            fault_kinds=",".join(sorted(k for k in kinds if k)),
            tracks_with_another_files_result=len(wrong_duration) + len(problems),
            worker_process_starts=worker.count("worker.starting"), exit_code=rc)

    assert rc == 0 and worker.count("worker.starting") == 1, worker.tail()
    assert len(failed) == len(files), worker.tail()  # each file met one fault, then its retry
    assert kinds == {"died", "hung", "garbled", "local"}, kinds
    assert not wrong_duration, wrong_duration
    assert not lost and not problems and not state.dlq, (lost, problems[:5], state.dlq)
    assert all_committed(settings, ends), (committed(settings), ends)
    assert not consistency_problems(state), consistency_problems(state)[:5]


def test_files_that_made_a_decoder_process_raise_cost_no_restart(
        stack, demo_model, fault_clips, audio_root, workers, tmp_path, figures) -> None:
    """16 WAVs whose header claims 0 channels, among good clips: each is dead-lettered
    ``undecodable`` by a reply of the decoder process; none kills one (each used to cost two
    restarts and a retry: 16 cost 10.5 s and 32 restarts)."""
    from tests.faults.broken_files import broken_streams

    inside = tmp_path / "inside"
    inside.mkdir()
    zero = broken_streams(inside)["zero_channels"]
    bad = {f"z-{k:02d}": str(zero) for k in range(16)}
    good = {f"g-{k}": str(p) for k, p in enumerate(fault_clips[:4])}
    settings = fault_settings(stack, demo_model, [inside, audio_root])
    worker, rc, state, ends = _run(workers, settings, {**bad, **good}, "zero-channels")
    reasons = {t: state.dlq.get(t, {}).get("reason", "tagged" if t in state.tracks else "nothing")
               for t in bad}
    restarts = worker.count("decode.child_failed")
    figures("16 WAVs claiming 0 channels among good clips", bad_inputs=len(bad),
            tracks=len(good), lost=sum(1 for t in good if t not in state.tracks),
            decoder_restarts=restarts, worker_process_starts=worker.count("worker.starting"),
            exit_code=rc)
    assert rc == 0, worker.tail()
    assert set(reasons.values()) == {"undecodable"}, reasons
    assert all(t in state.tracks for t in good), sorted(state.tracks)
    assert restarts == 0, worker.tail()
    assert all_committed(settings, ends), (committed(settings), ends)
    assert not consistency_problems(state), consistency_problems(state)[:5]
