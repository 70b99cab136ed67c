"""Retries: the route's ``RetryPolicy`` (compiled once, frozen) and one ``RetryState`` per request.

``RetryPolicy.compile(route.retries, mesh.default_http_retry_policy)`` follows Istio's
``pilot/pkg/networking/core/route/retry/retry.go``:

- no ``retries`` on the route: ``MeshConfig.defaultHttpRetryPolicy`` if set, else Istio's
  default. Istio >= 1.24: 2 retries on ``connect-failure,refused-stream,unavailable,cancelled,
  retriable-status-codes`` with NO retriable status codes (1.1-1.23 also retried 503; Istio
  commit 65aaaf4f8c5 dropped it as unsafe for non-idempotent requests).
- ``attempts: 0`` (or less) disables retries; a ``retries`` block without ``retryOn`` keeps
  the default conditions; bare status codes in ``retryOn`` become retriable status codes
  (and ``retriable-status-codes`` is implied); the route block replaces the mesh default whole.
- ``backoff`` is Envoy's base interval (default 25 ms); the cap is 10 x base.
- ``retryIgnorePreviousHosts`` (default true) makes the next try avoid endpoints already
  tried; Istio drops it when the destination uses consistent hashing (``consistent_hash``).

``RetryPolicy.retriable(outcome)`` is Envoy's ``wouldRetryFromHeaders``/``wouldRetryFromReset``
over the one ``Outcome`` from ``classify``: ``5xx`` (any 5xx, and any failure without a
response), ``gateway-error`` (502/503/504, and failures), ``reset`` (any failure without a
response), ``reset-before-request`` (only a connect failure: the one failure pymesh knows
happened before a byte was written), ``connect-failure``, ``refused-stream``,
``retriable-4xx`` (409), ``retriable-status-codes``, ``envoy-ratelimited`` (a response with
``x-envoy-ratelimited`` is retried only under this condition), and the gRPC conditions
``cancelled``, ``deadline-exceeded``, ``internal``, ``resource-exhausted``, ``unavailable``
read from ``grpc-status`` in the response headers. A per-try timeout is retried only under
``5xx``, ``gateway-error`` or ``reset``. ``retriable-headers`` matches nothing (Istio has no
field for the header matchers, and pymesh trusts no ``x-envoy-*`` request override) and
``http3-post-connect-failure`` matches nothing (pymesh does not speak HTTP/3). A local
overflow (UO) is never retried.

Backoff is tenacity's full-jitter strategy (``wait_random_exponential(multiplier=base,
max=10*base)``): retry N waits uniformly in [0, min(base x 2^(N-1), max)), which is Envoy's
``JitteredExponentialBackOffStrategy`` (25, 50, 100, 200, 250, 250 ms windows). tenacity
draws from the module-level ``random``, which cannot be injected; ``EnvoyBackoff.draw``
keeps tenacity's window computation (``wait_exponential.__call__`` on a ``RetryCallState``
built per request) and takes the uniform draw from the request's injected ``random.Random``,
exactly as ``wait_random_exponential.__call__`` does with the global one.

A driver, for each request::

    budget.deposit()  # once per request, also on routes without retries
    with RetryState(policy, timeout=route_timeout, replayable=body_buffered, budget=budget,
                    limits=limits, clock=clock, rng=rng) as state:
        while True:
            # pick with exclude=state.exclude, header x-pymesh-attempt-count: state.attempt,
            # timeout state.try_timeout(), ticket = limits.try_admit() ...
            outcome = classify(status, headers, error)
            verdict = state.record(outcome, endpoint_index)
            if isinstance(verdict, Stop):
                break  # answer with the last result (its response, or outcome.reply), flags verdict.flags
            sleep(verdict.delay)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import tenacity

from pymesh.outbound.resilience.classify import Outcome

if TYPE_CHECKING:
    from pymesh.config.networking.vs_http import HTTPRetry
    from pymesh.outbound.resilience.budget import RetryBudget
    from pymesh.outbound.resilience.limits import Limits, RetryTicket

__all__ = [
    "ATTEMPT_HEADER",
    "DEFAULT_RETRY_ON",
    "NO_RETRY",
    "EnvoyBackoff",
    "Retry",
    "RetryPolicy",
    "RetryState",
    "Stop",
    "StopReason",
    "Verdict",
]

ATTEMPT_HEADER: Final = "x-pymesh-attempt-count"  # 1 on the first try, as Envoy's x-envoy-attempt-count
DEFAULT_ATTEMPTS: Final = 2
DEFAULT_RETRY_ON: Final = frozenset(
    {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"})
BASE_INTERVAL: Final = 0.025

_ANY_FAILURE: Final = frozenset({"5xx", "gateway-error", "reset"})  # a failure without a response
_GRPC: Final = {1: "cancelled", 4: "deadline-exceeded", 8: "resource-exhausted", 13: "internal", 14: "unavailable"}


class EnvoyBackoff(tenacity.wait_random_exponential):
    """tenacity's full jitter with an injectable random source (see the module docstring)."""

    def draw(self, retry_state: tenacity.RetryCallState, rng: random.Random) -> float:
        window = tenacity.wait_exponential.__call__(self, retry_state)
        return rng.uniform(self.min, window)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """A route's retry policy, compiled. Frozen: per-request state lives in ``RetryState``."""

    attempts: int = DEFAULT_ATTEMPTS  # retries after the first try: at most 1 + attempts tries
    retry_on: frozenset[str] = DEFAULT_RETRY_ON
    retriable_status_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None
    backoff_base: float = BASE_INTERVAL
    backoff_max: float = 10 * BASE_INTERVAL
    retry_ignore_previous_hosts: bool = True
    retry_remote_localities: bool = False
    backoff: EnvoyBackoff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backoff", EnvoyBackoff(multiplier=self.backoff_base, max=self.backoff_max))

    @classmethod
    def compile(cls, route: HTTPRetry | None, mesh_default: HTTPRetry | None = None, *,
                consistent_hash: bool = False) -> RetryPolicy:
        """The policy for a route's ``retries`` (None: the mesh default, else Istio's default)."""
        spec = route if route is not None else mesh_default
        if spec is None:
            return DEFAULT_NO_PREVIOUS_HOSTS if consistent_hash else DEFAULT
        if spec.attempts <= 0:
            return NO_RETRY
        conditions, codes = DEFAULT_RETRY_ON, frozenset[int]()
        if spec.retry_on:
            codes = frozenset(spec.retriable_status_codes)
            conditions = frozenset(spec.retry_on_conditions) | (
                {"retriable-status-codes"} if codes else frozenset())
        base = spec.backoff if spec.backoff is not None else BASE_INTERVAL
        return cls(
            attempts=spec.attempts, retry_on=conditions, retriable_status_codes=codes,
            per_try_timeout=spec.per_try_timeout, backoff_base=base, backoff_max=10 * base,
            retry_ignore_previous_hosts=spec.retry_ignore_previous_hosts is not False and not consistent_hash,
            retry_remote_localities=bool(spec.retry_remote_localities),
        )

    @property
    def enabled(self) -> bool:
        return self.attempts > 0

    def retriable(self, outcome: Outcome) -> bool:
        """Whether ``retryOn`` covers this outcome (Envoy's would-retry rules; see the module doc)."""
        on = self.retry_on
        error = outcome.error
        if error is not None:
            if error == "overflow":
                return False
            if error == "timeout":
                return not on.isdisjoint(_ANY_FAILURE)
            if error == "connect-failure" and ("connect-failure" in on or "reset-before-request" in on):
                return True
            if error == "refused-stream" and "refused-stream" in on:
                return True
            return not on.isdisjoint(_ANY_FAILURE)
        if outcome.ratelimited:
            return "envoy-ratelimited" in on
        status = outcome.status or 0
        if status >= 500 and ("5xx" in on or (status in (502, 503, 504) and "gateway-error" in on)):
            return True
        if status == 409 and "retriable-4xx" in on:
            return True
        if status in self.retriable_status_codes and "retriable-status-codes" in on:
            return True
        grpc = outcome.grpc_status
        return grpc is not None and _GRPC.get(grpc, "") in on


DEFAULT: Final = RetryPolicy()
DEFAULT_NO_PREVIOUS_HOSTS: Final = RetryPolicy(retry_ignore_previous_hosts=False)
NO_RETRY: Final = RetryPolicy(attempts=0, retry_on=frozenset())

StopReason = Literal["complete", "exhausted", "overflow", "not-replayable", "deadline", "retry-overflow", "budget"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Sleep ``delay`` seconds, then make try number ``attempt``."""

    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Answer with the last try's result. ``flags``: Envoy response flags for the answer.

    ``reason``: ``complete`` (retryOn does not cover it, success included), ``exhausted``
    (no retries left: flag URX), ``overflow`` (a local UO: never retried), ``not-replayable``
    (the body cannot be sent again), ``deadline`` (no time for another try), ``retry-overflow``
    (maxRetries / retryBudget concurrency: flag UO, as Envoy's ``RetryStatus::NoOverflow``)
    or ``budget`` (the cluster's retry budget is spent: flag UO).

    Every reason answers with the last try's own result: its response, or ``outcome.reply``
    when it had none (for ``overflow`` the 503 UO local reply, sent with
    ``x-envoy-overloaded: true``; for a try cut by the deadline, 504 UT).
    """

    reason: StopReason
    flags: str


Verdict = Retry | Stop
_COMPLETE: Final = Stop("complete", "")  # the success path allocates nothing


def _join(flag: str, extra: str) -> str:
    return f"{flag},{extra}" if flag else extra


_DEFAULT_RNG: Final = random.Random()  # noqa: S311  (backoff jitter, not cryptography)
_RETRYING: Final = tenacity.Retrying()  # RetryCallState wants one; the wait strategy never reads it


class RetryState:
    """One request's tries: attempt count, endpoints tried, deadline, retry tickets.

    Not shared: one per request, driven by one thread or task. ``timeout`` is the route's
    (None or 0: none; Istio's default); the deadline starts here, so create the state after an
    injected fault delay. A retry holds a ``RetryTicket`` from ``limits`` from the verdict until
    the retried try is recorded (Envoy's max_retries accounting); ``close()`` (or leaving the
    ``with`` block) returns it if the request is abandoned mid-retry.
    """

    __slots__ = ("_budget", "_call", "_clock", "_limits", "_rng", "_ticket", "_tried", "attempt", "deadline",
                 "policy", "replayable")

    def __init__(self, policy: RetryPolicy, *, timeout: float | None = None, replayable: bool = True,
                 budget: RetryBudget | None = None, limits: Limits | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.replayable = replayable
        self.attempt = 1  # the try in progress, 1-based: the x-pymesh-attempt-count value
        self.deadline = clock() + timeout if timeout else None  # the route timeout caps every try and backoff
        self._budget = budget
        self._limits = limits
        self._clock = clock
        self._rng = rng or _DEFAULT_RNG
        self._tried: list[int] = []
        self._ticket: RetryTicket | None = None
        self._call: tenacity.RetryCallState | None = None

    @property
    def tried(self) -> tuple[int, ...]:
        """Endpoint indices of the tries so far, in order."""
        return tuple(self._tried)

    @property
    def exclude(self) -> tuple[int, ...]:
        """What the next pick should avoid (Envoy's previous-hosts predicate): ``balancer.pick(exclude=...)``."""
        return tuple(self._tried) if self.policy.retry_ignore_previous_hosts else ()

    def try_timeout(self, now: float | None = None) -> float | None:
        """The next try's timeout: min(perTryTimeout, time left before the deadline); None: no limit."""
        per_try = self.policy.per_try_timeout
        if self.deadline is None:
            return per_try
        left = self.deadline - (self._clock() if now is None else now)
        if left < 0.0:
            left = 0.0
        return left if per_try is None or left < per_try else per_try  # min(per_try, left)

    def record(self, outcome: Outcome, endpoint_index: int | None = None) -> Verdict:
        """Record how the current try ended; ``Retry(delay, attempt)`` or ``Stop(reason, flags)``."""
        self._release()
        if endpoint_index is not None:
            self._tried.append(endpoint_index)
        policy = self.policy
        if outcome.error == "overflow":
            return Stop("overflow", outcome.flag)
        if not policy.attempts or not policy.retriable(outcome):
            return _COMPLETE if not outcome.flag else Stop("complete", outcome.flag)
        if not self.replayable:
            return Stop("not-replayable", outcome.flag)
        if self.attempt > policy.attempts:
            return Stop("exhausted", _join(outcome.flag, "URX"))
        now = self._clock()
        delay = self._draw()
        if self.deadline is not None and now + delay >= self.deadline:
            return Stop("deadline", outcome.flag)  # no try may start at or after the deadline
        if self._limits is not None:
            self._ticket = self._limits.try_admit_retry()
            if self._ticket is None:
                return Stop("retry-overflow", _join(outcome.flag, "UO"))
        if self._budget is not None and not self._budget.try_withdraw():
            self._release()
            return Stop("budget", _join(outcome.flag, "UO"))
        self.attempt += 1
        return Retry(delay, self.attempt)

    def _draw(self) -> float:
        call = self._call
        if call is None:
            call = self._call = tenacity.RetryCallState(_RETRYING, None, (), {})
        call.attempt_number = self.attempt  # retry N (N = attempt just failed): window base x 2^(N-1)
        return self.policy.backoff.draw(call, self._rng)

    def _release(self) -> None:
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            ticket.release()

    def close(self) -> None:
        """Give back a held retry ticket (a retry abandoned by cancellation). Idempotent."""
        self._release()

    def __enter__(self) -> RetryState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
