"""Tag events under faults, with the events sink on: workers SIGKILLed at random points, killed
exactly between the Redis write and the publish, Redis refusing writes, the broker restarted.

Every tagged track must end with an event whose content (model version, label set, primary
genre) equals what Redis holds: an event lost is a track without one, or whose last event
says something else. Duplicates (an event id published again by a redelivery) are counted:
at-least-once allows them, consumers drop them by id.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from genretag.cli.events_cli import Position, read_events
from genretag.cli.stack import LocalStack
from genretag.core.store import KeyLayout, TagReader, connect
from genretag.schemas import TagEvent
from tests.faults.config import SIZES
from tests.faults.harness import (
    WriteCounter,
    all_committed,
    assign,
    committed,
    end_offsets_of,
    ensure_stack_up,
    fault_settings,
    kill_at_random_points,
    send_tracks,
    wait_until,
)
from tests.faults.refusals import REFUSALS, RedisServer
from tests.faults.test_crashes import check_final_state
from tests.faults.test_outages import produce_cli, refill, restart_broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SIZES.test_timeout_s)]

#: Makes a worker process die (os._exit) right after the Redis write of a batch with tracks it
#: has not died for yet, before their events are published: the window the design is for.
#: Installed through ``sitecustomize`` (PYTHONPATH) in the worker process only.
DIE_BEFORE_PUBLISH = '''
import os
if os.environ.get("GENRETAG_FAULT_DIED_FILE"):
    from genretag.worker.sinks import events as _events
    _publish = _events.EventSink.write

    def _write(self, outcomes, *, urgent=False):
        path = os.environ["GENRETAG_FAULT_DIED_FILE"]
        deaths = open(path).read().splitlines() if os.path.exists(path) else []
        died = {tid for line in deaths for tid in line.split()}
        fresh = [o.record.track_id for o in outcomes if o.record and o.record.track_id not in died]
        if fresh and len(deaths) < int(os.environ["GENRETAG_FAULT_DEATHS"]):
            with open(path, "a") as out:
                out.write(" ".join(fresh) + "\\n")
            os._exit(137)
        return _publish(self, outcomes, urgent=urgent)

    _events.EventSink.write = _write
'''


def event_settings(stack: LocalStack, model: Path, roots: list[Path], **overrides):
    return fault_settings(stack, model, roots, sinks="tags,events",
                          kafka_events_topic=f"faults-events-{uuid.uuid4().hex[:8]}", **overrides)


@dataclass
class EventCheck:
    """The events topic against Redis, for the tracks a scenario tagged."""

    events: int = 0
    lost: list[str] = field(default_factory=list)  # no event, or the last one differs
    duplicates: int = 0  # events whose id was published before
    announced_twice: int = 0  # tracks with more than one event
    split: list[str] = field(default_factory=list)  # a track's events in several partitions
    unexpected: list[str] = field(default_factory=list)  # events of tracks not checked
    unreadable: int = 0


def check_events(settings, track_ids: list[str]) -> EventCheck:
    """Read the whole events topic and compare each track's last event with Redis."""
    out = EventCheck()
    by_track: dict[str, list[tuple[int, int, TagEvent]]] = {}
    seen: set[str] = set()
    with closing(read_events(settings.kafka, Position(from_beginning=True,
                                                      follow=False))) as records:
        for at, value in records:
            partition, offset = (int(x) for x in at.split(":"))
            try:
                event = TagEvent.model_validate_json(value or b"")
            except ValueError:
                out.unreadable += 1
                continue
            out.events += 1
            out.duplicates += event.event_id in seen
            seen.add(event.event_id)
            by_track.setdefault(event.track_id, []).append((partition, offset, event))
    reader = TagReader(connect(settings.redis), KeyLayout(settings.redis.key_prefix))
    stored = reader.get_many(track_ids)
    for tid in track_ids:
        events = sorted(by_track.get(tid, []), key=lambda x: x[:2])
        if len({p for p, _, _ in events}) > 1:
            out.split.append(tid)
        out.announced_twice += len(events) > 1
        record = stored[tid]
        last = events[-1][2] if events else None
        if record is None or last is None or (
                last.model_version, sorted(last.labels), last.primary_genre) != (
                record.model_version, sorted(record.labels), record.primary_genre):
            out.lost.append(tid)
    out.unexpected = sorted(set(by_track) - set(track_ids))
    return out


def assert_none_lost(check: EventCheck) -> None:
    assert not check.lost, f"{len(check.lost)} tracks without a matching event: {check.lost[:10]}"
    assert not check.split, f"a track's events in several partitions: {check.split[:10]}"
    assert not check.unexpected and not check.unreadable, (check.unexpected[:10],
                                                           check.unreadable)


def test_sigkill_at_random_points_with_events_on_loses_no_event(
    stack, demo_model, fault_clips, audio_root, reference, workers, rng, sizes, figures
) -> None:
    m, n = sizes.crash_tracks, sizes.crash_kills
    settings = event_settings(stack, demo_model, [audio_root], batch_size=4)
    tracks = assign("evcrash", m, fault_clips)
    counter = WriteCounter(connect(settings.redis), settings.redis.key_prefix)
    try:
        ends = end_offsets_of(list(send_tracks(settings, tracks).values()))
        started = time.monotonic()
        done = kill_at_random_points(workers, settings, counter, rng, m, n, ends, "evcrash")
        final = workers.start(settings, "evcrash-final", until_idle=True)
        assert final.wait(300) == 0, final.tail()
        wall = time.monotonic() - started
    finally:
        counter.close()
    lost_tags, problems = check_final_state(settings, tracks, reference)
    check = check_events(settings, list(tracks))
    twice, extra = counter.duplicates()
    reannounced = sum(e.get("count", 0) for w in workers.started
                      for e in w.events_named("worker.events_reannounced"))
    figures("worker SIGKILL at random points, events on", kills=done.kills, tracks=m,
            lost=len(set(check.lost) | set(lost_tags)), duplicates=twice, extra_writes=extra,
            events=check.events, duplicate_events=check.duplicates,
            tracks_announced_twice=check.announced_twice, events_reannounced=reannounced,
            kills_while_work_pending=done.while_work_pending,
            kills_during_startup=done.during_startup, wall_s=round(wall, 1))
    assert not lost_tags and not problems, (lost_tags[:10], problems[:10])
    assert_none_lost(check)
    assert all_committed(settings, ends) and done.kills == n


def test_killed_between_the_redis_write_and_the_publish_loses_no_event(
    stack, demo_model, fault_clips, audio_root, reference, workers, sizes, figures, tmp_path
) -> None:
    """Each worker process dies right after a batch's Redis write, before its events are
    published (injected): the next one is redelivered that batch, whose writes find the tags
    unchanged, and must publish them all the same."""
    deaths = max(4, sizes.crash_kills)
    settings = event_settings(stack, demo_model, [audio_root], batch_size=4)
    tracks = assign("evwindow", 4 * deaths + 8, fault_clips)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(DIE_BEFORE_PUBLISH)
    died = tmp_path / "died.txt"
    env = {"PYTHONPATH": f"{tmp_path / 'site'}:{Path(__file__).resolve().parents[2]}",
           "GENRETAG_FAULT_DIED_FILE": str(died), "GENRETAG_FAULT_DEATHS": str(deaths)}
    ends = end_offsets_of(list(send_tracks(settings, tracks).values()))
    started = time.monotonic()
    runs = 0
    while not all_committed(settings, ends):
        assert runs <= deaths + 1, f"{runs} runs and the topic is not done"
        worker = workers.start(settings, f"window-{runs}", until_idle=True, env=env)
        worker.wait(300)
        runs += 1
    wall = time.monotonic() - started
    written_not_announced = [line.split() for line in died.read_text().splitlines()]
    lost_tags, problems = check_final_state(settings, tracks, reference)
    check = check_events(settings, list(tracks))
    reannounced = sum(e.get("count", 0) for w in workers.started
                      for e in w.events_named("worker.events_reannounced"))
    figures("worker killed between the Redis write and the event publish", kills=deaths,
            tracks=len(tracks), lost=len(set(check.lost) | set(lost_tags)),
            events=check.events, duplicate_events=check.duplicates,
            tracks_written_not_announced=sum(map(len, written_not_announced)),
            events_reannounced=reannounced, worker_processes=runs, wall_s=round(wall, 1))
    assert len(written_not_announced) == deaths, died.read_text()
    assert not lost_tags and not problems, (lost_tags[:10], problems[:10])
    assert_none_lost(check)
    # Every track that died unannounced was announced by a redelivery that changed nothing.
    assert reannounced >= len({t for batch in written_not_announced for t in batch}), reannounced


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path_factory.mktemp("events-refusals-redis"))
    yield running
    running.close()


def test_redis_refusing_writes_with_events_on_loses_no_event(
    refusing, stack, demo_model, fault_clips, audio_root, workers, figures
) -> None:
    """OOM under a running worker: no tag is written, so no event and no commit; once lifted,
    every track is tagged and announced once."""
    settings = event_settings(stack, demo_model, [audio_root], redis_url=refusing.url,
                              batch_size=2)
    worker = workers.start(settings, "events-oom")
    wait_until(lambda: worker.count("worker.assigned") > 0 or not worker.alive(), 180,
               "the worker to join", diagnose=worker.tail)
    refusal = REFUSALS["OOM"]
    refusal.enter(refusing)
    tracks = assign("evoom", 6, fault_clips)
    ends = end_offsets_of(list(send_tracks(settings, tracks).values()))
    try:
        wait_until(lambda: worker.count("worker.transient_error") >= 3 or not worker.alive(),
                   180, "the worker to retry refused writes", diagnose=worker.tail)
        during = committed(settings)
        events_during = check_events(settings, list(tracks)).events
    finally:
        refusal.leave(refusing)
    wait_until(lambda: all_committed(settings, ends) or not worker.alive(), 180,
               "the run to complete once Redis accepts writes", diagnose=worker.tail)
    check = check_events(settings, list(tracks))
    alive = worker.alive()
    worker.signal(signal.SIGTERM)
    rc = worker.wait(60)
    figures("Redis refusing writes (OOM), events on", outages=1, tracks=len(tracks),
            lost=len(check.lost), events=check.events, events_while_refused=events_during,
            duplicate_events=check.duplicates)
    assert alive and rc == 0, worker.tail()
    assert not during and not events_during, (during, events_during)
    assert_none_lost(check)
    assert check.events == len(tracks) and not check.duplicates


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Servers of this module alone: the broker is killed here."""
    with LocalStack(tmp_path_factory.mktemp("events-outage-stack")) as running:
        yield running


def test_broker_restart_with_events_on_loses_no_event(
    own_stack, demo_model, fault_clips, audio_root, workers, sizes, figures, tmp_path
) -> None:
    """Tansu SIGKILLed and restarted under a running worker (tests/faults/test_outages.py's
    scenario): the tracks enqueued after the restart are all tagged and announced. Tansu keeps
    its topics in memory, so the events published before the restart are gone with it
    (broker-side loss is out of scope); the worker re-creates the events topic."""
    ensure_stack_up(own_stack)
    settings = event_settings(own_stack, demo_model, [audio_root], batch_size=4)
    before = assign("evbefore", sizes.broker_tracks, fault_clips)
    after = assign("evafter", sizes.broker_tracks, fault_clips)
    ends = end_offsets_of(list(send_tracks(settings, before).values()))
    worker = workers.start(settings, "events-broker")
    wait_until(lambda: all_committed(settings, ends) or not worker.alive(), 180,
               "the first tracks to be committed", diagnose=worker.tail)
    restarted_at = restart_broker(own_stack, settings, worker)
    refill(settings, ends, "evrefill", fault_clips[0])
    report = produce_cli(settings, after, tmp_path / "after.jsonl")

    def announced() -> bool:
        try:
            return not check_events(settings, list(after)).lost or not worker.alive()
        except Exception:  # noqa: BLE001 - the events topic is not back yet
            return False

    wait_until(announced, 240, "every new track to be announced", interval_s=1.0,
               diagnose=worker.tail)
    recovery_s = time.monotonic() - restarted_at
    check = check_events(settings, list(after))
    starts = worker.count("worker.starting")
    worker.signal(signal.SIGTERM)
    rc = worker.wait(60)
    figures("Tansu broker SIGKILLed and restarted, events on", outages=1, tracks=len(after),
            lost=len(check.lost), events=check.events, duplicate_events=check.duplicates,
            restart_to_all_announced_s=round(recovery_s, 1), worker_process_starts=starts,
            notes=["Events on: the events published before the broker restart are lost with "
                   "Tansu's in-memory topics (broker-side loss, out of scope); the tracks "
                   "enqueued after it are checked."])
    assert report["enqueued"] == len(after), report
    assert starts == 1 and rc == 0, worker.tail()
    assert not check.lost, check.lost[:10]
    assert not check.split, check.split[:10]
