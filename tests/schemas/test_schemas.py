"""Contracts: valid data round-trips through JSON; invalid data names the offending field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from genretag.schemas import (DeadLetter, FrontendParams, LogMelParams, ModelManifest, ReasonCode,
                     TagRecord, TrackRef)


def test_trackref_round_trip() -> None:
    ref = TrackRef(track_id="000002", uri="/music/a.mp3", metadata={"artist": "x"})
    again = TrackRef.model_validate_json(ref.model_dump_json())
    assert again == ref
    assert again.enqueued_at.tzinfo is not None


@pytest.mark.parametrize(
    "data, field",
    [
        ({"track_id": "../etc", "uri": "/a.mp3"}, "track_id"),
        ({"track_id": "a b", "uri": "/a.mp3"}, "track_id"),
        ({"track_id": "ok", "uri": ""}, "uri"),
        ({"track_id": "ok", "uri": "/a\n.mp3"}, "uri"),
        ({"track_id": "ok", "uri": "/a.mp3", "extra": 1}, "extra"),
        ({"track_id": "ok", "uri": "/a.mp3", "schema_version": 2}, "schema_version"),
    ],
)
def test_trackref_rejects_bad_fields(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrackRef.model_validate(data)
    assert field in {str(loc) for err in info.value.errors() for loc in err["loc"]}


def test_tag_record_checks_probabilities_and_labels() -> None:
    ok = TagRecord(track_id="t1", model_version="v1", probabilities={"rock": 0.9}, labels=["rock"])
    assert TagRecord.model_validate_json(ok.model_dump_json()) == ok
    with pytest.raises(ValidationError, match="outside"):
        TagRecord(track_id="t1", model_version="v1", probabilities={"rock": 1.5}, labels=[])
    with pytest.raises(ValidationError, match="no probability"):
        TagRecord(track_id="t1", model_version="v1", probabilities={"rock": 0.5}, labels=["pop"])


def _manifest(**kw) -> dict:
    base = dict(version="v1", labels=["a", "b"], sample_rate=22050, clip_seconds=30.0,
                thresholds={"a": 0.5, "b": 0.5}, sha256="0" * 64)
    base.update(kw)
    return base


def test_manifest_validation() -> None:
    m = ModelManifest(**_manifest())
    assert m.clip_samples == 22050 * 30
    with pytest.raises(ValidationError, match="thresholds missing"):
        ModelManifest(**_manifest(thresholds={"a": 0.5}))
    with pytest.raises(ValidationError, match="unique"):
        ModelManifest(**_manifest(labels=["a", "a"]))
    with pytest.raises(ValidationError, match="sha256"):
        ModelManifest(**_manifest(sha256="xyz"))
    with pytest.raises(ValidationError, match="n_mfcc"):
        FrontendParams(n_mfcc=64, n_mels=32)


def test_manifest_kinds_and_logmel_frontend_are_backward_compatible() -> None:
    old = ModelManifest(**_manifest())  # written before kinds existed: every label a genre
    assert old.kinds == {} and old.kind_of("a") == "genre"
    assert isinstance(old.frontend, FrontendParams)
    data = json.loads(old.model_dump_json())
    del data["kinds"]
    assert ModelManifest.model_validate(data) == old
    new = ModelManifest(**_manifest(kinds={"a": "mood"}, frontend=LogMelParams()))
    again = ModelManifest.model_validate_json(new.model_dump_json())
    assert again == new and again.kind_of("a") == "mood"
    assert isinstance(again.frontend, LogMelParams) and again.frontend.n_mels == 96
    with pytest.raises(ValidationError, match="not in labels"):
        ModelManifest(**_manifest(kinds={"zzz": "mood"}))
    with pytest.raises(ValidationError):
        ModelManifest(**_manifest(kinds={"a": "colour"}))


def test_dead_letter_reason_is_a_fixed_enum() -> None:
    letter = DeadLetter(reason="too_short", detail="0.3s", stage="decode", original="{}",
                        source_topic="t", source_partition=0, source_offset=5, worker_id="w")
    assert letter.reason is ReasonCode.TOO_SHORT
    with pytest.raises(ValidationError, match="reason"):
        DeadLetter(reason="bad_vibes", detail="", stage="decode", original="", source_topic="t",
                   source_partition=0, source_offset=0, worker_id="w")


def test_primary_genre_is_the_best_genre_kind_label_whatever_the_thresholds() -> None:
    from genretag.schemas import ModelManifest

    manifest = ModelManifest(version="v", labels=["rock", "happy", "jazz", "80s"],
                             kinds={"happy": "mood", "80s": "era"}, sample_rate=16000,
                             clip_seconds=3.0, thresholds=dict.fromkeys(
                                 ["rock", "happy", "jazz", "80s"], 0.9),
                             sha256="0" * 64)
    assert manifest.primary_genre([0.2, 0.95, 0.3, 0.99]) == "jazz"  # moods and eras skipped
    assert manifest.primary_genre([0.4, 0.1, 0.4, 0.1]) == "rock"  # a tie: the first label
    only_moods = manifest.model_copy(update={"kinds": dict.fromkeys(manifest.labels, "mood")})
    assert only_moods.primary_genre([0.2, 0.95, 0.3, 0.99]) is None
    record = TagRecord(track_id="t", model_version="v", probabilities={"rock": 0.2},
                       labels=[], primary_genre="rock")
    assert record.primary_genre == "rock" and record.labels == []
    with pytest.raises(ValidationError, match="primary_genre"):
        TagRecord(track_id="t", model_version="v", probabilities={"rock": 0.2}, labels=[],
                  primary_genre="jazz")
