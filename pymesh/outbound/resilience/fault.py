"""VirtualService fault injection: decide, per request, whether to delay and whether to abort.

``FaultPolicy.compile`` turns a route's ``fault`` into numbers once; ``decide(policy, rng)``
is one or two draws from the injected ``random.Random`` and returns a shared, precomputed
``FaultVerdict``. Istio's rules (``pilot/pkg/networking/core/route/route.go``, Envoy's fault
filter):

- delay and abort are independent draws, the delay's first; the driver sleeps the delay,
  then answers the abort (if any) without contacting the upstream: no retries, no outlier
  accounting. Flags: DI (delay injected), FI (fault abort); abort body ``fault filter abort``.
- a percentage is exact in expectation at Istio's resolution: ``value x 10000`` per million
  (Istio's FractionalPercent; pymesh rounds where Istio truncates, so ``0.3`` means 0.3 %).
  0 % never draws and never fires, 100 % always fires without a draw.
- a missing ``percentage`` means 0 %: the fault never fires (current Istio; the proto text
  said "all requests" until 2022 while the code always did 0 %). The deprecated integer
  ``percent`` (Istio 1.0) is honoured when ``percentage`` is absent.
- ``abort.grpcStatus`` (a code name) aborts with that gRPC status: HTTP 200, trailers-only,
  ``grpc-status: <code>`` and ``grpc-message: fault filter abort``, as Envoy's local reply for
  a gRPC request. An abort with neither ``httpStatus`` nor ``grpcStatus`` is ignored (Istio
  warns and drops it); a delay without ``fixedDelay`` likewise.
- Envoy starts the route timeout after the fault filter, so an injected delay does not count
  against the route ``timeout``: the driver starts ``RetryState`` after the delay.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pymesh.config.networking.vs_http import HTTPFaultInjection

__all__ = ["ABORT_BODY", "GRPC_CODES", "NO_FAULT", "FaultPolicy", "FaultVerdict", "decide"]

ABORT_BODY: Final = b"fault filter abort"
GRPC_CODES: Final[Mapping[str, int]] = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
_MILLION: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class FaultVerdict:
    """What to do to one request: sleep ``delay_seconds``, then abort with a status (or neither)."""

    delay_seconds: float | None = None
    abort_status: int | None = None  # HTTP status of the abort
    grpc_status: int | None = None  # gRPC code of the abort (HTTP 200, trailers-only)

    @property
    def aborts(self) -> bool:
        return self.abort_status is not None or self.grpc_status is not None

    @property
    def flags(self) -> str:
        """Envoy's response flags for this verdict: "DI", "FI", "DI,FI" or ""."""
        flags = ("DI",) if self.delay_seconds is not None else ()
        return ",".join((*flags, "FI") if self.aborts else flags)


NO_FAULT: Final = FaultVerdict()


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """A route's fault injection, compiled: delay and abort chances per million and their effect."""

    delay_seconds: float | None
    delay_per_million: int
    abort_status: int | None
    grpc_status: int | None
    abort_per_million: int
    _verdicts: tuple[FaultVerdict, FaultVerdict, FaultVerdict, FaultVerdict] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        delay, status, grpc = self.delay_seconds, self.abort_status, self.grpc_status
        verdicts = (NO_FAULT, FaultVerdict(delay), FaultVerdict(None, status, grpc), FaultVerdict(delay, status, grpc))
        object.__setattr__(self, "_verdicts", verdicts)

    @classmethod
    def compile(cls, fault: HTTPFaultInjection | None) -> FaultPolicy | None:
        """The compiled fault, or None when nothing can ever fire (so the route pays nothing)."""
        if fault is None:
            return None
        delay_s: float | None = None
        delay_pm = 0
        if fault.delay is not None and fault.delay.fixed_delay is not None:
            delay_s, delay_pm = fault.delay.fixed_delay, _per_million(fault.delay.effective_percentage)
        status: int | None = None
        grpc: int | None = None
        abort_pm = 0
        abort = fault.abort
        if abort is not None and (abort.http_status is not None or abort.grpc_status is not None):
            status = abort.http_status
            grpc = GRPC_CODES.get(abort.grpc_status) if abort.grpc_status is not None else None
            abort_pm = _per_million(abort.effective_percentage)
        if delay_pm == 0 and abort_pm == 0:
            return None
        return cls(delay_s if delay_pm else None, delay_pm, status if abort_pm else None,
                   grpc if abort_pm else None, abort_pm)


def _per_million(percent: float) -> int:
    return max(0, min(_MILLION, round(percent * 10_000)))


def decide(fault: FaultPolicy | None, rng: random.Random) -> FaultVerdict:
    """Draw this request's fault: the delay first, then the abort, independently."""
    if fault is None:
        return NO_FAULT
    delayed = _fires(fault.delay_per_million, rng)
    aborted = _fires(fault.abort_per_million, rng)
    return fault._verdicts[delayed + 2 * aborted]


def _fires(per_million: int, rng: random.Random) -> bool:
    if per_million <= 0:
        return False
    if per_million >= _MILLION:
        return True
    return rng.random() * _MILLION < per_million
