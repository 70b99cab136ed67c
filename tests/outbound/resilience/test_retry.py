"""Retry policy compilation (Istio's retry.go), Envoy's retry conditions, backoff and RetryState."""

from __future__ import annotations

import random
import statistics

import pytest
import tenacity

from pymesh.config.networking.vs_http import HTTPRetry
from pymesh.outbound.resilience.budget import RetryBudget
from pymesh.outbound.resilience.classify import ErrorKind, Outcome, classify
from pymesh.outbound.resilience.limits import Limits, PoolLimits
from pymesh.outbound.resilience.retry import (
    ATTEMPT_HEADER,
    DEFAULT_RETRY_ON,
    NO_RETRY,
    EnvoyBackoff,
    Retry,
    RetryPolicy,
    RetryState,
    Stop,
)
from tests.outbound.resilience.conftest import FakeClock, ScriptedRandom


def err(kind: ErrorKind) -> Outcome:
    return classify(None, None, kind)


def status(code: int, **headers: str) -> Outcome:
    return classify(code, {k.replace("_", "-"): v for k, v in headers.items()}, None)


def policy(retry_on: str, attempts: int = 3, **kw: object) -> RetryPolicy:
    return RetryPolicy.compile(HTTPRetry(attempts=attempts, retry_on=retry_on, **kw))  # type: ignore[arg-type]


# -- compiling the policy ---------------------------------------------------------------------


def test_istio_default_policy_since_1_24() -> None:
    p = RetryPolicy.compile(None)
    assert p.attempts == 2
    assert p.retry_on == {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
    assert p.retriable_status_codes == frozenset()  # 503 no longer retried by default
    assert p.per_try_timeout is None
    assert p.retry_ignore_previous_hosts
    assert not p.retry_remote_localities
    assert (p.backoff_base, p.backoff_max) == (0.025, 0.25)
    assert not p.retriable(status(503))
    assert p.retriable(err("connect-failure"))
    assert p.retriable(err("refused-stream"))
    assert p.retriable(status(200, grpc_status="14"))  # unavailable
    assert p.retriable(status(200, grpc_status="1"))  # cancelled
    assert not p.retriable(status(200, grpc_status="4"))
    assert not p.retriable(err("reset"))
    assert not p.retriable(err("timeout"))


def test_consistent_hash_drops_the_previous_hosts_predicate() -> None:
    assert not RetryPolicy.compile(None, consistent_hash=True).retry_ignore_previous_hosts
    assert not RetryPolicy.compile(HTTPRetry(attempts=1), consistent_hash=True).retry_ignore_previous_hosts


def test_mesh_default_applies_only_without_route_retries() -> None:
    mesh = HTTPRetry(attempts=5, retry_on="5xx")
    assert RetryPolicy.compile(None, mesh).attempts == 5
    assert RetryPolicy.compile(None, mesh).retry_on == {"5xx"}
    route = RetryPolicy.compile(HTTPRetry(attempts=1), mesh)  # the route block replaces it whole
    assert route.attempts == 1
    assert route.retry_on == DEFAULT_RETRY_ON
    assert RetryPolicy.compile(None, HTTPRetry(attempts=0)) is NO_RETRY


def test_attempts_zero_disables() -> None:
    p = RetryPolicy.compile(HTTPRetry(attempts=0))
    assert p is NO_RETRY
    assert not p.enabled
    state = RetryState(p)
    assert state.record(err("connect-failure"), 0) == Stop("complete", "UF")  # no URX: no policy at all


def test_retries_without_retry_on_keep_the_default_conditions() -> None:
    p = RetryPolicy.compile(HTTPRetry(attempts=3, per_try_timeout=0.4))
    assert p.retry_on == DEFAULT_RETRY_ON
    assert p.per_try_timeout == 0.4
    assert not p.retriable(err("timeout"))  # a per-try timeout alone is not retried


def test_bare_codes_become_retriable_status_codes() -> None:
    p = policy("503,gateway-error,409")
    assert p.retriable_status_codes == {503, 409}
    assert p.retry_on == {"gateway-error", "retriable-status-codes"}
    assert p.retriable(status(409))
    assert not policy("retriable-status-codes").retriable(status(503))  # no codes: nothing matches


def test_backoff_and_host_options() -> None:
    p = RetryPolicy.compile(HTTPRetry(attempts=1, backoff=0.1, retry_ignore_previous_hosts=False,
                                      retry_remote_localities=True))
    assert (p.backoff_base, p.backoff_max) == (0.1, 1.0)
    assert not p.retry_ignore_previous_hosts
    assert p.retry_remote_localities
    assert p == RetryPolicy.compile(HTTPRetry(attempts=1, backoff=0.1, retry_ignore_previous_hosts=False,
                                              retry_remote_localities=True))


# -- Envoy's retry conditions -------------------------------------------------------------------

CASES: list[tuple[str, Outcome, bool]] = [
    ("5xx", status(500), True), ("5xx", status(503), True), ("5xx", status(404), False),
    ("5xx", err("connect-failure"), True), ("5xx", err("reset"), True), ("5xx", err("refused-stream"), True),
    ("5xx", err("timeout"), True), ("5xx", err("overflow"), False),
    ("gateway-error", status(502), True), ("gateway-error", status(504), True),
    ("gateway-error", status(500), False), ("gateway-error", err("reset"), True),
    ("gateway-error", err("timeout"), True),
    ("reset", err("reset"), True), ("reset", err("connect-failure"), True), ("reset", err("timeout"), True),
    ("reset", status(503), False),
    ("reset-before-request", err("connect-failure"), True), ("reset-before-request", err("reset"), False),
    ("reset-before-request", err("timeout"), False),
    ("connect-failure", err("connect-failure"), True), ("connect-failure", err("reset"), False),
    ("connect-failure", err("timeout"), False), ("connect-failure", status(503), False),
    ("refused-stream", err("refused-stream"), True), ("refused-stream", err("reset"), False),
    ("retriable-4xx", status(409), True), ("retriable-4xx", status(408), False),
    ("503", status(503), True), ("503", status(502), False),
    ("envoy-ratelimited", status(429, x_envoy_ratelimited="1"), True),
    ("envoy-ratelimited", status(429), False),
    ("5xx", status(503, x_envoy_ratelimited="1"), False),  # rate-limited: only envoy-ratelimited retries it
    ("retriable-headers", status(503), False), ("http3-post-connect-failure", err("reset"), False),
    ("cancelled", status(200, grpc_status="1"), True), ("deadline-exceeded", status(200, grpc_status="4"), True),
    ("resource-exhausted", status(200, grpc_status="8"), True), ("internal", status(200, grpc_status="13"), True),
    ("unavailable", status(200, grpc_status="14"), True), ("unavailable", status(200, grpc_status="13"), False),
    ("unavailable", status(200), False),
]


@pytest.mark.parametrize(("retry_on", "outcome", "expected"), CASES)
def test_retry_conditions(retry_on: str, outcome: Outcome, expected: bool) -> None:
    assert policy(retry_on).retriable(outcome) is expected


# -- backoff -----------------------------------------------------------------------------------


def test_backoff_is_tenacitys_full_jitter_with_envoys_windows() -> None:
    p = RetryPolicy()
    assert isinstance(p.backoff, tenacity.wait_random_exponential)
    call = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    windows = []
    for n in range(1, 7):
        call.attempt_number = n
        windows.append(tenacity.wait_exponential.__call__(p.backoff, call))
    assert windows == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25, 0.25])


@pytest.mark.parametrize(("retry", "window"), [(1, 0.025), (2, 0.05), (3, 0.1), (4, 0.2), (5, 0.25), (9, 0.25)])
def test_backoff_bounds_and_distribution(retry: int, window: float) -> None:
    backoff = EnvoyBackoff(multiplier=0.025, max=0.25)
    call = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    call.attempt_number = retry
    rng = random.Random(7)
    draws = [backoff.draw(call, rng) for _ in range(10_000)]
    assert min(draws) >= 0.0
    assert max(draws) < window
    assert max(draws) > 0.99 * window  # full jitter reaches the top of the window
    assert statistics.fmean(draws) == pytest.approx(window / 2, rel=0.03)  # uniform: mean = window/2
    assert statistics.pstdev(draws) == pytest.approx(window / 12**0.5, rel=0.03)


def test_backoff_draws_are_deterministic_for_a_seed() -> None:
    def delays(seed: int) -> list[float]:
        state = RetryState(policy("5xx", attempts=5), rng=random.Random(seed))
        return [v.delay for v in (state.record(status(503), 0) for _ in range(5)) if isinstance(v, Retry)]

    assert delays(1) == delays(1)
    assert delays(1) != delays(2)
    assert len(delays(1)) == 5


# -- RetryState --------------------------------------------------------------------------------


def test_attempts_are_counted_and_exhaustion_is_urx() -> None:
    state = RetryState(policy("5xx", attempts=2), rng=random.Random(1))
    assert state.attempt == 1
    first = state.record(status(503), 0)
    assert isinstance(first, Retry)
    assert first.attempt == state.attempt == 2
    second = state.record(status(503), 1)
    assert isinstance(second, Retry)
    assert second.attempt == 3
    assert state.record(status(503), 2) == Stop("exhausted", "URX")
    assert state.tried == (0, 1, 2)
    assert ATTEMPT_HEADER == "x-pymesh-attempt-count"


def test_exhaustion_after_a_connect_failure_keeps_both_flags() -> None:
    state = RetryState(policy("connect-failure", attempts=1))
    assert isinstance(state.record(err("connect-failure"), 0), Retry)
    assert state.record(err("connect-failure"), 1) == Stop("exhausted", "UF,URX")


def test_success_and_unmatched_failures_complete() -> None:
    state = RetryState(policy("connect-failure"))
    assert state.record(status(200), 0) == Stop("complete", "")
    assert RetryState(policy("connect-failure")).record(status(503), 0) == Stop("complete", "")
    assert RetryState(policy("connect-failure")).record(err("reset"), 0) == Stop("complete", "UC")


def test_overflow_is_never_retried() -> None:
    assert RetryState(policy("5xx,reset")).record(err("overflow"), None) == Stop("overflow", "UO")


def test_a_body_that_cannot_be_replayed_is_never_retried() -> None:
    state = RetryState(policy("5xx"), replayable=False)
    assert state.record(status(503), 0) == Stop("not-replayable", "")
    assert state.attempt == 1


def test_previous_hosts_are_excluded_unless_disabled() -> None:
    state = RetryState(policy("5xx"))
    assert not state.exclude
    state.record(status(503), 4)
    state.record(status(503), 2)
    assert state.exclude == (4, 2)
    keep = RetryState(policy("5xx", retry_ignore_previous_hosts=False))
    keep.record(status(503), 4)
    assert keep.tried == (4,)
    assert keep.exclude == ()


def test_try_timeout_is_per_try_capped_by_the_time_left() -> None:
    clock = FakeClock(100.0)
    assert RetryState(policy("5xx"), clock=clock).try_timeout() is None
    assert RetryState(policy("5xx", per_try_timeout=0.4), clock=clock).try_timeout() == 0.4
    state = RetryState(policy("5xx", per_try_timeout=0.4), timeout=1.0, clock=clock)
    assert state.deadline == 101.0
    assert state.try_timeout() == 0.4
    clock.advance(0.75)
    assert state.try_timeout() == pytest.approx(0.25)
    assert state.try_timeout(now=101.5) == 0.0
    assert RetryState(policy("5xx"), timeout=2.0, clock=clock).try_timeout() == 2.0


def test_no_retry_starts_at_or_after_the_deadline() -> None:
    clock = FakeClock()
    state = RetryState(policy("5xx"), timeout=1.0, clock=clock, rng=ScriptedRandom([0.5]))
    clock.advance(1.0)
    assert state.record(status(503), 0) == Stop("deadline", "")


def test_a_backoff_that_would_end_after_the_deadline_stops_instead() -> None:
    clock = FakeClock()
    late = RetryState(policy("5xx"), timeout=1.0, clock=clock, rng=ScriptedRandom([0.8]))  # delay 20 ms
    clock.advance(0.985)
    assert late.record(status(503), 0) == Stop("deadline", "")
    clock = FakeClock()
    early = RetryState(policy("5xx"), timeout=1.0, clock=clock, rng=ScriptedRandom([0.8]))
    clock.advance(0.975)
    verdict = early.record(status(503), 0)
    assert isinstance(verdict, Retry)
    assert verdict.delay == pytest.approx(0.02)


def test_route_timeout_caps_every_try_and_backoff() -> None:
    """The issue's deadline case: 1 s route timeout, 3 retries, 400 ms per try, a 2 s upstream."""
    clock = FakeClock()
    p = policy("5xx", attempts=3, per_try_timeout=0.4)
    state = RetryState(p, timeout=1.0, clock=clock, rng=random.Random(3))
    starts = []
    while True:
        timeout = state.try_timeout()
        assert timeout is not None
        assert timeout > 0
        starts.append(clock.now)
        clock.advance(min(2.0, timeout))  # the upstream would take 2 s: the try times out
        verdict = state.record(err("timeout"), len(starts) - 1)
        if isinstance(verdict, Stop):
            break
        clock.advance(verdict.delay)
    assert verdict == Stop("deadline", "UT")
    assert len(starts) <= 3
    assert all(start < 1.0 for start in starts)
    assert clock.now == pytest.approx(1.0)  # the answer (504 UT) comes at the deadline


def test_retry_tickets_cap_concurrent_retries_and_are_returned() -> None:
    limits = Limits(PoolLimits(max_retries=1))
    a = RetryState(policy("5xx"), limits=limits)
    b = RetryState(policy("5xx"), limits=limits)
    assert isinstance(a.record(status(503), 0), Retry)
    assert limits.active_retries == 1
    assert b.record(status(503), 0) == Stop("retry-overflow", "UO")
    assert a.record(status(200), 1) == Stop("complete", "")  # the retried try ended: ticket back
    assert limits.active_retries == 0
    assert isinstance(b.record(status(503), 1), Retry)
    b.close()
    b.close()
    assert limits.active_retries == 0


def test_leaving_the_with_block_returns_the_retry_ticket() -> None:
    limits = Limits(PoolLimits(max_retries=1))
    with RetryState(policy("5xx"), limits=limits) as state:
        assert isinstance(state.record(status(503), 0), Retry)
        assert limits.active_retries == 1
    assert limits.active_retries == 0


def test_a_spent_budget_stops_retries_and_returns_the_ticket() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=clock)
    limits = Limits(PoolLimits(max_retries=5))
    state = RetryState(policy("5xx"), budget=budget, limits=limits, clock=clock)
    assert state.record(status(503), 0) == Stop("budget", "UO")
    assert limits.active_retries == 0
