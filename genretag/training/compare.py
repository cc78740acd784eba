"""Compare training runs side by side with the reference study's fma_small baselines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genretag.core.logs import get_logger

log = get_logger(__name__)

#: The reference study's fma_small results: model → (test accuracy, training time or None).
REFERENCE_FMA_SMALL: dict[str, tuple[float, str | None]] = {
    "logreg": (0.21, None),
    "dense": (0.31, None),
    "cnn": (0.36, None),
    "lstm": (0.35, None),
    "tdcnn": (0.42, "3h20m"),
}
_ORDER = {name: k for k, name in enumerate(REFERENCE_FMA_SMALL)}
#: Fewer test tracks than this and a run's accuracy is too uncertain to compare (the 95 %
#: interval of an accuracy near 0.8 is wider than ±0.08): flagged, no reference beside it.
MIN_COMPARABLE_TEST = 100


@dataclass(frozen=True)
class RunSummary:
    """The numbers of one run that ``compare`` prints."""

    path: Path
    model: str
    dataset: str
    objective: str
    n_test: int
    accuracy: float | None
    macro_f1: float | None
    roc_auc: float | None
    pr_auc: float | None
    train_seconds: float
    epochs: int
    skipped: int
    device: str
    accuracy_ci: tuple[float, float] | None = None

    @property
    def too_small(self) -> bool:
        """Whether the test split is too small for the run to be compared."""
        return self.n_test < MIN_COMPARABLE_TEST


def summarise(path: Path, report: dict[str, Any]) -> RunSummary:
    """The comparable numbers of a run report."""
    cfg, test = report.get("config", {}), report.get("test", {})
    model = str(cfg.get("model", "?"))
    if report.get("auto"):
        model = f"auto({model})"
    ci = test.get("accuracy_ci")
    return RunSummary(
        path=path, model=model, dataset=str(cfg.get("dataset") or "?"),
        objective=str(cfg.get("objective", "single")), n_test=int(test.get("n", 0)),
        accuracy=test.get("accuracy", test.get("top1_hit")), macro_f1=test.get("macro_f1"),
        roc_auc=test.get("roc_auc_macro"), pr_auc=test.get("pr_auc_macro"),
        train_seconds=float(report.get("train_seconds", 0.0)),
        epochs=len(report.get("history", [])),
        skipped=int(report.get("skipped_count", len(report.get("skipped", [])))),
        device=str(report.get("device", "?")), accuracy_ci=tuple(ci) if ci else None,
    )


def load_runs(runs_dir: Path) -> list[RunSummary]:
    """Every ``*.report.json`` under ``runs_dir`` (recursively); unreadable files are logged."""
    runs = []
    for path in sorted(Path(runs_dir).rglob("*.report.json")):
        try:
            runs.append(summarise(path, json.loads(path.read_text())))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("compare.unreadable_report", extra={"path": str(path), "error": str(exc)})
    runs.sort(key=lambda r: (r.dataset, r.objective, _ORDER.get(r.model, 99), str(r.path)))
    return runs


def format_duration(seconds: float | None) -> str:
    """``3h20m``, ``4m05s`` or ``12.3s``."""
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


def _fmt(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"


def compare_table(runs: list[RunSummary]) -> str:
    """A text table: every run with test accuracy, macro F1, AUCs and train time, next to the
    reference study's fma_small accuracy (and time) for the same model kind."""
    head = ("model", "dataset", "target", "test acc", "95% CI", "macro F1", "ROC-AUC", "PR-AUC",
            "train time", "epochs", "n test", "skipped", "ref acc", "ref time", "run")
    rows = []
    for r in runs:
        # a run with a tiny test split is flagged and never set beside the reference
        ref_acc, ref_time = (None, None) if r.too_small else REFERENCE_FMA_SMALL.get(
            r.model, (None, None))
        ci = f"{r.accuracy_ci[0]:.2f}-{r.accuracy_ci[1]:.2f}" if r.accuracy_ci else "-"
        rows.append((r.model, r.dataset, "multilabel" if r.objective == "multi" else "top",
                     _fmt(r.accuracy), ci, _fmt(r.macro_f1), _fmt(r.roc_auc), _fmt(r.pr_auc),
                     format_duration(r.train_seconds), str(r.epochs),
                     f"{r.n_test}{' (too small)' if r.too_small else ''}",
                     str(r.skipped), _fmt(ref_acc, 2), ref_time or "-", r.path.name))
    seen = {r.model for r in runs if not r.too_small}
    for model, (acc, took) in REFERENCE_FMA_SMALL.items():
        if model not in seen:
            rows.append((model, "fma_small (reference)", "top", "-", "-", "-", "-", "-", "-",
                         "-", "-", "-", _fmt(acc, 2), took or "-", "-"))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append("")
    lines.append("ref: the reference study's fma_small test accuracy (single-label top genre, "
                 "8 classes, chance 0.125).")
    small = sorted({r.path.name for r in runs if r.too_small})
    if small:
        lines.append(f"too small: {len(small)} run(s) have fewer than {MIN_COMPARABLE_TEST} test "
                     "tracks; their accuracy is too uncertain to compare (see the 95% CI) and "
                     "is not set beside the reference.")
    return "\n".join(lines) + "\n"
