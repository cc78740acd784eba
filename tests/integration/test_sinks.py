"""The output seam on the real stack: a sink added at run time (no edit of the loop, the settle
or the job), written after the tag store and before the commit, told what changed, and able to
refuse a track, which is then dead-lettered while the rest of the batch goes on."""

from __future__ import annotations

import pytest

from genretag.core.store import connect
from genretag.producer.ids import path_track_id
from genretag.worker import sinks
from genretag.worker.loop import run
from tests.integration.helpers import committed, produce_refs, refs_for
from tests.store_parts import store_parts

pytestmark = pytest.mark.integration


class Recording:
    """Records each write; checks the tag store already holds what it is given."""

    name = "recording"
    operation = "record"

    def __init__(self, settings, refuse: set[str]) -> None:
        self.store = store_parts(connect(settings.redis), settings.redis.key_prefix)
        self.refuse = refuse
        self.seen: list[dict] = []

    def write(self, outcomes, *, urgent: bool = False) -> dict[str, str]:
        for o in outcomes:
            stored = self.store.reader.get(o.record.track_id) if o.record else None
            self.seen.append({
                "id": o.record.track_id if o.record else o.dead.track_id,
                "dead": o.dead.reason.value if o.dead else None,
                "stored_first": stored is not None and o.record is not None
                and stored.model_version == o.record.model_version,
                "existed": o.previous.existed if o.previous else None,
                "previous_labels": o.previous.labels if o.previous else None,
            })
        return {tid: "recording refuses it" for tid in self.refuse
                if any(o.record and o.record.track_id == tid for o in outcomes)}

    def close(self) -> None:
        self.store.client.close()


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch):
    made: list[Recording] = []
    refuse: set[str] = set()

    def build(settings, context) -> Recording:
        made.append(Recording(settings, refuse))
        return made[-1]

    monkeypatch.setitem(sinks.FACTORIES, "recording", build)
    return made, refuse


def test_an_added_sink_sees_every_outcome_after_the_tag_store(worker_settings, demo_audio,
                                                             recording) -> None:
    made, refuse = recording
    settings = worker_settings(sinks="tags,recording", batch_size=4)
    clips = [c.path for c in demo_audio if c.split == "test"][:6]
    missing = "/tmp/genretag-no-such-file.mp3"
    refs = refs_for(clips) + [{"track_id": "gone", "uri": missing}]
    refuse.add(path_track_id(clips[0]))
    assert produce_refs(settings, refs) == len(refs)

    stats = run(settings, until_idle=True)
    seen = made[0].seen
    tagged = {row["id"] for row in seen if not row["dead"]}
    # Every good track reached the sink once, after its tags were in Redis, as new.
    assert tagged == {path_track_id(c) for c in clips}
    assert all(row["stored_first"] and row["existed"] is False for row in seen if not row["dead"])
    # The missing file reached it as a dead letter; the refused track came back as one.
    dead = {row["id"]: row["dead"] for row in seen if row["dead"]}
    assert dead["gone"] == "missing_file" and dead[path_track_id(clips[0])] == "internal"
    letters = {e.key: e.letter for e in made[0].store.dead.scan() if e.letter}
    assert "recording refuses it" in letters[path_track_id(clips[0])].detail
    assert (stats.tagged, stats.dead_lettered) == (len(clips) - 1, 2)
    assert sum(committed(settings).values()) == len(refs)  # and everything committed

    # A redelivery (another group) tells the sink what each track held before.
    refuse.clear()
    again = settings.updated(group_id=settings.consumer.group_id + "-again")
    run(again, until_idle=True)
    second = {row["id"]: row for row in made[1].seen if not row["dead"]}
    held = made[1].store.reader.get(path_track_id(clips[1]))
    assert second[path_track_id(clips[1])]["existed"] is True
    assert list(second[path_track_id(clips[1])]["previous_labels"]) == held.labels


def test_an_unknown_sink_is_a_usage_error(worker_settings) -> None:
    from genretag.core.errors import UsageError

    with pytest.raises(UsageError, match="unknown sink.*nosuch.*known are .*tags"):
        run(worker_settings(sinks="tags,nosuch"), until_idle=True)
