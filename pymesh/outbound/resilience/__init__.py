"""The sans-I/O resilience core: pure decisions and small state machines, no sockets, no sleeping.

The drivers (``pymesh.outbound.transport``) carry out what these modules decide:

- ``classify``  turns one try's result into an ``Outcome``: the one classification that retry,
                outlier detection, metrics and access logs all read (Envoy's response flags).
- ``fault``     VirtualService fault injection: delay and/or abort, before anything is sent.
- ``limits``    connection-pool circuit breakers: admit a try, or overflow (503 UO) at once.
- ``retry``     the route's retry policy, compiled once, and the per-request ``RetryState``
                that answers ``Retry(delay)`` or ``Stop(reason)`` after every try.
- ``budget``    a per-cluster retry budget (Finagle/Linkerd): retries stay a share of requests.
- ``outlier``   per-cluster outlier detection with Envoy's counters, ejection and sweep.

Clocks (``Callable[[], float]``, default ``time.monotonic``) and random sources
(``random.Random``) are always injected, so every decision can be replayed in a test.
"""

from __future__ import annotations

from pymesh.outbound.resilience.budget import RetryBudget
from pymesh.outbound.resilience.classify import Outcome, classified_headers, classify
from pymesh.outbound.resilience.fault import FaultPolicy, FaultVerdict, decide
from pymesh.outbound.resilience.limits import Limits, PoolLimits, RetryTicket, Ticket
from pymesh.outbound.resilience.outlier import EjectionEvent, OutlierDetector, OutlierPolicy
from pymesh.outbound.resilience.retry import Retry, RetryPolicy, RetryState, Stop, Verdict

__all__ = [
    "EjectionEvent",
    "FaultPolicy",
    "FaultVerdict",
    "Limits",
    "Outcome",
    "OutlierDetector",
    "OutlierPolicy",
    "PoolLimits",
    "Retry",
    "RetryBudget",
    "RetryPolicy",
    "RetryState",
    "RetryTicket",
    "Stop",
    "Ticket",
    "Verdict",
    "classified_headers",
    "classify",
    "decide",
]
