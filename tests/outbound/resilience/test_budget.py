"""The per-cluster retry budget: ratio of requests plus a floor per second, over a sliding window."""

from __future__ import annotations

import threading

import pytest

from pymesh.config.networking.destinationrule import RetryBudget as IstioRetryBudget
from pymesh.outbound.resilience.budget import RetryBudget
from tests.outbound.resilience.conftest import FakeClock


def test_documented_defaults() -> None:
    budget = RetryBudget()
    assert (budget.ratio, budget.min_per_second, budget.ttl) == (0.2, 10.0, 10.0)


def test_istio_retry_budget_maps_percent_and_interval() -> None:
    assert RetryBudget.from_istio(None).ratio == 0.2
    mapped = RetryBudget.from_istio(IstioRetryBudget(percent=50.0, min_retry_concurrency=7, budget_interval=5.0))
    assert (mapped.ratio, mapped.ttl, mapped.min_per_second) == (0.5, 5.0, 10.0)
    assert RetryBudget.from_istio(IstioRetryBudget(budget_interval=120.0)).ttl == 60.0
    assert RetryBudget.from_istio(IstioRetryBudget(budget_interval=0.0)).ttl == 10.0


def test_the_floor_allows_min_per_second_times_ttl_without_traffic() -> None:
    budget = RetryBudget(clock=FakeClock())
    allowed = sum(budget.try_withdraw() for _ in range(1000))
    assert allowed == 100  # 10/s over 10 s


def test_deposits_buy_retries_at_the_ratio() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, clock=FakeClock())
    for _ in range(100):
        budget.deposit()
    assert budget.balance == pytest.approx(20.0)
    assert sum(budget.try_withdraw() for _ in range(100)) == 20


def test_deposits_and_withdrawals_expire_after_ttl() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=1.0, ttl=10.0, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert budget.balance == pytest.approx(15.0)  # 10 x 0.5 + 1/s x 10 s
    assert sum(budget.try_withdraw() for _ in range(20)) == 15
    clock.advance(5.0)
    assert not budget.try_withdraw()
    clock.advance(5.5)  # everything of the first second is forgotten: only the reserve is left
    assert budget.balance == pytest.approx(10.0)


def test_zero_ratio_leaves_only_the_floor() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, ttl=2.0, clock=FakeClock())
    for _ in range(1000):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(10)) == 2


def test_budget_caps_retries_at_the_ratio_under_total_failure() -> None:
    """1000 requests/s for 60 s, every one failing and wanting a retry: retries stay near 20 % + 10/s."""
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    requests = retries = 0
    for _ in range(60_000):
        clock.advance(0.001)
        budget.deposit()
        requests += 1
        if budget.try_withdraw():
            retries += 1
    floor = 10 * 60  # 10 retries/s for 60 s
    assert retries == pytest.approx(0.2 * requests + floor, rel=0.01)
    assert retries <= 0.2 * requests + floor  # an outage adds ~20 % load, never a multiple of it


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        RetryBudget(ttl=0.5)
    with pytest.raises(ValueError, match="negative"):
        RetryBudget(ratio=-0.1)


def test_thread_safe_under_eight_threads() -> None:
    budget = RetryBudget(ratio=0.25, min_per_second=0.0, clock=FakeClock())
    allowed = [0] * 8
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for _ in range(2000):
            budget.deposit()
            if budget.try_withdraw():
                allowed[n] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 16_000 // 4  # every deposit counted, every withdrawal exactly once
    assert budget.balance == pytest.approx(0.0)
