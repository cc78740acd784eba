"""Model sets without the stack: grouping by layout and embedding space, the load-time check
of a claimed shared backbone, the namespaces' names, and the model-set settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.modelset_models import head_on
from genretag.core.artifact import read_manifest
from genretag.core.errors import UsageError
from genretag.core.store import KeyLayout
from genretag.worker.infer import Tagger
from genretag.worker.modelset import ModelSet
from genretag.worker.settings import ModelSection, WorkerSettings
from tests.modelset_parts import HEAD_LABELS, tiny_backbone

pytestmark = pytest.mark.heavy  # scripts and exports small models


def _load(*paths: Path) -> list[Tagger]:
    return [Tagger.load(ModelSection(path=p, device="cpu"), calibrate=False, warmup=False)
            for p in paths]


def _windows(*counts: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((n, 48000)) * 0.1).astype(np.float32) for n in counts]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("set")
    backbone = tiny_backbone(root / "backbone.pt")
    head_on(backbone, HEAD_LABELS, root / "genres.pt", name="genres")
    head_on(backbone, ["a", "b"], root / "moods.pt", name="moods", seed=1)
    sha = read_manifest(backbone).sha256
    liar = tiny_backbone(root / "liar.pt", name="liar", seed=1, claimed=("tiny-musicnn", sha))
    return {"backbone": backbone, "genres": root / "genres.pt", "moods": root / "moods.pt",
            "liar": liar}


def test_heads_share_one_backbone_pass_and_equal_each_model_alone(artifacts) -> None:
    taggers = _load(artifacts["backbone"], artifacts["genres"], artifacts["moods"])
    models = ModelSet(taggers)
    [group] = models.shared
    assert group.members == [0, 1, 2] and len(models.layouts) == 1
    tracks = _windows(2, 3, 1)
    results = models.infer([tracks])
    assert models.passes == {f"backbone:{group.space}": 1}  # one backbone call for three models
    for k, tagger in enumerate(taggers):
        probs, emb = results[k]
        own_probs, own_emb = tagger.infer_windows(tracks)
        for a, b in zip(probs, own_probs, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        if k == 0:
            for a, b in zip(emb, own_emb, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-5)
        else:
            assert emb is None  # the stored embedding is the first model's
    models.infer([[]])  # an empty batch runs nothing
    assert sum(models.passes.values()) == 1


def test_a_claimed_space_that_is_not_the_same_runs_whole(artifacts) -> None:
    """``liar`` names the backbone's space in its manifest but has other weights: the probe
    check at load keeps it apart, so its tags are its own, never the backbone's."""
    backbone, liar = _load(artifacts["backbone"], artifacts["liar"])
    assert liar.manifest.embedding.space == backbone.manifest.embedding.space
    models = ModelSet([backbone, liar])
    assert models.shared == []
    tracks = _windows(2)
    results = models.infer([tracks])
    assert models.passes == {"model:": 1, "model:liar": 1}
    np.testing.assert_allclose(results[1][0][0], liar.infer_windows(tracks)[0][0], atol=1e-6)
    assert not np.allclose(results[1][0][0], backbone.infer_windows(tracks)[0][0][:, :3])


def test_names_must_differ_and_fit_in_keys(artifacts, tmp_path) -> None:
    backbone, genres = _load(artifacts["backbone"], artifacts["genres"])
    with pytest.raises(UsageError, match="two models are named genres"):
        ModelSet([backbone, genres, genres])
    odd = tmp_path / "odd.pt"
    head_on(artifacts["backbone"], HEAD_LABELS, odd, name="my genres")
    with pytest.raises(UsageError, match="cannot name a tag namespace"):
        ModelSet([backbone, *_load(odd)])


def test_models_setting_overrides_model_path() -> None:
    assert WorkerSettings().model.artifacts == [WorkerSettings().model.path]
    s = WorkerSettings(models="a.pt, b.pt", model_path="c.pt")
    assert s.model.artifacts == [Path("a.pt"), Path("b.pt")]
    assert s.updated(models="").model.artifacts == [Path("c.pt")]


def test_a_further_models_keys_live_under_its_namespace() -> None:
    keys = KeyLayout("p:")
    own = keys.for_model("genres")
    assert own.track("t1") == "p:ns:genres:track:t1"
    assert own.genre("rock") == "p:ns:genres:genre:rock"
    assert own.namespaces == keys.namespaces == "p:namespaces"
    assert own.for_model("moods").prefix == "p:ns:moods:"  # never nested
