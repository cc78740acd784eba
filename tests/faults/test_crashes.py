"""Worker crashes: SIGKILL at random points, restart, and end with exactly a clean run's tags.

Workers are real ``genretag work`` processes; the servers are the shared session stack (only
workers die here). At-least-once allows a track to be written twice (counted and published as
duplicates); it never allows a track to be missing or a genre set to keep a stale member.
"""

from __future__ import annotations

import signal
import time

import pytest

from genretag.core.store import connect
from tests.faults.config import SIZES
from tests.faults.harness import (
    assign,
    WriteCounter,
    agreement_problems,
    all_committed,
    committed,
    consistency_problems,
    end_offsets_of,
    fault_settings,
    kill_at_random_points,
    read_state,
    send_tracks,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]


def check_final_state(settings, tracks, reference) -> tuple[list[str], list[str]]:
    """(lost track ids, every other difference from the clean run) for the settings' prefix."""
    state = read_state(connect(settings.redis), settings.redis.key_prefix)
    lost, problems = agreement_problems(state, tracks, reference)
    problems += consistency_problems(state)
    if state.dlq or state.dlq_msg:
        problems.append(f"dead letters for good tracks: {sorted([*state.dlq, *state.dlq_msg])[:5]}")
    return lost, problems


def embedding_problems(settings, tracks: dict[str, str], model_path) -> list[str]:
    """With the embeddings sink: every track has its vector, in the model's space, and tracks
    of the same clip hold the same vector (a redelivered write is the same write)."""
    from genretag.core.artifact import read_manifest
    from genretag.core.store import EmbeddingReader, KeyLayout

    manifest = read_manifest(model_path)
    reader = EmbeddingReader(connect(settings.redis, binary=True),
                             KeyLayout(settings.redis.key_prefix))
    stored = reader.get_many(sorted(tracks))
    problems = [f"no embedding for {t}" for t, v in stored.items() if v is None]
    problems += [f"{t}: space {v.space}" for t, v in stored.items()
                 if v is not None and v.space != manifest.embedding.space]
    by_clip: dict[str, bytes] = {}
    for t, v in stored.items():
        if v is not None and by_clip.setdefault(tracks[t], v.vector.tobytes()) != v.vector.tobytes():
            problems.append(f"{t}: another vector than the other tracks of {tracks[t]}")
    if reader.count() != len(tracks):
        problems.append(f"{reader.count()} embeddings logged for {len(tracks)} tracks")
    return problems


def twin_artifact(model_path, out, name: str):
    """The same weights and version under another manifest name: a model set's further model
    whose clean run is the reference's (its namespace must agree with it exactly)."""
    from genretag.core.artifact import load_artifact, save_artifact

    module, manifest = load_artifact(model_path)
    return save_artifact(module, manifest.model_copy(update={"name": name}), out)


@pytest.mark.parametrize("sinks", ["tags", "tags,embeddings", "tags,embeddings+model set"])
def test_sigkill_at_random_points_then_restart_gives_a_clean_runs_tags(
    stack, demo_model, fault_clips, audio_root, reference, workers, rng, sizes, figures, sinks,
    tmp_path,
) -> None:
    m, n = sizes.crash_tracks, sizes.crash_kills
    sinks, _, model_set = sinks.partition("+")
    twin = "tdcnn-twin"
    models = {"models": f"{demo_model},{twin_artifact(demo_model, tmp_path / 'twin.pt', twin)}"
              } if model_set else {}
    settings = fault_settings(stack, demo_model, [audio_root], batch_size=4, sinks=sinks,
                              **models)
    tracks = assign("crash", m, fault_clips)
    counter = WriteCounter(connect(settings.redis), settings.redis.key_prefix)
    try:
        ends = end_offsets_of(list(send_tracks(settings, tracks).values()))
        started = time.monotonic()
        done_kills = kill_at_random_points(workers, settings, counter, rng, m, n, ends)
        kills, mid_run, at_startup = (done_kills.kills, done_kills.while_work_pending,
                                      done_kills.during_startup)
        final = workers.start(settings, "crash-final", until_idle=True)
        assert final.wait(300) == 0, final.tail()
        wall = time.monotonic() - started
    finally:
        counter.close()

    lost, problems = check_final_state(settings, tracks, reference)
    twice, extra = counter.duplicates()
    done = committed(settings)
    if "embeddings" in sinks:
        problems += embedding_problems(settings, tracks, demo_model)
    if model_set:  # the further model's namespace holds a clean run's tags too, none lost
        from genretag.core.store import KeyLayout

        own = settings.updated(
            redis_key_prefix=KeyLayout(settings.redis.key_prefix).for_model(twin).prefix)
        lost_there, there = check_final_state(own, tracks, reference)
        lost += [f"{twin}: {t}" for t in lost_there]
        problems += [f"{twin}: {p}" for p in there]
    figures(f"worker SIGKILL at random points, restarted (sinks {sinks}"
            f"{', model set' if model_set else ''})", kills=kills,
            tracks=m, lost=len(lost),
            duplicates=twice, extra_writes=extra, kills_while_work_pending=mid_run,
            kills_during_startup=at_startup, logged_in_two_batches=workers.logged_twice(),
            worker_processes=len(workers.started), wall_s=round(wall, 1))
    assert not lost, f"tracks lost after {kills} kills: {lost[:10]}"
    assert not problems, problems[:10]
    assert all(done.get(p, 0) == end for p, end in ends.items()), (done, ends)
    assert kills == n and mid_run >= 1


def test_one_of_two_workers_killed_the_other_takes_over_its_partitions(
    stack, demo_model, fault_clips, audio_root, reference, workers, sizes, figures
) -> None:
    """A and B share the group; A is SIGKILLed after both own partitions; B finishes alone."""
    settings = fault_settings(stack, demo_model, [audio_root], batch_size=2)
    tracks = assign("takeover", sizes.takeover_tracks, fault_clips)
    counter = WriteCounter(connect(settings.redis), settings.redis.key_prefix)
    a = workers.start(settings, "A")
    b = workers.start(settings, "B")
    coords: dict[str, tuple[int, int]] = {}
    try:
        # A trickle until both members have processed a batch (so both own partitions).
        def both_busy() -> bool:
            i = len(coords)
            early = {f"takeover-early-{i:04d}": str(fault_clips[i % len(fault_clips)])}
            tracks.update(early)
            coords.update(send_tracks(settings, early))
            return a.count("core.audio.windows") > 0 and b.count("core.audio.windows") > 0

        wait_until(both_busy, 180, "both workers to process a batch", interval_s=0.3,
                   diagnose=lambda: a.tail(8) + b.tail(8))
        a.kill()
        killed_at = time.monotonic()
        coords.update(send_tracks(settings, {t: u for t, u in tracks.items() if t not in coords}))
        ends = end_offsets_of(list(coords.values()))
        wait_until(lambda: all_committed(settings, ends) or not b.alive(), 180,
                   "B to commit every partition", diagnose=b.tail)
        takeover_s = time.monotonic() - killed_at
        assert b.alive(), f"worker B exited:\n{b.tail()}"
        b.signal(signal.SIGTERM)
        rc = b.wait(60)
    finally:
        counter.close()
    lost, problems = check_final_state(settings, tracks, reference)
    twice, extra = counter.duplicates()
    figures("two workers, one SIGKILLed: partitions taken over", kills=1,
            tracks=len(tracks), lost=len(lost), duplicates=twice, extra_writes=extra,
            logged_in_two_batches=workers.logged_twice(),
            kill_to_all_committed_s=round(takeover_s, 1))
    assert not lost, lost[:10]
    assert not problems, problems[:10]
    assert all_committed(settings, ends)  # every partition, A's included, committed by B alone
    assert rc == 0, f"B did not stop cleanly on SIGTERM:\n{b.tail()}"
