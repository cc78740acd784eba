"""No failure while processing one message stops the rest: decode, windowing and model pass.

Real audio, the real trained model and the real Processor; the only thing injected is the
bug itself (a decoder group that raises, a windowing step that raises for one track, a model
that raises for one track's windows or returns the wrong shape, a crash in the model pass's
own bookkeeping). Each time the guilty message alone is dead-lettered ``internal`` and the
others get the tags a clean run gives them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from genretag.core.settings import load_settings
from genretag.schemas import ReasonCode, TrackRef
from genretag.worker.infer import Tagger
from genretag.worker.settings import ModelSection
from genretag.worker.job import Outcome
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.process import Prepared, Processor
from genretag.worker.settings import WorkerSettings


@dataclass
class Record:
    """The fields of a Kafka ConsumerRecord that the processor reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@pytest.fixture
def settings(demo_model: Path, tmp_path: Path) -> WorkerSettings:
    return load_settings(WorkerSettings, model_path=str(demo_model), device="cpu",
                         allowed_roots=[str(tmp_path), "/tmp"], decode_workers=1)


@pytest.fixture
def tagger(settings: WorkerSettings) -> Tagger:
    return Tagger.load(ModelSection(path=settings.model.path, device="cpu", max_windows_per_call=64))


@pytest.fixture
def records(demo_audio) -> list[Record]:
    """Five tracks in one partition (one decode chunk, one model pass)."""
    return [Record("t", 0, i, json.dumps({"track_id": f"track-{i}", "uri": str(c.path)}).encode())
            for i, c in enumerate(demo_audio[::9][:5])]


GUILTY = "track-2"


class Faulty:
    """The real module with a bug injected into both of its entry points (``forward`` for a
    schema-1 artifact, ``tag`` for contract v2, which the worker calls): ``before`` sees each
    chunk first (it may raise), ``probs``/``embeddings`` transform what the model returns."""

    def __init__(self, real, before=None, probs=None, embeddings=None) -> None:
        self.real, self.before = real, before or (lambda chunk: None)
        self.probs = probs or (lambda p: p)
        self.embeddings = embeddings or (lambda z: z)

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        self.before(chunk)
        return self.probs(self.real(chunk))

    def tag(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.before(chunk)
        probs, z = self.real.tag(chunk)
        return self.probs(probs), self.embeddings(z)


def run(processor: Processor, records: list[Record]) -> list[Outcome]:
    try:
        return processor.submit(records, "b").result()
    finally:
        processor.close()


def clean(settings: WorkerSettings, tagger: Tagger, records: list[Record]) -> dict[str, dict]:
    outcomes = run(Processor(settings, tagger), records)
    assert all(o.record for o in outcomes)
    return {o.record.track_id: o.record.probabilities for o in outcomes}


def check_only_guilty(outcomes: list[Outcome], want: dict[str, dict], stage: str) -> None:
    dead = {o.dead.track_id: o.dead for o in outcomes if o.dead}
    assert list(dead) == [GUILTY], [(d.track_id, d.detail) for d in dead.values()]
    assert dead[GUILTY].reason is ReasonCode.INTERNAL and dead[GUILTY].stage == stage
    for o in outcomes:
        if o.record:
            assert o.record.probabilities == pytest.approx(want[o.record.track_id], abs=1e-5)


def test_a_decoder_group_bug_is_isolated_per_file(settings, tagger, records) -> None:
    """The grouped decode raises for the whole chunk: each file is decoded on its own, and only
    the one whose windowing also fails is dead-lettered (before: the whole chunk was)."""
    want = clean(settings, tagger, records)

    class Buggy(Processor):
        def prepare_many(self, refs: list[TrackRef]) -> list:
            raise RuntimeError("decoder group bug")

        def prepare(self, ref: TrackRef) -> Prepared:  # the per-file path after the group bug
            if ref.track_id == GUILTY:
                raise ZeroDivisionError("windowing bug")
            return super().prepare(ref)

    outcomes = run(Buggy(settings, tagger), records)
    check_only_guilty(outcomes, want, "decode")
    assert "ZeroDivisionError: windowing bug" in next(o.dead.detail for o in outcomes if o.dead)


def test_a_model_that_raises_for_one_tracks_windows_dead_letters_that_track_only(
        settings, tagger, records) -> None:
    want = clean(settings, tagger, records)
    processor = Processor(settings, tagger)
    guilty = processor.prepare(TrackRef.model_validate_json(records[2].value)).windows
    poison = torch.from_numpy(guilty[0])

    def fail_on_poison(chunk: torch.Tensor) -> None:
        if any(torch.equal(row, poison) for row in chunk):
            raise RuntimeError("model fails on these windows")

    tagger.module = Faulty(tagger.module, before=fail_on_poison)
    check_only_guilty(run(processor, records), want, "infer")


def test_a_model_returning_the_wrong_shape_dead_letters_and_never_fails_the_job(
        settings, tagger, records) -> None:
    """Every call gives one row too few: the batch, then each track alone, fails; the job
    still settles with a dead letter per message (before: the job's result raised)."""
    tagger.module = Faulty(tagger.module, probs=lambda p: p[:-1])
    outcomes = run(Processor(settings, tagger), records)
    assert [o.dead.reason for o in outcomes] == [ReasonCode.INTERNAL] * len(records)
    assert not any(o.record for o in outcomes)



def test_a_model_returning_embeddings_of_the_wrong_shape_dead_letters_every_track(
        settings, tagger, records) -> None:
    """Contract v2: embeddings one row too few must not hand a track another's vector."""
    assert tagger.manifest.embedding is not None
    tagger.module = Faulty(tagger.module, embeddings=lambda z: z[:-1])
    outcomes = run(Processor(settings, tagger), records)
    assert [o.dead.reason for o in outcomes] == [ReasonCode.INTERNAL] * len(records)
    assert not any(o.record for o in outcomes)

def test_a_crash_in_the_model_pass_dead_letters_its_batch_and_the_next_batch_runs(
        settings, tagger, records) -> None:
    """A bug outside the per-track guards (here the model-stage metric) fails the whole pass:
    its messages are dead-lettered, the job settles, and the inference thread goes on."""
    metrics = WorkerMetrics("w")
    broken = metrics.stage_seconds

    class Labels:
        def labels(self, stage: str):
            if stage == "model":
                raise KeyError("metrics bug")
            return broken.labels(stage=stage)

    metrics.stage_seconds = Labels()  # type: ignore[assignment]
    processor = Processor(settings, tagger, metrics)
    try:
        first = processor.submit(records[:2], "b1").result()
        metrics.stage_seconds = broken  # fixed: the same processor and thread go on
        second = processor.submit(records[2:], "b2").result()
    finally:
        processor.close()
    assert [o.dead.reason for o in first] == [ReasonCode.INTERNAL] * 2
    assert "metrics bug" in first[0].dead.detail
    assert all(o.record for o in second), [o.dead for o in second]
