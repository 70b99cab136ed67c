"""Per-cluster outlier detection with Envoy's semantics (``source/common/upstream/outlier_detection_impl.cc``).

``OutlierPolicy.compile(destination_rule.outlier_detection)`` maps Istio's fields the way
``pilot/pkg/networking/core/cluster_traffic_policy.go`` does:

- ``consecutive5xxErrors``: unset -> 5 (Envoy's default, enforced); 0 -> off. Counts every
  5xx and, unless split, every local-origin failure (connect failure, reset, timeout).
- ``consecutiveGatewayErrors``: unset or 0 -> off; counts 502/503/504 (and, unless split,
  local-origin failures). At or above ``consecutive5xxErrors`` it never fires first.
- ``consecutiveErrors`` (deprecated; current Istio ignores it since 1.7): honoured as Istio
  1.1-1.6 did: a gateway-error threshold, with 5xx ejection off unless
  ``consecutive5xxErrors`` is also set. The config decoder warns about it.
- ``splitExternalLocalOriginErrors`` + ``consecutiveLocalOriginFailures`` (0/unset -> 5):
  local-origin failures get their own counter and no longer count as 5xx or gateway errors.
  As in Envoy, every try that obtained a connection first reports a connection success
  (``onPoolReady``), which resets that counter: consecutive connect failures accumulate,
  while a reset or timeout after connecting counts as one.
- ``interval`` (10 s): the sweep period; ``baseEjectionTime`` (30 s) x the ejection
  multiplier is how long an ejection lasts, capped at Envoy's ``max_ejection_time``
  (300 s, or the base if larger).
- ``maxEjectionPercent`` (0/unset -> 10): Envoy ejects only if ``100 x (ejected + 1) / hosts
  <= maxEjectionPercent``. Envoy used to eject at least one host whatever the percentage; it
  stopped in 2023 (envoyproxy/envoy#27909) and made that an opt-in, ``always_eject_one_host``
  (#34796), which Istio does not set. So with Istio's default 10 %, a cluster of fewer than ten
  endpoints never ejects; ``always_eject_one_host=True`` gives the old behaviour.
- ``minHealthPercent`` is Envoy's panic threshold (Istio writes it, default 0, whenever the
  block exists). It is not applied here: pass ``policy.min_health_percent`` to
  ``make_balancer(panic_threshold=...)``, which balances over every endpoint when too few
  are healthy, as Envoy's load balancer does.
- ``outlierDetectionHttpErrorCodes``: when set, only those response codes count as errors
  (a listed code below 500 counts as a 5xx); every other response is a success.

The algorithm, as Envoy: counters are per endpoint; a non-5xx response resets the 5xx and
gateway counters, a non-gateway 5xx resets the gateway counter; a counter reaching its
threshold ejects at once (inline), and is reset whether or not the cap let the ejection
happen. Ejecting raises the endpoint's multiplier by one (while ``multiplier x base < max +
base``). The sweep runs every ``interval`` from the detector's creation: it returns each
ejected endpoint whose ``min(base x multiplier, max)`` has passed (resetting its counters),
then lowers by one the multiplier of every endpoint that was returned at least an interval
ago and is not ejected. There is no background thread: the sweeps due are run lazily, by
``record``, ``healthy`` and ``health_filter``, at the times they were due.

pybreaker was evaluated and is not used. Its ``CircuitBreaker`` is one counter of failures
per breaker with a fixed ``reset_timeout`` and a half-open state in which trial calls decide
between closed and open. Envoy's ejection has none of that: an ejected host returns to full
service at the first sweep after its time (no trial calls), the ejection time grows with
the number of ejections and decays per healthy interval, three counters with cross-reset
rules (5xx, gateway, local-origin) feed it, and ``maxEjectionPercent`` couples the hosts of a
cluster (a per-host breaker cannot ask its siblings before opening). pybreaker also reads
``datetime.now`` (no injectable clock, so tests of ejection times would sleep), holds its
lock across the wrapped call (``call()``), and its async path needs Tornado.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from pymesh.outbound.resilience.classify import Outcome, OutlierCategory

if TYPE_CHECKING:
    from pymesh.config.networking.destinationrule import OutlierDetection

__all__ = ["EjectionEvent", "EjectionReason", "OutlierDetector", "OutlierPolicy"]

EjectionReason = Literal["consecutive-5xx", "consecutive-gateway-error", "consecutive-local-origin-failure"]
_MAX_EJECTION_TIME: Final = 300.0  # Envoy's max_ejection_time default


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierPolicy:
    """A cluster's outlier detection, compiled. Thresholds of 0 are off."""

    consecutive_5xx: int = 5
    consecutive_gateway: int = 0
    consecutive_local_origin: int = 5  # counted only when split_local_origin
    split_local_origin: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = _MAX_EJECTION_TIME
    max_ejection_percent: int = 10
    min_health_percent: float = 0.0  # the balancer's panic threshold, not applied here
    error_codes: frozenset[int] = frozenset()  # outlierDetectionHttpErrorCodes
    always_eject_one_host: bool = False  # Envoy's opt-in; Istio never sets it

    @classmethod
    def compile(cls, od: OutlierDetection, *, always_eject_one_host: bool = False) -> OutlierPolicy:
        legacy = od.consecutive_errors or 0
        c5xx = od.consecutive_5xx_errors if od.consecutive_5xx_errors is not None else (0 if legacy else 5)
        gateway = od.consecutive_gateway_errors if od.consecutive_gateway_errors is not None else legacy
        base = od.base_ejection_time if od.base_ejection_time is not None else 30.0
        return cls(
            consecutive_5xx=c5xx, consecutive_gateway=gateway,
            consecutive_local_origin=od.consecutive_local_origin_failures or 5,
            split_local_origin=od.split_external_local_origin_errors,
            interval=od.interval if od.interval is not None else 10.0,
            base_ejection_time=base, max_ejection_time=max(_MAX_EJECTION_TIME, base),
            max_ejection_percent=od.max_ejection_percent or 10,
            min_health_percent=float(od.min_health_percent),
            error_codes=frozenset(od.outlier_detection_http_error_codes),
            always_eject_one_host=always_eject_one_host,
        )


@dataclass(frozen=True, slots=True)
class EjectionEvent:
    """An endpoint left (``eject``) or returned to (``uneject``) the load-balancing set."""

    action: Literal["eject", "uneject"]
    index: int
    reason: EjectionReason | None  # why it was ejected (None on uneject)
    ejections: int  # times this endpoint has been ejected
    duration: float | None  # how long this ejection lasts (None on uneject)
    at: float  # clock time (for an uneject: the sweep that returned it)


class OutlierDetector:
    """Outlier state of one cluster's endpoints (by balancer index). Thread-safe, short lock."""

    __slots__ = ("_c5xx", "_clock", "_due", "_ejected", "_ejections", "_gateway", "_local", "_lock", "_mult",
                 "_n_ejected", "_next_sweep", "_origin", "_returned", "_swept", "on_ejection", "overflows", "policy")

    def __init__(self, policy: OutlierPolicy, size: int, *, clock: Callable[[], float] = time.monotonic,
                 on_ejection: Callable[[EjectionEvent], None] | None = None) -> None:
        self.policy = policy
        self.on_ejection = on_ejection
        self.overflows = 0  # ejections maxEjectionPercent refused (Envoy's ejections_overflow)
        self._clock = clock
        self._lock = threading.Lock()
        self._c5xx = [0] * size
        self._gateway = [0] * size
        self._local = [0] * size
        self._ejected = [False] * size
        self._n_ejected = 0
        self._ejections = [0] * size
        self._mult = [0] * size  # Envoy's ejectTimeBackoff
        self._due = [0] * size  # the sweep that returns an ejected endpoint
        self._returned: list[int | None] = [None] * size  # the sweep that last returned it
        self._origin = clock()
        self._swept = 0  # sweep k runs at origin + k x interval; sweeps up to here are done
        self._next_sweep = self._origin + policy.interval

    # -- reading ------------------------------------------------------------------------------

    def healthy(self, index: int) -> bool:
        """Whether endpoint ``index`` is in the load-balancing set (runs due sweeps first)."""
        if self._clock() >= self._next_sweep:
            self._sweep_due()
        return not self._ejected[index]

    def health_filter(self) -> Callable[[int], bool] | None:
        """For ``balancer.pick(healthy=...)``: None while nothing is ejected, else a cheap predicate."""
        if self._clock() >= self._next_sweep:
            self._sweep_due()
        if not self._n_ejected:
            return None
        ejected = self._ejected
        return lambda index: not ejected[index]

    @property
    def ejected(self) -> frozenset[int]:
        return frozenset(i for i, e in enumerate(self._ejected) if e)

    # -- recording ----------------------------------------------------------------------------

    def record(self, index: int, outcome: Outcome) -> None:
        """Count how a try on endpoint ``index`` ended; may eject it at once."""
        # Without outlierDetectionHttpErrorCodes the classifier's category stands (no call: the common case).
        category = outcome.outlier if not self.policy.error_codes else self._category(outcome)
        if category == "ignored":
            return
        if (category == "ok" and not (self._c5xx[index] or self._gateway[index] or self._local[index])
                and self._clock() < self._next_sweep):
            return  # the common success: nothing to reset, no sweep due, so no lock to take
        events: list[EjectionEvent] = []
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now, events)
            if not self._ejected[index]:  # results of an ejected host change nothing (Envoy resets on return)
                self._count(index, category, outcome.error != "connect-failure", now, events)
        self._emit(events)

    def tick(self) -> None:
        """Run the sweeps that are due (record, healthy and health_filter do this themselves)."""
        self._sweep_due()

    def _category(self, outcome: Outcome) -> OutlierCategory:
        codes = self.policy.error_codes
        if not codes or outcome.status is None:
            return outcome.outlier
        status = outcome.status
        if status not in codes:
            return "ok"
        return "gateway-error" if status in (502, 503, 504) else "5xx"

    def _count(self, i: int, category: OutlierCategory, connected: bool, now: float,
               events: list[EjectionEvent]) -> None:
        p = self.policy
        if category == "local-origin":
            if p.split_local_origin:
                # Envoy reports a connection success when the pool hands over a connection, so a
                # reset or timeout after connecting counts once; only connect failures run on.
                self._local[i] = 1 if connected else self._local[i] + 1
                if p.consecutive_local_origin and self._local[i] == p.consecutive_local_origin:
                    self._local[i] = 0
                    self._eject(i, "consecutive-local-origin-failure", now, events)
                return
            category = "gateway-error"  # Envoy maps connect failures to 503, timeouts to 504
        elif p.split_local_origin:
            self._local[i] = 0  # a response: the connection worked
        if category == "ok":
            self._c5xx[i] = self._gateway[i] = 0
            return
        if category == "gateway-error":
            self._gateway[i] += 1
            if p.consecutive_gateway and self._gateway[i] == p.consecutive_gateway:
                self._gateway[i] = 0
                self._eject(i, "consecutive-gateway-error", now, events)
        else:
            self._gateway[i] = 0
        self._c5xx[i] += 1
        if p.consecutive_5xx and self._c5xx[i] == p.consecutive_5xx and not self._ejected[i]:
            self._c5xx[i] = 0
            self._eject(i, "consecutive-5xx", now, events)

    def _eject(self, i: int, reason: EjectionReason, now: float, events: list[EjectionEvent]) -> None:
        p = self.policy
        active = self._n_ejected
        allowed = 100.0 * (active + 1) / len(self._ejected) <= p.max_ejection_percent
        if not allowed and not (p.always_eject_one_host and active == 0):
            self.overflows += 1
            return
        base = p.base_ejection_time
        if self._mult[i] * base < p.max_ejection_time + base:
            self._mult[i] += 1
        duration = min(base * self._mult[i], p.max_ejection_time)
        self._ejected[i] = True
        self._n_ejected += 1
        self._ejections[i] += 1
        # The first sweep at or after now + duration returns it (Envoy checks at each sweep).
        due = math.ceil((now + duration - self._origin) / p.interval - 1e-9)
        self._due[i] = max(due, self._swept + 1)
        events.append(EjectionEvent("eject", i, reason, self._ejections[i], duration, now))

    # -- the interval sweep -------------------------------------------------------------------

    def _sweep_due(self) -> None:
        events: list[EjectionEvent] = []
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now, events)
        self._emit(events)

    def _sweep(self, now: float, events: list[EjectionEvent]) -> None:
        """Run every sweep due by ``now``, jumping over those that change nothing. Lock held."""
        interval = self.policy.interval
        target = int((now - self._origin) // interval)
        k = self._swept
        ejected, mult, returned = self._ejected, self._mult, self._returned
        while k < target:
            dues = [self._due[i] for i, e in enumerate(ejected) if e]
            stop = min(min(dues, default=target), target)
            # Sweeps k+1..stop: each lowers the multiplier of an endpoint that is in service and
            # was returned at least one interval before (returned at sweep r: sweeps r+1 on).
            for i, m in enumerate(mult):
                r = returned[i]
                if m and r is not None and not ejected[i]:
                    sweeps = stop - max(k + 1, r + 1) + 1
                    if sweeps > 0:
                        mult[i] = max(0, m - sweeps)
            for i, e in enumerate(ejected):
                if e and self._due[i] == stop:
                    ejected[i] = False
                    self._n_ejected -= 1
                    returned[i] = stop
                    self._c5xx[i] = self._gateway[i] = self._local[i] = 0
                    events.append(EjectionEvent("uneject", i, None, self._ejections[i], None,
                                                self._origin + stop * interval))
            k = stop
        self._swept = target
        self._next_sweep = self._origin + (target + 1) * interval

    def _emit(self, events: list[EjectionEvent]) -> None:
        hook = self.on_ejection
        if hook is not None:
            for event in events:
                hook(event)
