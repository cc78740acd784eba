"""Fit the statistics models (logreg, dense) the textbook way: full batch, LBFGS, to convergence.

The per-window statistics (mean and std over time of every feature row) are computed once from
the cached features, standardised with the training mean and std, and the head is fit with
LBFGS on the mean loss plus an L2 penalty of ``½‖W‖² / (C·n)`` (scikit-learn's ``C``; the biases
are not penalised). ``C`` is chosen on validation (track-level accuracy, then loss) unless given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from genretag.core.logs import get_logger
from genretag.training.baselines import StatsClassifier
from genretag.training.fit import track_metrics
from genretag.training.features import FeatureSet

log = get_logger(__name__)

#: Inverse L2 strengths tried on validation when ``C`` is not given.
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
#: LBFGS iterations per fit (logreg converges in ~150 on the realset; the dense net is the
#: one that reaches the cap, which bounds its time).
MAX_ITER = 300
#: Intra-op threads of an LBFGS fit. Its operations are tiny (a few thousand windows × a few
#: hundred values), and threads that wait for each other on every one of them cost more than
#: they share: on the 2 shared CPU cores one thread fitted a fold of the musicnn head 3-6×
#: faster than two, with the same result (docs/reports/training.md).
FIT_THREADS = 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def window_stats(model: StatsClassifier, fs: FeatureSet, batch: int = 256) -> torch.Tensor:
    """``(n_windows, dim)`` float64 statistics of every cached window."""
    out = [model.stats(torch.from_numpy(np.array(fs.feats[i:i + batch])).double())
           for i in range(0, fs.n_windows, batch)]
    return torch.cat(out) if out else torch.zeros(0, model.mean.shape[0], dtype=torch.float64)


def lbfgs_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: str,
              c: float, seed: int = 0, reset: bool = True) -> tuple[float, int]:
    """Fit ``model``'s head on statistics ``x`` (float64) in place; returns (loss, iterations).
    ``reset=False`` starts from the head's current weights (a warm start)."""
    torch.manual_seed(seed)
    for layer in model.mlp if reset else ():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    weights = [p for name, p in model.mlp.named_parameters() if name.endswith("weight")]
    opt = torch.optim.LBFGS(model.mlp.parameters(), lr=1.0, max_iter=MAX_ITER, history_size=20,
                            tolerance_grad=1e-7, tolerance_change=1e-10,
                            line_search_fn="strong_wolfe")
    loss_fn = nn.CrossEntropyLoss() if objective == "single" else nn.BCEWithLogitsLoss()
    penalty = 1.0 / (c * max(1, len(x)))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(model.head(x), y) + 0.5 * penalty * sum((w * w).sum() for w in weights)
        loss.backward()
        return loss

    model.eval()  # dropout off: the objective must be deterministic for LBFGS
    with torch_threads(FIT_THREADS):
        opt.step(closure)
        iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
        return float(closure().detach()), iterations


def select_c(model: nn.Module, x: torch.Tensor, target: torch.Tensor, val_x: torch.Tensor,
             train: FeatureSet, y_train: np.ndarray, val: FeatureSet, y_val: np.ndarray,
             objective: str, c: float | None = None, seed: int = 0) -> list[dict[str, float]]:
    """Fit ``model``'s head on standardised ``x`` for each ``C`` (the grid, or the given one),
    keep the best on validation (track accuracy, then loss) and return one history row per
    ``C``, the kept one marked ``selected``. ``model`` has ``mlp`` and ``head`` (float64)."""
    history: list[dict[str, float]] = []
    best: tuple[tuple[float, float], dict[str, torch.Tensor], int] | None = None
    for k, cc in enumerate((c,) if c is not None else C_GRID, start=1):
        started = time.monotonic()
        loss, iterations = lbfgs_fit(model, x, target, objective, cc, seed)
        with torch.inference_mode():
            val_logits = model.head(val_x).float()
            train_logits = model.head(x).float()
        val_loss, val_acc = track_metrics(val_logits, val.owner, len(val.items), y_val, objective)
        _, train_acc = track_metrics(train_logits, train.owner, len(train.items), y_train,
                                     objective)
        history.append({"epoch": k, "C": cc, "train_loss": loss, "train_accuracy": train_acc,
                        "val_loss": val_loss, "val_accuracy": val_acc, "iterations": iterations,
                        "seconds": round(time.monotonic() - started, 3)})
        log.info("train.lbfgs", extra=history[-1])
        score = (-val_acc if val_acc == val_acc else 0.0, val_loss)
        if best is None or score < best[0]:
            best = (score, {n: t.detach().clone() for n, t in model.state_dict().items()}, k)
    assert best is not None
    model.load_state_dict(best[1])
    history[best[2] - 1]["selected"] = True
    return history


def fit_stats(model: StatsClassifier, train: FeatureSet, y_train: np.ndarray, val: FeatureSet,
              y_val: np.ndarray, objective: str, c: float | None = None,
              seed: int = 0) -> list[dict[str, float]]:
    """Standardise on training statistics, fit for each ``C`` (grid or the given one), keep
    the best on validation; returns one history row per ``C`` tried."""
    model.double()
    x = window_stats(model, train)
    model.set_standardisation(x)
    target = torch.from_numpy(y_train[train.owner])
    target = target if objective == "single" else target.double()
    history = select_c(model, x, target, window_stats(model, val), train, y_train, val, y_val,
                       objective, c, seed)
    model.float()
    return history
