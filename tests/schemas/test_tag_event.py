"""The TagEvent contract: versioned, frozen, strict, and its id a function of the content."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from genretag.schemas import TagChange, TagEvent, tag_event_id

WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(**kw) -> TagEvent:
    base = dict(track_id="t1", model_version="v2", labels=["rock", "pop"], primary_genre="rock",
                top_probabilities={"rock": 0.9, "pop": 0.6}, change=TagChange.CHANGED,
                previous_model_version="v1", previous_labels=["jazz"],
                previous_primary_genre="jazz", time=WHEN, uri="/music/a.mp3")
    base.update(kw)
    base.setdefault("event_id", tag_event_id(base["track_id"], base["model_version"],
                                             base["labels"], base["primary_genre"]))
    return TagEvent(**base)


def test_round_trips_through_json_and_is_frozen() -> None:
    e = event()
    assert TagEvent.model_validate_json(e.model_dump_json()) == e
    assert e.schema_version == 1
    with pytest.raises(ValidationError):
        e.labels = ["x"]  # type: ignore[misc]


def test_the_id_depends_on_the_content_only() -> None:
    a = tag_event_id("t1", "v2", ["rock", "pop"], "rock")
    assert a == tag_event_id("t1", "v2", ["pop", "rock"], "rock")  # a set of labels
    assert len(a) == 32 and int(a, 16) >= 0
    others = {tag_event_id("t2", "v2", ["rock", "pop"], "rock"),
              tag_event_id("t1", "v3", ["rock", "pop"], "rock"),
              tag_event_id("t1", "v2", ["rock"], "rock"),
              tag_event_id("t1", "v2", ["rock", "pop"], "pop"),
              tag_event_id("t1", "v2", ["rock", "pop"], None)}
    assert a not in others and len(others) == 5
    # Time, previous tags and probabilities are not content: the same id.
    assert event(time=datetime(2027, 1, 1, tzinfo=UTC), previous_labels=None,
                 top_probabilities={}).event_id == event().event_id


@pytest.mark.parametrize("bad, field", [
    ({"event_id": "0" * 32}, "is not the id of this content"),
    ({"schema_version": 2}, "schema_version"),
    ({"unknown": 1}, "unknown"),
    ({"track_id": "../x"}, "track_id"),
    ({"top_probabilities": {"rock": 1.5}}, "top_probabilities"),
    ({"change": TagChange.NEW}, "new track has no previous"),
    ({"previous_model_version": None}, "new track has no previous"),
    ({"time": datetime(2026, 12, 1)}, "time"),  # naive: ambiguous on the wire
])
def test_rejects_what_it_must(bad: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        event(**bad)


def test_a_new_track_has_no_previous_version() -> None:
    e = event(change=TagChange.NEW, previous_model_version=None, previous_labels=None,
              previous_primary_genre=None)
    assert e.change == "new"
