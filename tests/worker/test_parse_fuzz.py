"""No message can make the parse → dead-letter path fail: named poison pills, then fuzzing.

Every message goes through the real :class:`genretag.worker.process.Processor` (parse, dead letter) and
the letter is encoded exactly as the worker sends it (``model_dump_json().encode()``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from genretag.core.errors import PermanentError
from genretag.core.settings import load_settings
from genretag.schemas import DeadLetter, ReasonCode
from genretag.worker.deadletter import build_dead_letter
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection
from genretag.worker.parse import parse_message, safe_text
from genretag.worker.process import Processor
from genretag.worker.settings import WorkerSettings

MAX_BYTES = 4096


@dataclass
class Record:
    """The fields of a Kafka ConsumerRecord that the processor reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@pytest.fixture(scope="module")
def processor(demo_model: Path, tmp_path_factory: pytest.TempPathFactory):
    s = load_settings(WorkerSettings, model_path=str(demo_model), device="cpu",
                      allowed_roots=[str(tmp_path_factory.mktemp("roots"))], decode_workers=1,
                      max_message_bytes=MAX_BYTES)
    proc = Processor(s, Tagger.load(ModelSection(path=s.model.path, device="cpu")))
    yield proc
    proc.close()


def sent(letter: DeadLetter) -> dict:
    """The letter as the worker sends it (UTF-8 JSON bytes), read back."""
    wire = letter.model_dump_json().encode("utf-8")
    back = DeadLetter.model_validate_json(wire)
    assert back.reason == letter.reason
    return json.loads(wire)


def through_processor(processor: Processor, value: bytes | None, offset: int = 7) -> dict:
    [outcome] = processor.process([Record("tracks", 1, offset, value)])
    assert outcome.record is None and outcome.dead is not None
    return sent(outcome.dead)


POISON = {
    "lone surrogate id, wrong uri": b'{"track_id":"\\ud800","uri":5}',
    "surrogate as a metadata key": b'{"track_id":"a","uri":"/x","metadata":{"\\udc00":1}}',
    "deep nesting": b"[" * 3000 + b"]" * 3000,
    "deep metadata": b'{"track_id":"a","uri":"/x","metadata":' + b'{"a":' * 200 + b"1" + b"}" * 201,
    "huge integer": b'{"track_id":"a","uri":"/x","metadata":{"n":' + b"9" * 5000 + b"}}",
    "control chars in id": b'{"track_id":"a\\u001b[31m\\n","uri":"/x.mp3"}',
    "huge id": b'{"track_id":"' + b"x" * 3000 + b'","uri":"/x.mp3"}',
    "trailing whitespace uri": b'{"track_id":"a","uri":"/music/a.mp3 "}',
    "not utf-8": b'{"track_id":"a","uri":"/\xff\xfe.mp3"}',
    "NUL in uri": b'{"track_id":"a","uri":"/x\\u0000.mp3"}',
    "a list": b"[1,2,3]",
    "empty": b"",
    "none": None,
    "oversized": b" " * (MAX_BYTES + 1),
}


@pytest.mark.parametrize("name", list(POISON))
def test_poison_pills_are_bad_messages_with_safe_letters(processor, name: str) -> None:
    letter = through_processor(processor, POISON[name])
    if name == "surrogate as a metadata key":  # valid JSON and schema: it reaches the roots check
        assert letter["reason"] == "disallowed_uri" and letter["track"]["track_id"] == "a"
    else:
        assert letter["reason"] == "bad_message", letter["detail"]
        assert letter["stage"] == "parse"
    assert letter["track_id"] is None or letter["track_id"] == "a"  # only contract-valid ids
    assert len(letter["detail"]) <= 1000
    assert not any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in letter["detail"])


def test_trailing_whitespace_is_rejected_not_stripped() -> None:
    with pytest.raises(PermanentError) as info:
        parse_message(b'{"track_id":"a","uri":"/music/a.mp3 "}', MAX_BYTES)
    assert "whitespace" in str(info.value)
    assert parse_message(b'{"track_id":"a","uri":"/music/a b.mp3"}', MAX_BYTES).uri == "/music/a b.mp3"


def test_build_dead_letter_never_raises_on_any_message_and_exception() -> None:
    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    odd_messages = [object(), Record("t", -1, -5, b"x"), Record(None, None, None, "str"),
                    Record("t\ud800" * 200, True, 2**70, b"\xff" * 10)]
    errors = [Hostile(), ValueError("\ud800\x00" * 5000),
              PermanentError(ReasonCode.UNDECODABLE, "x\udfff", track_id="\ud800", stage="nope")]
    for msg in odd_messages:
        for exc in errors:
            letter = sent(build_dead_letter(msg, exc, worker_id="w\ud800", max_bytes=100))
            assert letter["track_id"] is None
            assert letter["source_partition"] >= 0 and letter["source_offset"] >= 0
    internal = build_dead_letter(odd_messages[1], KeyError("k"), worker_id="w", max_bytes=100)
    assert internal.reason is ReasonCode.INTERNAL and internal.detail == "KeyError: 'k'"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                      max_size=4),
    max_leaves=20,
)
ref_like = st.fixed_dictionaries({}, optional={
    "track_id": st.text() | json_values, "uri": st.text() | json_values,
    "metadata": json_values, "schema_version": json_values, "enqueued_at": json_values,
    "extra": json_values})


def _encode(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()  # ASCII escapes keep lone surrogates


@hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.one_of(st.binary(max_size=300), ref_like.map(_encode), json_values.map(_encode)),
       offset=st.integers(0, 2**40))
def test_fuzzed_messages_always_become_sendable_dead_letters(processor, value, offset) -> None:
    [outcome] = processor.process([Record("tracks", 0, offset, value)])
    if outcome.record is not None:  # a valid reference (no file under the roots): not here
        pytest.fail("a fuzzed message was tagged")
    letter = sent(outcome.dead)
    assert letter["reason"] in {"bad_message", "disallowed_uri", "missing_file"}, letter
    assert letter["source_offset"] == offset
    assert letter["detail"] == safe_text(letter["detail"], 4000)


@hsettings(max_examples=200, deadline=None)
@given(text=st.text(), limit=st.integers(1, 50))
def test_safe_text_is_bounded_printable_utf8(text: str, limit: int) -> None:
    out = safe_text(text, limit)
    assert len(out) <= limit
    out.encode("utf-8")
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in out)
