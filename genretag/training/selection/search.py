"""The budgeted cross-validation that picks ``auto``'s winner.

Plan: each candidate's cost is estimated from the registry's relative costs (``feature_cost``,
``fit_cost``, relative to ``logreg``) scaled by what this run measured (the cheapest
candidate runs first, the yardstick); candidates whose features are cached cost no feature
pass. Heads on pretrained backbones come next, then the others cheapest first, and
candidates are skipped from the end until the plan fits ``budget`` with time left for the
winner's refit; once the yardstick has measured this machine (its features and first fold),
the plan is made again, so a candidate the prior estimates left out runs when it fits. Then
fold by fold (successive elimination): every running candidate fits the
fold; from the second fold on, a candidate whose paired accuracy difference to the leader is
below zero with 95 % confidence is eliminated, and when the remaining folds no longer fit the
budget the weakest candidates stop. The winner is the best over all folds of those that ran
them all; within ``TIE_MARGIN`` of it, the cheaper model to serve wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genretag.core.logs import get_logger
from genretag.training.items import Item
from genretag.training.selection.candidates import Candidate
from genretag.training.selection.crossval import (
    Trial,
    compute_trial_features,
    features_cached,
    fit_fold,
    pool_items,
)
from genretag.training.selection.folds import group_folds, paired_difference
from genretag.training.targets import TargetEncoder

log = get_logger(__name__)

#: Candidates within this much cross-validated accuracy of the best tie: the cheaper to serve
#: wins (so the chosen model is never more than this below the best).
TIE_MARGIN = 0.01
#: Before anything is measured: seconds per clip of the yardstick's (logreg's) feature pass
#: and of one of its fold fits, on 2 quiet CPU cores (docs/reports/training.md, load 1-3; the
#: default run on 248 clips at load 6-8 took 0.083 s per clip, much of it fixed cost);
#: replaced by this run's own figures once the first candidate ran. Other kinds scale these by
#: the registry's relative costs (the backbone head's embedding pass: feature_cost 3.9 on
#: ~250 clips).
YARDSTICK_FEATURE_SECONDS = 0.17
YARDSTICK_FIT_SECONDS = 0.5 / 200
#: Evaluation, export and report of the refitted winner, besides its fit.
EXPORT_SECONDS = 10.0


@dataclass
class SearchResult:
    """Every candidate's cross-validation, the winner, and why it won."""

    trials: list[Trial]
    winner: Trial
    pool: list[Item]
    fold: np.ndarray
    correct: dict[str, np.ndarray]  # per trial: out-of-fold hit per pool track
    why: str
    seconds: float


class Search:
    """One budgeted search over ``candidates`` (in any order) on ``items``."""

    def __init__(self, candidates: Sequence[Candidate], items: Sequence[Item],
                 encoder: TargetEncoder, folds: int = 5, seed: int = 0,
                 budget: float | None = None, cache_dir: Path | None = None,
                 progress: bool = False, say: Callable[[str], None] | None = None) -> None:
        if not candidates:
            raise ValueError("auto: no candidate to compare")
        self.items, self.encoder, self.budget = list(items), encoder, budget
        self.pool = pool_items(items)
        self.fold = group_folds(self.pool, folds, seed)
        self.k = int(self.fold.max()) + 1
        self.seed, self.cache_dir, self.progress = seed, cache_dir, progress
        self.say = say or (lambda text: None)
        n = len(encoder.labels)
        self.trials = [Trial(c, len(self.pool), n) for c in candidates]
        self.planned_out: list[Trial] = []  # skipped by the plan; reconsidered once measured
        self.truth = encoder.encode(self.pool)
        self.started = time.monotonic()
        self.feature_unit = YARDSTICK_FEATURE_SECONDS * len(self.items)
        self.fit_unit = YARDSTICK_FIT_SECONDS * len(self.pool)

    # --- time -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return float("inf") if not self.budget else self.budget - self.elapsed()

    def feature_estimate(self, trial: Trial) -> float:
        if trial.pool_feats is not None or features_cached(
                trial.candidate, self.items, self.pool, self.cache_dir):
            return 0.0
        return (trial.candidate.spec.feature_cost or 0.0) * self.feature_unit

    def fold_estimate(self, trial: Trial) -> float:
        if trial.fold_seconds:
            return trial.mean_fold_seconds
        return (trial.candidate.spec.fit_cost or 0.0) * self.fit_unit

    def reserve(self, trials: Sequence[Trial]) -> float:
        """Time kept for the refit of whichever of ``trials`` wins."""
        return EXPORT_SECONDS + 1.5 * max((self.fold_estimate(t) for t in trials), default=0)

    # --- the search -----------------------------------------------------------------------
    def run(self) -> SearchResult:
        """Plan, cross-validate fold by fold with elimination, choose."""
        self._plan()
        for k in range(self.k):
            for trial in list(self.trials):  # statuses may change on the way (the re-plan)
                if trial.status != "running":
                    continue
                if trial.pool_feats is None:
                    self._features(trial)
                    if trial.status != "running":
                        continue
                fit_fold(trial, self.pool, self.fold, k, self.encoder)
                cost = trial.candidate.spec.fit_cost
                if k == 0 and trial is self.trials[0]:  # the yardstick measured the machine
                    if cost:
                        self.fit_unit = trial.fold_seconds[0] / cost
                    self._fit_plan()
                self.say(f"{trial.name} fold {k + 1}/{self.k}: "
                         f"{self._accuracy(trial):.3f} so far, {trial.fold_seconds[-1]:.0f} s")
            if k >= 1:
                self._eliminate(k)
            if k < self.k - 1:
                self._press(k)
        for trial in self._running():
            trial.status = "done"
        return self._choose()

    def _running(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "running"]

    def _plan(self) -> None:
        """Order the candidates: the cheapest first (the yardstick), then the heads on
        pretrained backbones (on small catalogs they win: docs/reports/training.md), then the rest
        cheapest first; skip from the end until the estimates fit the budget."""
        self.trials.sort(key=self._estimate)
        yardstick, *rest = self.trials
        rest.sort(key=lambda t: not t.candidate.spec.needs_backbone)  # stable: by cost within
        self.trials = [yardstick, *rest]
        self._fit_plan()

    def _fit_plan(self) -> None:
        """Skip planned candidates from the end until the estimates of what is left to run
        fit the budget; those skipped before are reconsidered (the estimates may have been
        rescaled by what the yardstick measured)."""
        for trial in self.planned_out:
            trial.status, trial.reason = "running", ""
        self.planned_out = []
        while self.budget and len(self._running()) > 1:
            planned = self._running()
            need = sum(self._estimate(t) for t in planned) + self.reserve(planned)
            if need <= self.left():
                return
            dropped = planned[-1]
            dropped.status = "skipped"
            dropped.reason = (f"needs ~{self._estimate(dropped):.0f} s (features + "
                              f"{self.k} folds); the budget cannot hold it with the others")
            self.planned_out.append(dropped)

    def _estimate(self, trial: Trial) -> float:
        """Seconds still needed: its feature pass unless done or cached, its remaining folds."""
        rest = self.k - len(trial.fold_seconds)
        return self.feature_estimate(trial) + rest * self.fold_estimate(trial)

    def _features(self, trial: Trial) -> None:
        """The features of ``trial``; first candidate measured sets the cost units. A later
        one whose estimate no longer fits what is left is skipped before its pass."""
        first = not any(t.pool_feats is not None for t in self.trials)
        need = self._estimate(trial) + self.reserve([trial])
        if not first and self.budget and need > self.left():
            trial.status = "skipped"
            trial.reason = f"needs ~{need:.0f} s, {max(0.0, self.left()):.0f} s of budget left"
            return
        cached = self.feature_estimate(trial) == 0.0
        compute_trial_features(trial, self.items, self.pool, self.cache_dir, self.progress)
        cost = trial.candidate.spec.feature_cost
        if first and not cached and cost:
            self.feature_unit = trial.feature_seconds / cost
        self.say(f"{trial.name}: features in {trial.feature_seconds:.0f} s"
                 + (" (cache)" if cached else ""))

    def _correct(self, trial: Trial) -> tuple[np.ndarray, np.ndarray]:
        """(scored, hit) per pool track."""
        scored = ~np.isnan(trial.probs).any(1)
        top = np.where(scored, np.nan_to_num(trial.probs).argmax(1), 0)
        if self.encoder.objective == "single":
            hit = scored & (top == self.truth)
        else:
            hit = scored & (self.truth[np.arange(len(top)), top] > 0.5)
        return scored, hit

    def _accuracy(self, trial: Trial) -> float:
        scored, hit = self._correct(trial)
        return float(hit[scored].mean()) if scored.any() else float("nan")

    def _leader(self, trials: Sequence[Trial]) -> Trial:
        return max(trials, key=lambda t: (self._accuracy(t), -self.fold_estimate(t)))

    def _eliminate(self, k: int) -> None:
        running = self._running()
        if len(running) < 2:
            return
        leader = self._leader(running)
        for trial in running:
            if trial is leader:
                continue
            gap = self._paired(leader, trial)
            if gap["ci"][1] < 0:
                trial.status = "eliminated"
                trial.reason = (f"after {k + 1} folds {gap['difference']:+.3f} "
                                f"[{gap['ci'][0]:+.3f}, {gap['ci'][1]:+.3f}] vs {leader.name}")
                self.say(f"{trial.name} eliminated: {trial.reason}")

    def _paired(self, a: Trial, b: Trial) -> dict:
        scored_a, hit_a = self._correct(a)
        scored_b, hit_b = self._correct(b)
        both = scored_a & scored_b
        return paired_difference(hit_a[both], hit_b[both], self.seed)

    def _press(self, k: int) -> None:
        """Stop the weakest candidates while the remaining folds do not fit the budget."""
        if not self.budget:
            return
        while len(running := self._running()) > 1:
            rest = self.k - k - 1
            need = sum(self.fold_estimate(t) * rest for t in running) + self.reserve(running)
            if need <= self.left():
                return
            leader = self._leader(running)
            victim = min((t for t in running if t is not leader),
                         key=lambda t: (self._accuracy(t), -self.fold_estimate(t)))
            victim.status = "stopped"
            victim.reason = (f"after {k + 1} folds ({self._accuracy(victim):.3f}): its "
                             f"{rest} remaining folds did not fit the budget")
            self.say(f"{victim.name} stopped: {victim.reason}")

    def _choose(self) -> SearchResult:
        done = [t for t in self.trials if t.status == "done"]
        best = self._leader(done)
        best_acc = self._accuracy(best)
        tied = [t for t in done if self._accuracy(t) >= best_acc - TIE_MARGIN]
        winner = min(tied, key=lambda t: (_serve_cost(t), -self._accuracy(t)))
        acc = self._accuracy(winner)
        scored, _ = self._correct(winner)
        why = (f"{winner.name}: cross-validated accuracy {acc:.3f} over {int(scored.sum())} "
               f"tracks in {self.k} folds by group")
        if winner is not best:
            why += (f"; within {TIE_MARGIN:.2f} of {best.name} ({best_acc:.3f}) and cheaper to "
                    "serve")
        elif len(tied) > 1:
            rivals = ", ".join(t.name for t in tied if t is not winner)
            why += (f"; ties within {TIE_MARGIN:.2f} ({rivals}) and is the cheapest of them "
                    "to serve")
        others = [t for t in done if t is not winner]
        if others:
            runner = self._leader(others)
            gap = self._paired(runner, winner)
            why += (f"; {gap['difference']:+.3f} [{gap['ci'][0]:+.3f}, {gap['ci'][1]:+.3f}] "
                    f"vs the next, {runner.name} (paired)")
        correct = {t.name: self._correct(t)[1] for t in self.trials}
        return SearchResult(self.trials, winner, self.pool, self.fold, correct, why,
                            self.elapsed())


def _serve_cost(trial: Trial) -> float:
    cost = trial.candidate.spec.serve_cost
    return float("inf") if cost is None else cost
