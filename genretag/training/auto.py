"""``--arch auto``: of the candidates trained, export the best on validation, with the table.

The choice uses validation only (accuracy, then macro F1, then the model order), never test, so
the test score of the chosen model stays an honest estimate.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from genretag.core.logs import get_logger
from genretag.training.compare import MIN_COMPARABLE_TEST, format_duration
from genretag.training.run_report import AutoSelection, Candidate, RunReport

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
