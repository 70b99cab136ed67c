"""Connection-pool circuit breakers: Istio's defaults, overflow, idempotent release, threads."""

from __future__ import annotations

import threading

from pymesh.config.networking.destinationrule import (
    ConnectionPoolSettings,
    HTTPSettings,
    TCPSettings,
)
from pymesh.config.networking.destinationrule import RetryBudget as IstioRetryBudget
from pymesh.outbound.resilience.limits import UNLIMITED, Limits, PoolLimits, RetryTicket, Ticket


def pool(*, connections: int = 0, pending: int = 0, requests: int = 0, retries: int = 0) -> ConnectionPoolSettings:
    return ConnectionPoolSettings(
        tcp=TCPSettings(max_connections=connections),
        http=HTTPSettings(http1_max_pending_requests=pending, http2_max_requests=requests, max_retries=retries))


def test_istio_defaults_are_unlimited_not_envoys_1024() -> None:
    for p in (PoolLimits.compile(None), PoolLimits.compile(pool())):
        assert (p.max_connections, p.max_pending_requests, p.max_requests, p.max_retries) == (UNLIMITED,) * 4
        assert p.unlimited
    assert UNLIMITED == 2**32 - 1


def test_compile_takes_positive_values() -> None:
    p = PoolLimits.compile(pool(connections=4, pending=2, requests=10, retries=3))
    assert (p.max_connections, p.max_pending_requests, p.max_requests, p.max_retries) == (4, 2, 10, 3)
    assert not p.unlimited


def test_unlimited_hands_out_a_shared_ticket_without_counting() -> None:
    limits = Limits()
    ticket = limits.try_admit()
    assert ticket is not None
    assert ticket is limits.try_admit()
    assert limits.active == 0
    ticket.release()
    assert isinstance(limits.try_admit_retry(), RetryTicket)


def test_max_requests_overflows_and_release_is_idempotent() -> None:
    limits = Limits(PoolLimits.compile(pool(requests=2)))
    a, b = limits.try_admit(), limits.try_admit()
    assert a is not None
    assert b is not None
    assert limits.try_admit() is None  # overflow: 503 UO, never queued
    a.release()
    a.release()
    assert limits.active == 1
    c = limits.try_admit()
    assert c is not None
    assert limits.try_admit() is None
    with b, c:
        pass
    assert limits.active == 0


def test_pending_requests_beyond_the_connections() -> None:
    limits = Limits(PoolLimits.compile(pool(connections=1, pending=1)))
    first, second = limits.try_admit(), limits.try_admit()
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    assert limits.pending == 1
    assert limits.try_admit() is None
    h2 = Limits(PoolLimits.compile(pool(connections=1, pending=1, requests=3), multiplexed=True))
    assert [h2.try_admit() is not None for _ in range(4)] == [True, True, True, False]
    assert h2.pending == 0


def test_max_retries_and_retry_tickets() -> None:
    limits = Limits(PoolLimits.compile(pool(retries=1)))
    retry = limits.try_admit_retry()
    assert isinstance(retry, RetryTicket)
    assert limits.try_admit_retry() is None
    retry.release()
    retry.release()
    assert limits.active_retries == 0
    assert limits.try_admit_retry() is not None


def test_retry_budget_replaces_max_retries_with_envoys_rule() -> None:
    p = PoolLimits.compile(pool(retries=100), IstioRetryBudget(percent=50.0, min_retry_concurrency=1))
    assert (p.retry_budget_percent, p.min_retry_concurrency) == (50.0, 1)
    limits = Limits(p)
    assert limits.try_admit_retry() is not None  # the floor: 1 with no traffic
    assert limits.try_admit_retry() is None
    tickets = [limits.try_admit() for _ in range(10)]
    assert all(tickets)
    assert sum(limits.try_admit_retry() is not None for _ in range(10)) == 4  # 50 % of 10 = 5 in flight
    defaults = PoolLimits.compile(None, IstioRetryBudget())
    assert (defaults.retry_budget_percent, defaults.min_retry_concurrency) == (20.0, 3)


def test_overflow_and_release_under_eight_threads() -> None:
    cap = 5
    limits = Limits(PoolLimits.compile(pool(requests=cap)))
    barrier = threading.Barrier(8)
    lock = threading.Lock()
    inside = [0]
    peak = [0]
    overflows = [0]

    def work() -> None:
        barrier.wait()
        for _ in range(5000):
            ticket = limits.try_admit()
            if ticket is None:
                with lock:
                    overflows[0] += 1
                continue
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            with lock:
                inside[0] -= 1
            ticket.release()
            ticket.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= cap
    assert limits.active == 0
    assert limits.active_retries == 0
