"""Connection-pool circuit breakers (Envoy cluster thresholds) from DestinationRule ``connectionPool``.

``PoolLimits`` is the frozen policy; ``Limits`` holds one cluster's counters. Istio's defaults
apply, not Envoy's: every threshold is 2^32-1 (effectively unlimited) unless the
DestinationRule sets it to a positive value (Istio treats <= 0 as "keep the default").

=================================  ===================  ==============================================
DestinationRule field              Envoy threshold      what pymesh does with it
=================================  ===================  ==============================================
``tcp.maxConnections``             max_connections      the cluster's ``pool.ConnectionGate``: beyond
                                                        it requests wait for a connection (pending)
``http.http1MaxPendingRequests``   max_pending_requests requests waiting for a connection
``http.http2MaxRequests``          max_requests         requests in flight (HTTP/1 and HTTP/2)
``http.maxRetries``                max_retries          retries in flight (``RetryTicket``)
``trafficPolicy.retryBudget``      retry_budget         replaces ``maxRetries``: retries in flight may
                                                        reach ``max(minRetryConcurrency, percent% x
                                                        requests in flight)`` (Envoy's rule)
=================================  ===================  ==============================================

``try_admit()`` is called before each try. None means overflow: the driver answers 503 with
flag UO and ``x-envoy-overloaded: true`` at once (``classify(None, None, "overflow")``); such
a try is never queued and never retried. A request counts as pending while the requests in
flight exceed ``max_connections`` (HTTP/1: one request per connection), so admission allows
``min(max_requests, max_connections + max_pending)`` in flight; a multiplexed (HTTP/2) pool
has no pending queue once connected, so there only ``max_requests`` applies.

``Ticket.release()`` (when the response is closed or the try failed) is idempotent. Counters
are guarded by one short lock, never held across I/O. With every limit at Istio's default
and no retry budget, ``try_admit`` hands out one shared no-op ticket without counting.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pymesh.config.networking.destinationrule import ConnectionPoolSettings
    from pymesh.config.networking.destinationrule import RetryBudget as IstioRetryBudget

__all__ = ["UNLIMITED", "Limits", "PoolLimits", "RetryTicket", "Ticket"]

UNLIMITED: Final = 2**32 - 1  # Istio's default for every threshold


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolLimits:
    """One cluster's circuit-breaker thresholds, compiled from its ``connectionPool``."""

    max_connections: int = UNLIMITED
    max_pending_requests: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_retries: int = UNLIMITED
    retry_budget_percent: float | None = None  # set: Envoy's retry_budget replaces max_retries
    min_retry_concurrency: int = 3
    multiplexed: bool = False  # HTTP/2: no pending queue once a connection is up

    @classmethod
    def compile(cls, pool: ConnectionPoolSettings | None, retry_budget: IstioRetryBudget | None = None, *,
                multiplexed: bool = False) -> PoolLimits:
        tcp = pool.tcp if pool is not None else None
        http = pool.http if pool is not None else None

        def given(value: int | None) -> int:
            return value if value is not None and value > 0 else UNLIMITED

        percent: float | None = None
        min_concurrency = 3  # Envoy's default minRetryConcurrency
        if retry_budget is not None:
            percent = retry_budget.percent if retry_budget.percent is not None else 20.0
            min_concurrency = retry_budget.min_retry_concurrency or 3
        return cls(
            max_connections=given(tcp.max_connections if tcp else None),
            max_pending_requests=given(http.http1_max_pending_requests if http else None),
            max_requests=given(http.http2_max_requests if http else None),
            max_retries=given(http.max_retries if http else None),
            retry_budget_percent=percent,
            min_retry_concurrency=min_concurrency,
            multiplexed=multiplexed,
        )

    @property
    def unlimited(self) -> bool:
        return (self.retry_budget_percent is None and self.max_requests >= UNLIMITED
                and self.max_retries >= UNLIMITED
                and (self.multiplexed or self.max_connections + self.max_pending_requests >= UNLIMITED))


class Ticket:
    """One admitted try. ``release()`` once it is over; releasing twice is harmless."""

    __slots__ = ("_limits",)

    def __init__(self, limits: Limits | None) -> None:
        self._limits = limits

    def release(self) -> None:
        limits = self._limits
        if limits is not None:
            limits._release(self, retry=False)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RetryTicket(Ticket):
    """One retry in flight (Envoy's max_retries resource), from ``Limits.try_admit_retry``."""

    __slots__ = ()

    def release(self) -> None:
        limits = self._limits
        if limits is not None:
            limits._release(self, retry=True)


_NOOP = Ticket(None)
_NOOP_RETRY = RetryTicket(None)


class Limits:
    """One cluster's circuit-breaker counters. Thread-safe; state survives config swaps in the runtime."""

    __slots__ = ("_active", "_cap", "_lock", "_retries", "policy")

    def __init__(self, policy: PoolLimits = PoolLimits()) -> None:
        self.policy = policy
        self._active = 0
        self._retries = 0
        self._lock = threading.Lock()
        cap = policy.max_requests
        if not policy.multiplexed:
            cap = min(cap, policy.max_connections + policy.max_pending_requests)
        self._cap = None if policy.unlimited else cap

    @property
    def active(self) -> int:
        """Tries in flight (pending ones included)."""
        return self._active

    @property
    def pending(self) -> int:
        """Tries in flight beyond ``max_connections`` (waiting for a connection)."""
        return 0 if self.policy.multiplexed else max(0, self._active - self.policy.max_connections)

    @property
    def active_retries(self) -> int:
        return self._retries

    def try_admit(self) -> Ticket | None:
        """A ticket for one try, or None: overflow (503 UO, never queued, never retried)."""
        cap = self._cap
        if cap is None:
            return _NOOP
        lock = self._lock
        lock.acquire()  # not ``with``: on CPython 3.11 it costs twice as much, and this runs every try
        try:
            if self._active >= cap:
                return None
            self._active += 1
        finally:
            lock.release()
        return Ticket(self)

    def try_admit_retry(self) -> RetryTicket | None:
        """A ticket for one retry in flight, or None: the retry overflows and is not made."""
        if self._cap is None:
            return _NOOP_RETRY
        policy = self.policy
        with self._lock:
            if policy.retry_budget_percent is not None:
                cap = max(policy.min_retry_concurrency, int(policy.retry_budget_percent / 100.0 * self._active))
            else:
                cap = policy.max_retries
            if self._retries >= cap:
                return None
            self._retries += 1
        return RetryTicket(self)

    def _release(self, ticket: Ticket, *, retry: bool) -> None:
        lock = self._lock
        lock.acquire()  # as in try_admit
        try:
            if ticket._limits is None:
                return  # released already
            ticket._limits = None
            if retry:
                self._retries -= 1
            else:
                self._active -= 1
        finally:
            lock.release()
