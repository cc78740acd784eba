"""Model sets on the real stack (Tansu, redis-server, the decoders): one worker serves a
backbone tagger, a transfer head on it and a model of another window layout; every model's
tags land under its own namespace, the shared backbone runs once per batch, a redelivery leaves
the same store, and `genretag tags ID` shows every model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.modelset_models import head_on
from genretag.cli import main as genretag_main
from genretag.core.artifact import read_manifest
from genretag.core.store import KeyLayout, TagReader, connect
from genretag.producer.ids import path_track_id
from genretag.worker.loop import Worker
from genretag.worker.modelset import ModelSet
from genretag.worker.oneshot import LocalMessage
from genretag.worker.process import Processor
from genretag.worker.settings import ModelSection
from genretag.schemas import TrackRef
from tests.integration.helpers import committed, produce_refs, refs_for
from tests.modelset_parts import HEAD_LABELS, tiny_backbone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_set(tmp_path_factory) -> list[Path]:
    """Backbone tagger (16 kHz, 3 s), a head on it, and nothing else yet (tests add demo_model)."""
    root = tmp_path_factory.mktemp("modelset")
    backbone = tiny_backbone(root / "backbone.pt")
    head_on(backbone, HEAD_LABELS, root / "genres.pt", name="genres", threshold=0.0)
    return [backbone, root / "genres.pt"]


def _snapshot(client, prefix: str) -> dict:
    """Every key under ``prefix`` with its value (track hashes without processed_at)."""
    out = {}
    for key in client.scan_iter(match=f"{prefix}*"):
        kind = client.type(key)
        if kind == "hash":
            value = client.hgetall(key)
            value.pop("processed_at", None)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        else:
            value = client.get(key)
        out[key] = value
    return out


def test_one_worker_writes_every_models_namespace(worker_settings, demo_audio, demo_model,
                                                  model_set, capsys) -> None:
    paths = [*model_set, demo_model]
    settings = worker_settings(models=",".join(map(str, paths)), batch_size=4)
    clips = [c for c in demo_audio if c.split != "training"][:8]
    refs = refs_for([c.path for c in clips])
    assert produce_refs(settings, refs) == len(refs)
    worker = Worker(settings, until_idle=True)
    stats = worker.run()
    assert stats.tagged == len(clips) and stats.dead_lettered == 0
    assert sum(committed(settings).values()) == len(refs)

    models = worker.processor.models
    [shared] = models.shared
    assert [m.namespace for m in models.members] == ["", "genres", "tdcnn"]
    assert len(models.layouts) == 2  # 16 kHz × 3 s (backbone and head), the TD-CNN's own
    # The backbone ran once per model pass for both of its models; the TD-CNN on its own.
    assert models.passes[f"backbone:{shared.space}"] == models.passes["model:tdcnn"] >= 2
    assert set(models.passes) == {f"backbone:{shared.space}", "model:tdcnn"}

    manifests = [read_manifest(p) for p in paths]
    keys = KeyLayout(settings.redis.key_prefix)
    client = connect(settings.redis)
    reader = TagReader(client, keys)
    assert reader.namespaces() == ["genres", "tdcnn"]
    ids = [r["track_id"] for r in refs]
    every = reader.get_every_model(ids)
    for tid in ids:
        versions = {ns: rec.model_version for ns, rec in every[tid].items()}
        assert versions == {"": manifests[0].version, "genres": manifests[1].version,
                            "tdcnn": manifests[2].version}
        assert set(every[tid]["genres"].probabilities) == set(HEAD_LABELS)
    # Each namespace has its own label sets and model sets; the root holds the first model's.
    for ns, manifest in (("genres", manifests[1]), ("tdcnn", manifests[2])):
        own = keys.for_model(ns)
        assert set(client.smembers(own.model(manifest.version))) == set(ids)
        tagged = {t for g in client.smembers(own.genres)
                  for t in client.zrange(own.genre(g), 0, -1)}
        assert tagged == {t for t in ids if every[t][ns].labels} and tagged
        for tid in ids:
            for label in every[tid][ns].labels:
                assert client.zscore(own.label(label, manifest.kind_of(label)), tid) is not None
    assert not set(client.smembers(keys.genres)) & set(HEAD_LABELS)
    assert set(client.smembers(keys.model(manifests[0].version))) == set(ids)

    # A redelivery (another group reads the topic again) leaves exactly the same store.
    before = _snapshot(client, settings.redis.key_prefix)
    again = Worker(settings.updated(group_id=settings.consumer.group_id + "-again"),
                   until_idle=True).run()
    assert again.tagged == len(clips)
    assert _snapshot(client, settings.redis.key_prefix) == before

    cli = ["tags", ids[0], "--redis-url", settings.redis.url,
           "--redis-key-prefix", settings.redis.key_prefix]
    capsys.readouterr()
    assert genretag_main(cli) == 0
    table = capsys.readouterr().out
    assert "[genres]" in table and "[tdcnn]" in table and manifests[1].version in table
    assert genretag_main([*cli, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)[ids[0]]
    assert shown["model_version"] == manifests[0].version
    assert {ns: r["model_version"] for ns, r in shown["models"].items()} == {
        "genres": manifests[1].version, "tdcnn": manifests[2].version}


def test_model_set_tags_equal_each_model_alone(worker_settings, demo_audio, model_set) -> None:
    """Same decoded windows, same tags as each artifact served alone (the shared backbone and
    the heads apart are exact), and one backbone pass per batch however many tracks."""
    settings = worker_settings()
    clips = [c for c in demo_audio if c.split != "training"][:6]
    messages = [LocalMessage(TrackRef(track_id=path_track_id(c.path), uri=str(c.path))
                             .model_dump_json().encode(), offset=k) for k, c in enumerate(clips)]
    section = ModelSection(paths=[str(p) for p in model_set], device="cpu")
    models = ModelSet.load(section, calibrate=False)
    together = Processor(settings, models)
    try:
        first, second = together.process(messages[:3]), together.process(messages[3:])
    finally:
        together.close()
    assert models.passes == {f"backbone:{models.shared[0].space}": 2}
    for k, path in enumerate(model_set):
        alone = Processor(settings, ModelSet.load(ModelSection(path=path, device="cpu"),
                                                  calibrate=False))
        try:
            solo = alone.process(messages)
        finally:
            alone.close()
        for joint, own in zip(first + second, solo, strict=True):
            record = joint.record if k == 0 else joint.model_records["genres"]
            assert record.labels == own.record.labels
            np.testing.assert_allclose(list(record.probabilities.values()),
                                       list(own.record.probabilities.values()), atol=1e-5)
            if k == 0:  # the embedding is the first model's, as alone
                np.testing.assert_allclose(joint.embedding, own.embedding, atol=1e-5)
