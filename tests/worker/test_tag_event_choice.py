"""Which settled outcome announces which tag event (the events sink's choice, no I/O)."""

from __future__ import annotations

import pytest

from genretag.core.store import PreviousTags
from genretag.schemas import DeadLetter, ReasonCode, TagChange, TagRecord, tag_event_id
from genretag.worker.job import Outcome
from genretag.worker.sinks.events import tag_event

RECORD = TagRecord(track_id="t1", model_version="v2",
                   probabilities={"rock": 0.9, "pop": 0.6, "jazz": 0.3, "folk": 0.3},
                   labels=["rock", "pop"], primary_genre="rock", uri="/m/a.mp3")
BEFORE = PreviousTags("v1", ("jazz",), "jazz")


def outcome(previous: PreviousTags | None, record: TagRecord | None = RECORD) -> Outcome:
    return Outcome("tracks", 0, 7, record=record, previous=previous)


def test_a_change_announces_the_new_tags_and_what_they_replaced() -> None:
    e = tag_event(outcome(BEFORE), "changed", top_k=3)
    assert e.change == TagChange.CHANGED and e.track_id == "t1" and e.uri == "/m/a.mp3"
    assert (e.model_version, e.labels, e.primary_genre) == ("v2", ["rock", "pop"], "rock")
    assert (e.previous_model_version, e.previous_labels, e.previous_primary_genre) == (
        "v1", ["jazz"], "jazz")
    assert e.event_id == tag_event_id("t1", "v2", ["rock", "pop"], "rock")
    assert list(e.top_probabilities) == ["rock", "pop", "folk"]  # ties by name
    assert e.time == RECORD.processed_at


def test_a_new_track_is_new() -> None:
    e = tag_event(outcome(PreviousTags()), "changed", top_k=5)
    assert e.change == TagChange.NEW and e.previous_model_version is None
    assert e.previous_labels is None and len(e.top_probabilities) == 4


def test_unchanged_tags_announce_nothing_unless_all() -> None:
    same = PreviousTags("v2", ("rock", "pop"), "rock", changed=False)
    assert tag_event(outcome(same), "changed", top_k=5) is None
    e = tag_event(outcome(same), "all", top_k=0)
    assert e.change == TagChange.UNCHANGED and e.previous_model_version == "v2"
    assert e.top_probabilities == {}


@pytest.mark.parametrize("mode", ["changed", "all"])
def test_a_redelivered_change_is_announced_again_as_the_change_it_was(mode: str) -> None:
    redelivered = PreviousTags("v2", ("rock", "pop"), "rock", changed=False,
                               redelivered=BEFORE)
    e = tag_event(outcome(redelivered), mode, top_k=5)
    assert e.change == TagChange.CHANGED and e.previous_labels == ["jazz"]
    first = PreviousTags("v2", ("rock", "pop"), "rock", changed=False,
                         redelivered=PreviousTags())
    assert tag_event(outcome(first), mode, top_k=5).change == TagChange.NEW


def test_dead_letters_and_unwritten_records_announce_nothing() -> None:
    letter = DeadLetter(reason=ReasonCode.MISSING_FILE, detail="gone", stage="decode",
                        track_id="t1", original="{}", source_topic="tracks", source_partition=0,
                        source_offset=7, worker_id="w")
    dead = Outcome("tracks", 0, 7, dead=letter)
    assert tag_event(dead, "all", top_k=5) is None
    assert tag_event(outcome(None), "all", top_k=5) is None  # the tag store refused it
