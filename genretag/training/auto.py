"""``--arch auto`` (the default of ``train`` on real data): choose a model, export it, report why.

Small sets (fewer than ``CV_BELOW`` validation tracks): k-fold cross-validation over training +
validation by group, budgeted, with early elimination (``selection.search``); the winner is
refit on the split and exported. Larger sets: every candidate is trained once and the best on
validation exported (``export_best``). Either way the choice never looks at test, so the
chosen model's test score stays an honest estimate.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genretag.core.logs import get_logger
from genretag.training.compare import MIN_COMPARABLE_TEST, format_duration
from genretag.training.config import TrainConfig
from genretag.training.items import Item
from genretag.training.selection.limits import DEFAULT_FOLDS
from genretag.training.run_report import AutoSelection, Candidate, CvCandidate, RunReport
from genretag.training.targets import TargetEncoder

if TYPE_CHECKING:
    from genretag.training.selection.search import SearchResult

log = get_logger(__name__)


def _score(report: RunReport) -> tuple[float, float]:
    acc = report.validation_accuracy
    f1 = report.validation.get("macro_f1")
    return (acc if acc is not None else -1.0, f1 if f1 is not None else -1.0)


def candidates_table(reports: dict[str, RunReport], selected: str) -> list[Candidate]:
    """One row per candidate: validation and test scores, train time, whether selected."""
    return [Candidate(
        model=model, selected=model == selected,
        validation_accuracy=report.validation_accuracy,
        validation_macro_f1=report.validation.get("macro_f1"),
        test_accuracy=report.test_accuracy, test_accuracy_ci=report.test.get("accuracy_ci"),
        test_macro_f1=report.test.get("macro_f1"),
        test_macro_f1_ci=report.test.get("macro_f1_ci"),
        train_seconds=round(report.train_seconds, 1), artifact=report.artifact,
    ) for model, report in reports.items()]


def candidates_text(rows: list[Candidate]) -> str:
    """The candidates as a text table (the report's ``auto.candidates.txt``)."""
    def num(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "-"

    def ci(v: Any) -> str:
        return f"[{v[0]:.3f}, {v[1]:.3f}]" if v else "-"

    head = f"{'model':8} {'val acc':>8} {'val F1':>8} {'test acc':>8} {'95% CI':>16} " \
           f"{'test F1':>8} {'95% CI':>16} {'time':>8}"
    lines = [head]
    for r in rows:
        lines.append(f"{r.model + ('*' if r.selected else ''):8} "
                     f"{num(r.validation_accuracy):>8} {num(r.validation_macro_f1):>8} "
                     f"{num(r.test_accuracy):>8} {ci(r.test_accuracy_ci):>16} "
                     f"{num(r.test_macro_f1):>8} {ci(r.test_macro_f1_ci):>16} "
                     f"{format_duration(r.train_seconds):>8}")
    lines.append("* selected on validation accuracy (then validation macro F1)")
    return "\n".join(lines) + "\n"


def export_best(reports: dict[str, RunReport], out: Path) -> tuple[Path, RunReport]:
    """Copy the best candidate's artifact to ``out``; write ``<out stem>.report.json`` (the
    best's report plus the candidates) and ``.candidates.txt``. Returns (path, report)."""
    if not reports:
        raise ValueError("auto: no candidate was trained")
    order = list(reports)
    selected = max(order, key=lambda m: (*_score(reports[m]), -order.index(m)))
    best = reports[selected]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if Path(best.artifact).resolve() != out.resolve():
        shutil.copyfile(best.artifact, out)
    rows = candidates_table(reports, selected)
    n_val = int(best.validation.get("n") or 0)
    warning = None
    if n_val < MIN_COMPARABLE_TEST:
        warning = (f"chosen on {n_val} validation tracks, too few to rank models reliably; "
                   "compare them by cross-validation: python -m bench.realset_cv --labels CSV")
        log.warning("train.auto_small_validation", extra={"validation_tracks": n_val})
    text = out.with_name(f"{out.stem}.candidates.txt")
    text.write_text(candidates_text(rows) + (f"warning: {warning}\n" if warning else ""))
    path = out.with_name(f"{out.stem}.report.json")
    best = best.model_copy(update={
        "auto": AutoSelection(selected=selected, candidates=rows, warning=warning),
        "artifact": str(out),
        "files": {**best.files, "json": str(path), "candidates": str(text)}})
    path.write_text(best.to_json())
    log.info("train.auto_selected", extra={"model": selected, "artifact": str(out)})
    return out, best


# --- small sets: choose by cross-validation, then refit the winner ---------------------------



def cv_rows(result: SearchResult, encoder: TargetEncoder, seed: int) -> list[CvCandidate]:
    """One row per candidate: status, out-of-fold scores, paired difference to the winner."""
    from genretag.training.evaluate import evaluate
    from genretag.training.selection.folds import paired_difference

    rows = []
    win_hit = result.correct[result.winner.name]
    for trial in result.trials:
        scored = ~np.isnan(trial.probs).any(1)
        report: dict[str, Any] = {}
        if scored.any():
            report = evaluate(trial.probs[scored], [i for i, s in zip(result.pool, scored) if s],
                              encoder, seed=seed)
        gap = None
        if trial is not result.winner and scored.any():
            both = scored & ~np.isnan(result.winner.probs).any(1)
            gap = paired_difference(win_hit[both], result.correct[trial.name][both], seed)
        rows.append(CvCandidate(
            model=trial.name, status=trial.status, selected=trial is result.winner,
            folds=trial.folds_done, tracks=int(scored.sum()),
            accuracy=report.get("accuracy", report.get("top1_hit")),
            accuracy_ci=report.get("accuracy_ci"), macro_f1=report.get("macro_f1"),
            vs_selected=gap["difference"] if gap else None,
            vs_selected_ci=gap["ci"] if gap else None,
            feature_seconds=round(trial.feature_seconds, 1),
            fit_seconds=round(sum(trial.fold_seconds), 1),
            serve_cost=trial.candidate.spec.serve_cost, reason=trial.reason))
    return rows


def cv_text(rows: list[CvCandidate], why: str, folds: int) -> str:
    """The cross-validation as a text table (the report's ``.candidates.txt``)."""
    def num(v: Any, fmt: str = ".3f") -> str:
        return format(v, fmt) if isinstance(v, float) else "-"

    def ci(v: Any, fmt: str = ".3f") -> str:
        return f"[{v[0]:{fmt}}, {v[1]:{fmt}}]" if v else "-"

    width = max(12, *(len(r.model) + 1 for r in rows))
    lines = [f"{'model':{width}} {'status':10} {'folds':>5} {'CV acc':>7} {'95% CI':>16} "
             f"{'macro F1':>8} {'vs chosen':>9} {'paired 95% CI':>18} {'features':>8} "
             f"{'fits':>8}  note"]
    for r in rows:
        lines.append(f"{r.model + ('*' if r.selected else ''):{width}} {r.status:10} "
                     f"{r.folds:>5} {num(r.accuracy):>7} {ci(r.accuracy_ci):>16} "
                     f"{num(r.macro_f1):>8} {num(r.vs_selected, '+.3f'):>9} "
                     f"{ci(r.vs_selected_ci, '+.3f'):>18} "
                     f"{format_duration(r.feature_seconds):>8} "
                     f"{format_duration(r.fit_seconds):>8}  {r.reason}")
    lines.append(f"* selected by {folds}-fold cross-validation: {why}")
    return "\n".join(lines) + "\n"


def choose_by_cross_validation(
        items: Sequence[Item], configs: Sequence[tuple[str, TrainConfig]], out: Path, *,
        folds: int = DEFAULT_FOLDS, budget: float | None = None, cache_dir: Path | None = None,
        progress: bool = False, allow_empty_split: bool = False,
        say: Callable[[str], None] | None = None) -> tuple[Path, RunReport]:
    """Cross-validate the candidates over training + validation (budgeted, with early
    elimination), refit the winner on the split (its features reused) and export it to
    ``out`` with the cross-validation in its report. Returns (path, report)."""
    from genretag.training.run_steps import fit_targets
    from genretag.training.selection.candidates import make_candidate
    from genretag.training.selection.crossval import refit_features
    from genretag.training.selection.search import Search
    from genretag.training.train import train_and_export

    started = time.monotonic()
    encoder = fit_targets(items, configs[0][1], allow_empty_split)
    candidates = [make_candidate(cfg, name) for name, cfg in configs]
    result = Search(candidates, items, encoder, folds, configs[0][1].seed, budget, cache_dir,
                    progress, say).run()
    winner = result.winner
    log.info("train.auto_cv", extra={"selected": winner.name, "why": result.why,
                                     "seconds": round(result.seconds, 1)})
    report = train_and_export(items, winner.candidate.cfg, out, cache_dir=cache_dir,
                              progress=progress, allow_empty_split=allow_empty_split,
                              features=refit_features(winner, items))
    rows = cv_rows(result, encoder, winner.candidate.cfg.seed)
    out = Path(out)
    text = out.with_name(f"{out.stem}.candidates.txt")
    text.write_text(cv_text(rows, result.why, result.fold.max() + 1))
    path = out.with_name(f"{out.stem}.report.json")
    report = report.model_copy(update={
        "auto": AutoSelection(
            selected=winner.name, candidates=candidates_table({winner.name: report},
                                                               winner.name),
            method="cross-validation", why=result.why, folds=int(result.fold.max()) + 1,
            budget_seconds=budget, search_seconds=round(result.seconds, 1),
            cross_validation=rows),
        "train_seconds": time.monotonic() - started,
        "files": {**report.files, "json": str(path), "candidates": str(text)}})
    path.write_text(report.to_json())
    return out, report
