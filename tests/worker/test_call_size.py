"""Model calls sized from a measured windows/s curve, not a constant."""

from __future__ import annotations

import pytest
import torch

from genretag.worker.infer import CALL_SIZES, Tagger, measure_call_curve, pick_call_size
from genretag.worker.settings import ModelSection


def test_pick_call_size_takes_the_largest_size_near_the_best_rate() -> None:
    # The shape the bench measured on a 2-core VM: flat to 4, a cliff at 8.
    assert pick_call_size({1: 530, 2: 528, 4: 531, 8: 276, 16: 240}) == 4
    assert pick_call_size({1: 100, 2: 180, 4: 300, 8: 310, 16: 400}) == 16  # GPU-like
    assert pick_call_size({1: 500, 2: 480, 4: 470, 8: 200}) == 2  # 4 is 6 % below the best
    assert pick_call_size({1: 500, 2: 480, 4: 470, 8: 200}, tolerance=0.1) == 4


def test_measured_curve_reflects_the_cost_of_each_call_size() -> None:
    """A module whose calls cost a fixed 20 ms whatever the size: rate grows with the size."""

    class Sleepy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import time

            time.sleep(0.02)
            return x[:, :2]

    curve = measure_call_curve(Sleepy(), 64, sizes=(1, 4), min_s=0.0, passes=1)
    assert set(curve) == {1, 4}
    # 4 windows per call for the same 20 ms: clearly more windows/s (sleep overshoots under
    # load, so only the direction and a margin are asserted, not the exact 4x).
    assert curve[4] > 2 * curve[1]
    assert pick_call_size(curve) == 4
    # A budget smaller than one size's timing: only the first size is measured.
    assert set(measure_call_curve(Sleepy(), 64, sizes=(1, 4), budget_s=0.01)) == {1}


def test_first_calls_are_warm_up_not_charged_to_the_budget() -> None:
    """TorchScript's first two calls (profile, optimise) are slow once: they must not use up
    the budget on size 1 (the pretrained models were sized 1 window per call by it)."""

    class Compiling(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import time

            self.calls += 1
            time.sleep(0.4 if self.calls <= 2 else 0.01)
            return x[:, :2]

    curve = measure_call_curve(Compiling(), 64, sizes=(1, 4), min_s=0.0, passes=1,
                               budget_s=0.3)
    assert set(curve) == {1, 4}
    assert curve[1] > 20  # ~100 windows/s once compiled, not the 2.5 of a compiling call


@pytest.mark.timeout(600)
def test_tagger_on_cpu_sizes_its_calls_from_the_curve(demo_model) -> None:
    tagger = Tagger.load(ModelSection(path=demo_model, device="cpu"))
    assert tagger.call_curve and set(tagger.call_curve) <= set(CALL_SIZES)  # budget: ≥ 1 size
    assert all(rate > 0 for rate in tagger.call_curve.values())
    assert tagger.max_windows_per_call == pick_call_size(tagger.call_curve)
    fixed = Tagger.load(ModelSection(path=demo_model, device="cpu", max_windows_per_call=3))
    assert fixed.max_windows_per_call == 3 and fixed.call_curve == {}
