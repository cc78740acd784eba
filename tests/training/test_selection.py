"""auto's choice on a small catalog: features once per frontend (one decode, shared windows),
budgeted cross-validation with early elimination, ties to the cheaper model to serve, and the
default `genretag train --labels CSV` picking by cross-validation with a backbone head among the
candidates. Real decoders, real fits on generated audio; nothing mocked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from genretag.cli import main as genretag_main
from genretag.core.artifact import load_artifact
from genretag.training.feature_pool import (
    BATCH_SAMPLES,
    PlanRequest,
    compute_feature_pool,
    cut,
)
from genretag.training.features import WindowPlan, cache_paths, compute_features, plans
from genretag.training.items import LabelledItem
from genretag.training.presets import resolve_config
from genretag.training.registry import get_spec
from genretag.training.run_report import RunReport
from genretag.training.selection.candidates import make_candidate
from genretag.training.selection.crossval import Trial, compute_trial_features, pool_items
from genretag.training.selection import search as search_module
from genretag.training.selection.search import TIE_MARGIN, Search
from genretag.training.synth import make_synth_dataset
from genretag.training.targets import TargetEncoder
from tests.training.tiny_backbone import backbone_artifact

pytestmark = [pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
              pytest.mark.heavy]  # FFmpeg/decoder processes and training
LABELS = ["ambient", "noise", "techno"]
#: Small MFCC front ends, so each fit takes a fraction of a second.
FAST = {"sample_rate": 16000, "clip_seconds": 2.0, "frontend.n_fft": 512,
        "frontend.hop_length": 256, "frontend.n_mels": 40, "frontend.chunk_frames": 16,
        "decode_workers": 2, "device": "cpu", "epochs": 3, "batch_size": 8}
FAST_FLAGS = ["--sample-rate", "16000", "--clip-seconds", "2", "--n-fft", "512",
              "--hop-length", "256", "--n-mels", "40", "--chunk-frames", "16", "--workers", "2",
              "--device", "cpu", "--epochs", "3", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_synth_dataset(tmp_path_factory.mktemp("synth"), per_class=8, seconds=4.0,
                              workers=2, labels=LABELS)


def _items(clips) -> list[LabelledItem]:
    """Every 10th clip test, the next validation, the rest training."""
    splits = {0: "test", 1: "validation"}
    return [LabelledItem(c.path.stem, c.path, list(c.labels), splits.get(k % 10, "training"))
            for k, c in enumerate(clips)]


def _cfg(kind: str, **flags):
    return resolve_config(kind, {**FAST, **flags}, objective="single", dataset="synth")


@pytest.mark.parametrize("plan", [WindowPlan(3000, 4, 1.0), WindowPlan(3000, 7, 1.0, 1500),
                                  WindowPlan(3000, 1, 1.0, 700)])
def test_window_starts_cut_exactly_the_plans_windows(plan) -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2999, 3000, 3001, 4500, 6000, 9001, 12000, 30011):
        wave = rng.standard_normal(n).astype(np.float32)
        np.testing.assert_array_equal(cut(wave, plan.starts(n), plan.clip_samples),
                                      plan.windows(wave))


def test_feature_pool_equals_separate_passes_and_fills_their_cache(clips, tmp_path) -> None:
    """Both plans from one decode give what two compute_features calls give, and are cached
    under their keys (a later compute_features is a cache hit, not a second decode)."""
    items = _items(clips)
    cfg = _cfg("tdcnn")
    frontend = get_spec("tdcnn").build(cfg, 3).frontend
    train_plan, eval_plan = plans(cfg.clip_seconds, cfg.sample_rate, cfg.eval_windows,
                                  cfg.train_window, cfg.train_hop)
    pool = items[5:]
    pooled = compute_feature_pool(
        {"train": PlanRequest(pool, train_plan), "eval": PlanRequest(items, eval_plan)},
        frontend, cfg.sample_rate, workers=2, cache_dir=tmp_path / "cache", cache_key="k")
    for name, chosen, plan in (("train", pool, train_plan), ("eval", items, eval_plan)):
        alone = compute_features(chosen, frontend, plan, cfg.sample_rate, workers=2)
        np.testing.assert_allclose(np.asarray(pooled[name].feats), alone.feats, atol=1e-5)
        np.testing.assert_array_equal(pooled[name].owner, alone.owner)
        assert [i.item_id for i in pooled[name].items] == [i.item_id for i in alone.items]
        paths = cache_paths(tmp_path / "cache", chosen, plan, cfg.sample_rate, 1.0, "k")
        assert paths[0].exists() and paths[1].exists()
    assert train_plan.max_windows > eval_plan.max_windows  # the plans differ, yet share windows


class _Recording(torch.nn.Module):
    """A frontend that remembers how many windows each call got."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(wave))
        return self.inner(wave)


def test_feature_pool_batches_windows_of_several_clips(clips) -> None:
    """A clip's few windows are not a call each: consecutive clips share frontend calls up to
    BATCH_SAMPLES (a backbone's small per-clip batches cost it 2x per window), and every window
    is still computed once."""
    items = _items(clips)
    cfg = _cfg("tdcnn")
    frontend = _Recording(get_spec("tdcnn").build(cfg, 3).frontend)
    train_plan, eval_plan = plans(cfg.clip_seconds, cfg.sample_rate, cfg.eval_windows,
                                  cfg.train_window, cfg.train_hop)
    pooled = compute_feature_pool(
        {"train": PlanRequest(items, train_plan), "eval": PlanRequest(items, eval_plan)},
        frontend, cfg.sample_rate, workers=2)
    most = max(pooled["train"].owner.tolist().count(j) for j in range(len(items)))
    assert max(frontend.calls) > most  # one call held windows of more than one clip
    assert len(frontend.calls) < len(items)
    assert max(frontend.calls) <= max(1, BATCH_SAMPLES // train_plan.clip_samples)
    total = len(pooled["train"].feats) + len(pooled["eval"].feats)
    assert len(pooled["train"].feats) <= sum(frontend.calls) < total  # shared windows run once


def _delayed(clips, root: Path, seconds: float) -> list[LabelledItem]:
    """The clips (same splits) with ``seconds`` of silence before them: a model that only
    hears the start cannot tell the classes apart."""
    out = []
    for item in _items(clips):
        target = root / f"{item.item_id}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-t",
                        str(seconds), "-i", "anullsrc=r=16000:cl=mono", "-i", str(item.path),
                        "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1", "-ar", "16000",
                        "-ac", "1", str(target)], check=True)
        out.append(LabelledItem(item.item_id, target, item.labels, item.split))
    return out


def test_search_eliminates_a_clearly_worse_candidate_early(clips, tmp_path) -> None:
    """A logreg that hears only the silent first second scores chance; after two folds its
    paired difference to the logreg that hears the music is below zero: eliminated, never
    fitted on the remaining folds, and not chosen."""
    delayed = _delayed(clips, tmp_path, 1.0)
    deaf = _cfg("logreg", clip_seconds=1.0, eval_windows=1, train_seconds=1.0)
    hears = _cfg("logreg", clip_seconds=2.0, eval_windows=3)
    encoder = TargetEncoder.fit(delayed, "single")
    result = Search([make_candidate(deaf, "deaf"), make_candidate(hears, "hears")], delayed,
                    encoder, folds=4, cache_dir=tmp_path / "cache").run()
    by_name = {t.name: t for t in result.trials}
    assert result.winner.name == "hears" and by_name["hears"].status == "done"
    assert by_name["hears"].folds_done == 4
    assert by_name["deaf"].status == "eliminated" and by_name["deaf"].folds_done < 4
    assert "vs hears" in by_name["deaf"].reason
    assert result.correct["hears"].mean() > result.correct["deaf"].mean() + 0.3


def test_budget_skips_what_cannot_fit_and_the_yardstick_always_runs(clips, tmp_path) -> None:
    items = _items(clips)
    encoder = TargetEncoder.fit(items, "single")
    result = Search([make_candidate(_cfg("tdcnn")), make_candidate(_cfg("lstm")),
                     make_candidate(_cfg("logreg"))], items, encoder, folds=3, budget=1.0,
                    cache_dir=tmp_path / "cache").run()
    by_name = {t.name: t for t in result.trials}
    assert result.trials[0].name == "logreg"  # planned cheapest first: the yardstick
    assert by_name["logreg"].status == "done" and result.winner.name == "logreg"
    for name in ("tdcnn", "lstm"):
        assert by_name[name].status == "skipped" and by_name[name].pool_feats is None
        assert "needs ~" in by_name[name].reason
    assert not list((tmp_path / "cache").glob("*.json"))[2:]  # only logreg's two sets


def test_a_candidate_the_priors_left_out_runs_once_the_yardstick_measured(
        clips, tmp_path, monkeypatch) -> None:
    """Prior estimates that make the machine look 10^4 times slower than it is leave dense
    out of the plan; the yardstick's measured features and first fold show it fits the budget,
    so the plan made again lets it run all its folds (and reuse logreg's cached features)."""
    monkeypatch.setattr(search_module, "YARDSTICK_FEATURE_SECONDS", 1e4)
    items = _items(clips)
    encoder = TargetEncoder.fit(items, "single")
    search = Search([make_candidate(_cfg("dense")), make_candidate(_cfg("logreg"))], items,
                    encoder, folds=3, budget=900.0, cache_dir=tmp_path / "cache")
    search._plan()
    assert [(t.name, t.status) for t in search.trials] == [("logreg", "running"),
                                                             ("dense", "skipped")]
    result = Search([make_candidate(_cfg("dense")), make_candidate(_cfg("logreg"))], items,
                    encoder, folds=3, budget=900.0, cache_dir=tmp_path / "cache2").run()
    by_name = {t.name: t for t in result.trials}
    assert by_name["logreg"].status == "done" and by_name["logreg"].folds_done == 3
    assert by_name["dense"].status == "done" and by_name["dense"].folds_done == 3
    assert by_name["dense"].reason == "" and by_name["dense"].feature_seconds < 1.0
    assert result.seconds < 900.0


def test_the_plan_keeps_the_backbone_head_before_cheaper_kinds(clips, tmp_path) -> None:
    """A budget that holds the yardstick and one more candidate keeps the head on a pretrained
    backbone (on small catalogs it wins: docs/reports/training.md) and plans out a from-scratch
    kind that would cost less."""
    items = _items(clips)
    encoder = TargetEncoder.fit(items, "single")
    backbone = backbone_artifact(tmp_path / "tiny.pt")

    def search(budget: float | None) -> Search:
        return Search([make_candidate(_cfg("dense")),
                       make_candidate(_cfg("transfer", backbone=backbone)),
                       make_candidate(_cfg("logreg"))], items, encoder, folds=3,
                      budget=budget, cache_dir=tmp_path / "cache")

    priors = search(None)
    by_name = {t.name: t for t in priors.trials}
    need = {name: priors._estimate(t) for name, t in by_name.items()}
    assert need["dense"] < need["transfer"]  # the head is the dearer of the two
    budget = (need["logreg"] + need["transfer"] + 0.5 * need["dense"]
              + priors.reserve([by_name["logreg"], by_name["transfer"]]))
    planned = search(budget)
    planned._plan()
    assert [(t.name, t.status) for t in planned.trials] == [
        ("logreg", "running"), ("transfer", "running"), ("dense", "skipped")]


def test_a_backbone_head_trains_on_the_windows_it_is_served_on(clips, tmp_path) -> None:
    """The head's embedding pass is most of its cost: by default it trains on the worker's
    windows (10 per 30 s clip), not on windows every half clip (19), so the pass runs each
    clip's serving windows once and nothing more. --train-hop-seconds still asks for more."""
    items = _items(clips)
    backbone = backbone_artifact(tmp_path / "tiny.pt")
    head = make_candidate(_cfg("transfer", backbone=backbone))
    train_plan, eval_plan, _ = head.plans()
    rate = head.cfg.sample_rate
    for seconds in (2.0, 4.0, 12.0, 30.0, 45.0):
        n = int(seconds * rate)
        np.testing.assert_array_equal(train_plan.starts(n), eval_plan.starts(n))
    assert len(eval_plan.starts(30 * rate)) == 10
    denser = make_candidate(_cfg("transfer", backbone=backbone, train_hop_seconds=1.5))
    assert len(denser.plans()[0].starts(30 * rate)) == 19
    # the pass on real clips: every window through the backbone once, the serving ones only
    pool = pool_items(items)
    head._probe = _Recording(head.frontend(len(LABELS)))
    trial = Trial(head, len(pool), len(LABELS))
    compute_trial_features(trial, items, pool, tmp_path / "cache", progress=False)
    assert trial.pool_feats is not None and trial.eval_feats is not None
    served = {item.item_id: int((trial.eval_feats.owner == j).sum())
              for j, item in enumerate(trial.eval_feats.items)}
    trained = {item.item_id: int((trial.pool_feats.owner == j).sum())
               for j, item in enumerate(trial.pool_feats.items)}
    assert trained == {item.item_id: served[item.item_id] for item in pool}
    assert sum(head._probe.calls) == trial.eval_feats.n_windows


def test_a_tie_goes_to_the_cheaper_model_to_serve(clips, tmp_path) -> None:
    """logreg and dense both separate the generated classes; dense is listed first, logreg
    is cheaper to serve, so logreg wins the tie."""
    items = _items(clips)
    encoder = TargetEncoder.fit(items, "single")
    assert get_spec("logreg").serve_cost < get_spec("dense").serve_cost
    result = Search([make_candidate(_cfg("dense")), make_candidate(_cfg("logreg"))], items,
                    encoder, folds=3, cache_dir=tmp_path / "cache").run()
    acc = {name: hit.mean() for name, hit in result.correct.items()}
    assert abs(acc["dense"] - acc["logreg"]) <= TIE_MARGIN  # the tie this test is about
    assert result.winner.name == "logreg"
    assert "cheap" in result.why


def test_default_train_picks_by_cross_validation_with_the_backbone_head(clips, tmp_path,
                                                                       monkeypatch, capsys):
    """`genretag train --labels CSV --out M.pt`, no --arch: auto. The pretrained folder holds
    a (tiny) backbone; musicnn-msd cannot be fetched (no index), which one line says. The
    winner is chosen by cross-validation over training + validation, the backbone head is a
    candidate, features are computed once per frontend (the refit adds none) and the
    exported artifact is the winner's."""
    cache_home = tmp_path / "xdg"
    backbone_artifact(cache_home / "genretag" / "models" / "tiny.pt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\n" + "".join(
        f"{i.path},{i.labels[0]},{i.split}\n" for i in _items(clips)))
    out, cache = tmp_path / "m.pt", tmp_path / "decoded"
    assert genretag_main(["train", "--labels", str(csv), "--out", str(out), "--cache-dir",
                          str(cache), "--folds", "3", "--time-budget", "0",
                          "--train-hop-seconds", "1", *FAST_FLAGS]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "musicnn-msd could not" in line]
    assert len(notes) == 1 and "genretag models pull musicnn-msd" in notes[0]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    report = RunReport.model_validate_json(Path(summary["report"]).read_text())
    auto = report.auto
    assert auto is not None and auto.method == "cross-validation" and auto.folds == 3
    rows = {row.model: row for row in auto.cross_validation}
    assert {"logreg", "tdcnn", "transfer"} <= set(rows)
    assert rows["transfer"].status == "done" and rows["transfer"].tracks > 0
    chosen = [row for row in auto.cross_validation if row.selected]
    assert len(chosen) == 1 and chosen[0].model == auto.selected == summary["auto"]
    best = max(r.accuracy for r in rows.values() if r.status == "done")
    assert chosen[0].accuracy >= best - TIE_MARGIN
    assert auto.selected in auto.why and "cross-validated accuracy" in auto.why
    _, manifest = load_artifact(out)
    assert manifest.name == rows[auto.selected].model.split("@")[0]
    assert all(r.status != "skipped" for r in rows.values())  # no budget
    # three front ends (logreg/dense/cnn/lstm share the MFCC windows; tdcnn; the backbone),
    # two feature sets each (training plan over the pool, the worker's windows over all):
    # nothing more, so the refit of the winner decoded nothing
    assert len(list(cache.glob("feats-*.json"))) == 3 * 2
    assert "transfer" in Path(report.files["candidates"]).read_text()
