"""Run reports on disk: sklearn-style per-class tables, confusion and learning-curve PNGs, JSON.

Everything is written next to the artifact as ``<stem>.report.json``, ``<stem>.classes.txt``,
``<stem>.confusion.png`` (single-label) or ``<stem>.auc.png`` (multilabel) and
``<stem>.curves.png``. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genretag.core.logs import get_logger
from genretag.training.run_report import RunReport

log = get_logger(__name__)

_HEADERS = ("precision", "recall", "f1-score", "support")


def classification_table(report: dict[str, Any], labels: list[str], digits: int = 2) -> str:
    """The per-class table in the format of sklearn's ``classification_report``.

    Single-label reports end with ``accuracy``, ``macro avg`` and ``weighted avg`` rows;
    multilabel ones (no ``accuracy`` key) with ``micro``, ``macro``, ``weighted`` and
    ``samples avg``.
    """
    multilabel = "accuracy" not in report
    avg_rows = ["micro avg", "macro avg", "weighted avg", "samples avg"] if multilabel else [
        "macro avg", "weighted avg"]
    width = max([len(name) for name in labels] + [len("weighted avg"), digits])
    head = f"{'':>{width}s} " + "".join(f" {h:>9}" for h in _HEADERS)
    lines = [head, ""]
    per_class = report["per_class"]
    for name in labels:
        row = per_class[name]
        lines.append(_row(name, row["precision"], row["recall"], row["f1"], row["support"],
                          width, digits))
    lines.append("")
    total = int(sum(per_class[name]["support"] for name in labels))
    if not multilabel:
        n = int(report.get("n", total))
        lines.append(f"{'accuracy':>{width}s} " + f" {'':>9}" * 2
                     + f" {report['accuracy']:>9.{digits}f}" + f" {n:>9}")
    for avg in avg_rows:
        key = avg.split()[0]
        lines.append(_row(avg, report[f"{key}_precision"], report[f"{key}_recall"],
                          report[f"{key}_f1"], total, width, digits))
    return "\n".join(lines) + "\n"


def _row(name: str, p: float, r: float, f1: float, support: int, width: int, digits: int) -> str:
    return (f"{name:>{width}s} " + "".join(f" {v:>9.{digits}f}" for v in (p, r, f1))
            + f" {int(support):>9}")


def auc_table(report: dict[str, Any], labels: list[str], digits: int = 3) -> str:
    """Per-label ROC-AUC and PR-AUC (multilabel head) with macro and micro rows."""
    width = max([len(name) for name in labels] + [len("macro avg")])
    lines = [f"{'':>{width}s}   {'roc-auc':>9} {'pr-auc':>9} {'support':>9}", ""]
    for name in labels:
        row = report["per_class"][name]
        lines.append(f"{name:>{width}s}   {_num(row['roc_auc'], digits)} "
                     f"{_num(row['pr_auc'], digits)} {row['support']:>9}")
    lines.append("")
    for key in ("macro", "micro"):
        lines.append(f"{key + ' avg':>{width}s}   {_num(report[f'roc_auc_{key}'], digits)} "
                     f"{_num(report[f'pr_auc_{key}'], digits)}")
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int) -> str:
    return f"{value:>9.{digits}f}" if value is not None else f"{'n/a':>9}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str = "") -> Path:
    """Confusion matrix PNG: counts, rows = true, columns = predicted, row-normalised colour."""
    plt = _pyplot()
    n = len(labels)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        rows = cm.sum(axis=1, keepdims=True)
        ax.imshow(cm / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or "confusion matrix (test)")
        for i in range(n):
            for j in range(n):
                share = cm[i, j] / max(rows[i, 0], 1)
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                        color="white" if share > 0.5 else "black", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_learning_curves(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Loss (train, validation) and accuracy (train, validation) per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for key, label in (("train_loss", "train"), ("val_loss", "validation")):
            loss_ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=label)
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("loss")
        loss_ax.legend()
        for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
            acc_ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=label)
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylabel("accuracy (top-1)")
        acc_ax.set_ylim(0, 1)
        acc_ax.legend()
        from matplotlib.ticker import MaxNLocator

        for ax in (loss_ax, acc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(title or "learning curves")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_label_auc(report: dict[str, Any], labels: list[str], path: Path, title: str = "") -> Path:
    """Bar chart of ROC-AUC and PR-AUC per label (multilabel head)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(labels) + 2), 4))
    try:
        x = np.arange(len(labels))
        rows = report["per_class"]
        roc = [rows[n]["roc_auc"] if rows[n]["roc_auc"] is not None else np.nan for n in labels]
        pr = [rows[n]["pr_auc"] if rows[n]["pr_auc"] is not None else np.nan for n in labels]
        ax.bar(x - 0.2, roc, 0.4, label="ROC-AUC")
        ax.bar(x + 0.2, pr, 0.4, label="PR-AUC")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title(title or "per-label AUC (test)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def write_run_report(report: RunReport, report_dir: Path, stem: str) -> RunReport:
    """Write the JSON report, the text table(s) and the PNGs; returns the report with
    ``files`` (name → path) set, as written."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    labels, test, cfg = report.labels, report.test, report.config
    title = f"{cfg.model} on {cfg.dataset or 'dataset'}"
    files: dict[str, str] = {}
    if test.get("n", 0):
        text = classification_table(test, labels)
        if cfg.objective == "multi":
            text += "\n" + auc_table(test, labels)
            files["auc_png"] = str(plot_label_auc(test, labels, report_dir / f"{stem}.auc.png",
                                                  title))
        else:
            cm = np.array(test["confusion"], dtype=np.int64)
            png = report_dir / f"{stem}.confusion.png"
            files["confusion_png"] = str(plot_confusion(cm, labels, png, title))
        if report.untested_classes:
            text += ("\nno test items (left out of the macro averages): "
                     + ", ".join(report.untested_classes) + "\n")
        table = report_dir / f"{stem}.classes.txt"
        table.write_text(text)
        files["table"] = str(table)
    if report.history:
        files["curves_png"] = str(plot_learning_curves(report.history,
                                                       report_dir / f"{stem}.curves.png", title))
    path = report_dir / f"{stem}.report.json"
    files["json"] = str(path)
    report = report.model_copy(update={"files": files})
    path.write_text(report.to_json())
    log.info("report.written", extra={"dir": str(report_dir), "files": sorted(files)})
    return report
