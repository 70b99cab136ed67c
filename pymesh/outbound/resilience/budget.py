"""A per-cluster retry budget, as Finagle's ``RetryBudget`` and Linkerd's ``retryBudget`` have.

Each request deposits; each retry withdraws. Retries are allowed while the retries of the
last ``ttl`` seconds stay within ``ratio`` x the requests of the same window, plus a floor of
``min_per_second`` retries per second, so a quiet service can still retry and an outage can
never multiply the load by more than ``1 + ratio`` (plus the floor).

Defaults (Linkerd's and Finagle's): ``ratio=0.2``, ``min_per_second=10``, ``ttl=10`` s. The
budget is on for every cluster; the driver deposits once per request (tries do not count)
and ``RetryState`` withdraws before each retry.

The bucket is tower's (``tower/src/retry/budget``, itself Finagle's ``TokenBucket``): ten
slots each covering ``ttl/10`` s hold the net of deposits and withdrawals made in them; a
slot older than ``ttl`` is forgotten, so deposits and withdrawals expire together. A deposit
is worth 1000 units, a retry costs ``1000 / ratio``; the reserve (``min_per_second`` x ``ttl``
retries) never expires. Integers keep the arithmetic exact.

DestinationRule ``trafficPolicy.retryBudget`` maps onto it where the meaning carries over
(``from_istio``): ``percent`` becomes ``ratio`` (percent / 100; Envoy's default 20 % is the
same 0.2), and ``budgetInterval``, when set, becomes ``ttl`` (clamped to Finagle's 1..60 s).
``minRetryConcurrency`` is a floor on *concurrent* retries, not on a rate, so it is applied
where concurrency is counted: ``Limits`` caps active retries at
``max(minRetryConcurrency, percent% x active requests)``, Envoy's exact rule.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymesh.config.networking.destinationrule import RetryBudget as IstioRetryBudget

__all__ = ["RetryBudget"]

_SLOTS = 10
_DEPOSIT = 1000


class RetryBudget:
    """Deposits per request, withdrawals per retry, over a sliding ``ttl`` window. Thread-safe."""

    __slots__ = ("_clock", "_generation", "_lock", "_reserve", "_slot_len", "_slots", "_withdraw",
                 "min_per_second", "ratio", "ttl")

    def __init__(self, *, ratio: float = 0.2, min_per_second: float = 10.0, ttl: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must not be negative")
        if not 1.0 <= ttl <= 60.0:
            raise ValueError(f"ttl must be within 1..60 s, got {ttl}")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.ttl = ttl
        self._clock = clock
        # A retry costs 1000/ratio units; with ratio 0 deposits buy nothing and only the reserve pays.
        self._withdraw = round(_DEPOSIT / ratio) if ratio > 0 else _DEPOSIT
        self._reserve = int(min_per_second * ttl) * self._withdraw
        self._slot_len = ttl / _SLOTS
        self._slots = [0] * _SLOTS
        self._generation = int(clock() // self._slot_len)  # the slot index the clock is in
        self._lock = threading.Lock()

    @classmethod
    def from_istio(cls, spec: IstioRetryBudget | None, *,
                   clock: Callable[[], float] = time.monotonic) -> RetryBudget:
        """The budget for a cluster with DestinationRule ``retryBudget`` ``spec`` (None: the defaults)."""
        if spec is None:
            return cls(clock=clock)
        ratio = spec.percent / 100.0 if spec.percent is not None else 0.2
        ttl = 10.0 if not spec.budget_interval else min(60.0, max(1.0, spec.budget_interval))
        return cls(ratio=ratio, ttl=ttl, clock=clock)

    def deposit(self) -> None:
        """Count one request (call once per request, not per try)."""
        deposit = _DEPOSIT if self.ratio > 0 else 0
        lock = self._lock
        lock.acquire()  # not ``with``: on CPython 3.11 it costs twice as much, and this runs every request
        try:
            self._slots[self._advance()] += deposit
        finally:
            lock.release()

    def try_withdraw(self) -> bool:
        """Take the cost of one retry if the budget allows it; False: do not retry."""
        with self._lock:
            slot = self._advance()
            if sum(self._slots) + self._reserve < self._withdraw:
                return False
            self._slots[slot] -= self._withdraw
            return True

    @property
    def balance(self) -> float:
        """Retries the budget would allow right now (for metrics and tests)."""
        with self._lock:
            self._advance()
            return (sum(self._slots) + self._reserve) / self._withdraw

    def _advance(self) -> int:
        """Forget slots older than ``ttl``; the index of the current slot. Call with the lock held."""
        generation = int(self._clock() // self._slot_len)
        gone = generation - self._generation
        if gone > 0:
            slots = self._slots
            for step in range(1, min(gone, _SLOTS) + 1):
                slots[(self._generation + step) % _SLOTS] = 0
            self._generation = generation
        return generation % _SLOTS
