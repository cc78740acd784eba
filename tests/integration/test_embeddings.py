"""Embeddings end to end on the real stack: the worker's embeddings sink stores each tagged
track's vector, `genretag similar` answers from the embedded index (by id, --uri and a FILE),
`genretag index` rebuilds it, and a model without an embedding is refused clearly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from genretag.cli import main as genretag_main
from genretag.core.artifact import read_manifest
from genretag.core.errors import UsageError
from genretag.core.store import EmbeddingReader, KeyLayout, connect
from genretag.producer.ids import path_track_id
from genretag.worker.loop import run
from genretag.worker.metrics import WorkerMetrics
from genretag.worker.oneshot import tag_files
from genretag.worker.sinks import SinkContext, embeddings
from tests.integration.helpers import committed, produce_refs, refs_for

pytestmark = pytest.mark.integration


def _cli(settings, index: Path, *argv: str) -> list[str]:
    return [*argv, "--redis-url", settings.redis.url, "--redis-key-prefix",
            settings.redis.key_prefix, "--index-uri", str(index)]


def test_worker_stores_vectors_and_similar_answers(worker_settings, demo_audio, demo_model,
                                                   tmp_path, capsys) -> None:
    settings = worker_settings(sinks="tags,embeddings", batch_size=4)
    clips = [c for c in demo_audio if c.split != "training"][:16]
    label_of = {path_track_id(c.path): c.labels[0] for c in clips}
    refs = refs_for([c.path for c in clips])
    assert produce_refs(settings, refs) == len(refs)
    stats = run(settings, until_idle=True)
    assert stats.tagged == len(clips) and sum(committed(settings).values()) == len(refs)

    manifest = read_manifest(demo_model)
    keys = KeyLayout(settings.redis.key_prefix)
    reader = EmbeddingReader(connect(settings.redis, binary=True), keys)
    stored = reader.get_many(list(label_of))
    assert all(v is not None for v in stored.values())
    assert {v.space for v in stored.values()} == {manifest.embedding.space}
    assert {v.model_version for v in stored.values()} == {manifest.version}
    # The stored vector is the float16 of what the worker's own path computes for the file.
    first = clips[0].path
    [outcome] = tag_files([(path_track_id(first), first)], settings)
    np.testing.assert_array_equal(stored[path_track_id(first)].vector,
                                  outcome.embedding.astype(np.float16).astype(np.float32))
    seq = reader.last_seq()
    run(settings.updated(group_id=settings.consumer.group_id + "-again"), until_idle=True)
    again = reader.get_many(list(label_of))
    assert reader.last_seq() == seq + len(clips)  # a redelivery writes again...
    assert all(np.array_equal(again[t].vector, stored[t].vector) for t in label_of)  # ...the same

    index = tmp_path / "similarity.usearch"
    query = path_track_id(clips[5].path)
    assert genretag_main(_cli(settings, index, "similar", query, "--json", "--limit", "5")) == 0
    found = json.loads(capsys.readouterr().out)["neighbours"]
    assert len(found) == 5 and query not in [n["track_id"] for n in found]
    same = Counter(label_of[n["track_id"]] == label_of[query] for n in found)
    assert same[True] >= 3, (label_of[query], found)  # the synthetic classes are far apart

    assert genretag_main(_cli(settings, index, "similar", "--uri", str(clips[5].path),
                              "--json", "--limit", "5")) == 0
    assert json.loads(capsys.readouterr().out)["neighbours"] == found
    genre = label_of[query]
    assert genretag_main(_cli(settings, index, "similar", query, "--genre", genre,
                              "--json")) == 0
    assert {n["genres"][0] for n in json.loads(capsys.readouterr().out)["neighbours"]} == {genre}

    # A FILE is embedded now with the model; the track itself (stored) is left out.
    assert genretag_main(_cli(settings, index, "similar", str(clips[5].path), "--model",
                              str(demo_model), "--json", "--limit", "5")) == 0
    by_file = json.loads(capsys.readouterr().out)["neighbours"]
    assert [n["track_id"] for n in by_file] == [n["track_id"] for n in found]

    assert genretag_main(_cli(settings, index, "index", "status", "--json")) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["writes_not_indexed"] == 0 and sum(status["collections"].values()) == len(clips)
    assert genretag_main(_cli(settings, index, "index", "rebuild")) == 0
    assert f"{len(clips)} vector(s) upserted" in capsys.readouterr().out

    assert genretag_main(_cli(settings, index, "similar", "never-tagged")) == 1
    assert "no stored embedding" in capsys.readouterr().err


def test_embeddings_sink_needs_a_model_with_an_embedding(worker_settings, demo_model) -> None:
    manifest = read_manifest(demo_model)
    old = manifest.model_copy(update={"schema_version": 1, "embedding": None})
    with pytest.raises(UsageError, match="no embedding output"):
        embeddings.build(worker_settings(), SinkContext(old, WorkerMetrics()))
