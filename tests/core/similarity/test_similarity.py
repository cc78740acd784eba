"""Stored vectors and similarity search on a real redis-server and real engines (the embedded
usearch folder, and milvus-lite: the pymilvus calls a Milvus server gets)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from genretag.core.settings import IndexSection, RedisSection
from genretag.core.similarity import SimilaritySearch, UnknownTrack, VectorIndexError, open_index
from genretag.core.store import EmbeddingReader, EmbeddingWriter, KeyLayout, TrackVector, connect
from genretag.schemas import TagRecord
from tests.store_parts import store_parts

pytestmark = pytest.mark.integration

SPACE = "musicnn-msd.penultimate.0123456789ab"
STYLES = ("rock", "jazz", "folk")


@pytest.fixture
def redis_section(stack) -> RedisSection:
    return RedisSection(url=stack.redis_url, key_prefix=f"sim{uuid.uuid4().hex[:6]}:")


def catalog(redis: RedisSection, per_style: int = 30, dim: int = 32, seed: int = 0
            ) -> dict[str, np.ndarray]:
    """Three styles' vectors (clusters) with their tags, written like the worker's sinks do."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(STYLES), dim)) * 3
    parts = store_parts(connect(redis), redis.key_prefix)
    writer = EmbeddingWriter(connect(redis, binary=True), KeyLayout(redis.key_prefix))
    vectors: dict[str, np.ndarray] = {}
    for s, style in enumerate(STYLES):
        for i in range(per_style):
            tid = f"{style}-{i}"
            vectors[tid] = (centres[s] + rng.standard_normal(dim)).astype(np.float32)
            parts.writer.write([TagRecord(track_id=tid, model_version="v1",
                                          probabilities={style: 0.9}, labels=[style],
                                          primary_genre=style)])
    assert writer.write(TrackVector(t, v, SPACE, "v1") for t, v in vectors.items()) == {}
    return vectors


@pytest.fixture(params=["usearch", "milvus-lite"])
def index(request, tmp_path: Path) -> IndexSection:
    suffix = ".usearch" if request.param == "usearch" else ".db"
    return IndexSection(uri=str(tmp_path / f"index{suffix}"), sync_batch=17)


def test_vectors_are_stored_as_float16_with_a_sequence(redis_section: RedisSection) -> None:
    writer = EmbeddingWriter(connect(redis_section, binary=True), KeyLayout(redis_section.key_prefix))
    reader = EmbeddingReader(connect(redis_section, binary=True), KeyLayout(redis_section.key_prefix))
    v = np.array([0.1, -2.5, 1000.25, 3.0], dtype=np.float32)
    writer.write([TrackVector("a", v, SPACE, "v1"), TrackVector("b", v * 2, SPACE, "v1")])
    writer.write([TrackVector("a", v, SPACE, "v2")])  # a redelivery or a re-tag: same key
    got = reader.get("a")
    assert got is not None and got.model_version == "v2" and got.space == SPACE
    assert np.array_equal(got.vector, v.astype(np.float16).astype(np.float32))
    raw = reader.client.hget(KeyLayout(redis_section.key_prefix).embedding("a"), "vector")
    assert len(raw) == 2 * len(v)  # float16: 2 bytes a value
    assert reader.count() == 2 and reader.last_seq() == 3
    assert [t for t, _ in reader.changed_since(1)] == ["b", "a"]
    assert reader.changed_since(3) == []
    with pytest.raises(ValueError, match="float16"):
        writer.write([TrackVector("c", np.array([np.nan, 1.0]), SPACE, "v1")])
    with pytest.raises(ValueError, match="float16"):
        writer.write([TrackVector("c", np.array([1e6, 1.0]), SPACE, "v1")])


def test_a_key_of_another_type_is_refused_the_rest_written(redis_section: RedisSection) -> None:
    keys = KeyLayout(redis_section.key_prefix)
    writer = EmbeddingWriter(connect(redis_section, binary=True), keys)
    writer.client.set(keys.embedding("bad"), "not a hash")
    refused = writer.write([TrackVector("bad", np.ones(4), SPACE, "v1"),
                            TrackVector("good", np.ones(4), SPACE, "v1")])
    assert list(refused) == ["bad"] and "TRACKKEY" in refused["bad"]
    assert EmbeddingReader(writer.client, keys).get("good") is not None
    assert writer.client.get(keys.embedding("bad")) == b"not a hash"


def test_neighbours_are_of_the_same_style_and_exclude_the_track(
        redis_section: RedisSection, index: IndexSection) -> None:
    vectors = catalog(redis_section)
    search = SimilaritySearch(redis_section, index)
    try:
        hits = search.similar_to_track("jazz-3", limit=10)  # embedded: synced on the way
        assert len(hits) == 10 and "jazz-3" not in [h.track_id for h in hits]
        assert all(h.track_id.startswith("jazz-") for h in hits), hits
        assert hits == sorted(hits, key=lambda h: -h.similarity)
        assert hits[0].genres == ("jazz",) and hits[0].model_version == "v1"
        exact = sorted((t for t in vectors if t != "jazz-3"), key=lambda t: -float(
            vectors[t] @ vectors["jazz-3"] / np.linalg.norm(vectors[t])
            / np.linalg.norm(vectors["jazz-3"])))[:10]
        assert len({h.track_id for h in hits} & set(exact)) >= 9
        rock = search.similar_to_track("jazz-3", limit=5, genre="rock")
        assert len(rock) == 5 and all(h.track_id.startswith("rock-") for h in rock)
        assert search.similar_to_track("jazz-3", limit=5, genre="no such genre") == []
        with pytest.raises(UnknownTrack, match="no stored embedding"):
            search.similar_to_track("never-tagged")
    finally:
        search.close()


def test_sync_is_incremental_moves_spaces_and_rebuilds_an_emptied_store(
        redis_section: RedisSection, index: IndexSection) -> None:
    catalog(redis_section, per_style=10)
    search = SimilaritySearch(redis_section, index)
    try:
        first = search.sync()
        assert first.upserted == 30 and first.mark == 30
        assert search.sync().upserted == 0  # nothing changed
        writer = EmbeddingWriter(connect(redis_section, binary=True),
                                 KeyLayout(redis_section.key_prefix))
        writer.write([TrackVector("rock-0", np.ones(32), "other.pooled.ffffffffffff", "v2")])
        moved = search.sync()
        assert moved.upserted == 1 and moved.moved == 1
        old = search.index.collection(SPACE)
        assert search.index.count(old) == 29
        assert search.index.count(search.index.collection("other.pooled.ffffffffffff")) == 1
        rebuilt = search.syncer.rebuild()
        assert rebuilt.rebuilt and rebuilt.upserted == 30
        assert search.index.count(old) == 29
        connect(redis_section).flushdb()  # the store was emptied: the index must not keep it
        emptied = search.sync()
        assert emptied.rebuilt and emptied.upserted == 0 and search.index.spaces() == []
    finally:
        search.close()


def test_the_sync_mark_survives_a_reopen(redis_section: RedisSection, index: IndexSection) -> None:
    catalog(redis_section, per_style=5)
    search = SimilaritySearch(redis_section, index)
    search.sync()
    search.close()
    again = SimilaritySearch(redis_section, index)
    try:
        assert again.index.mark() == 15 and again.sync().upserted == 0
        assert len(again.similar_to_track("folk-1", limit=3)) == 3
    finally:
        again.close()


def test_an_index_of_another_store_is_rebuilt_not_mixed(
        redis_section: RedisSection, index: IndexSection) -> None:
    catalog(redis_section, per_style=4)
    first = SimilaritySearch(redis_section, index)
    assert first.sync().upserted == 12
    first.close()
    other = redis_section.model_copy(update={"key_prefix": redis_section.key_prefix + "b:"})
    catalog(other, per_style=2, seed=1)
    second = SimilaritySearch(other, index)
    try:
        report = second.sync()
        assert report.rebuilt and report.upserted == 6
        assert sum(second.index.count(c) for c in second.index.spaces()) == 6
    finally:
        second.close()


def test_one_process_at_a_time_on_the_embedded_folder(tmp_path: Path) -> None:
    section = IndexSection(uri=str(tmp_path / "x.usearch"))
    first = open_index(section)
    try:
        with pytest.raises(VectorIndexError, match="open in another process"):
            subprocess.run([sys.executable, "-c", (
                "from genretag.core.settings import IndexSection\n"
                "from genretag.core.similarity import open_index\n"
                f"open_index(IndexSection(uri={section.uri!r}))")],
                check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        assert "open in another process" in exc.stderr
    finally:
        first.close()
    open_index(section).close()  # released: opens again


def test_the_query_path_imports_no_torch() -> None:
    code = ("import sys\nimport genretag.core.similarity\nimport genretag.core.store\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
