"""Fault injection decisions: percentages, independence, delay first, gRPC aborts, flags."""

from __future__ import annotations

import random

import pytest

from pymesh.config.networking.vs_http import HTTPFaultInjection
from pymesh.config.types import Percent
from pymesh.outbound.resilience.fault import ABORT_BODY, NO_FAULT, FaultPolicy, FaultVerdict, decide
from tests.outbound.resilience.conftest import NoRandom, ScriptedRandom

Delay = HTTPFaultInjection.Delay
Abort = HTTPFaultInjection.Abort


def compile_fault(delay: Delay | None = None, abort: Abort | None = None) -> FaultPolicy | None:
    return FaultPolicy.compile(HTTPFaultInjection(delay=delay, abort=abort))


def test_nothing_that_can_fire_compiles_to_none() -> None:
    assert FaultPolicy.compile(None) is None
    assert compile_fault(Delay(fixed_delay=1.0)) is None  # no percentage: never (current Istio)
    assert compile_fault(abort=Abort(http_status=503)) is None
    assert compile_fault(abort=Abort(http_status=503, percentage=Percent(value=0.0))) is None
    assert compile_fault(abort=Abort(percentage=Percent(value=100.0))) is None  # no error type: ignored
    assert decide(None, NoRandom()) is NO_FAULT


def test_deprecated_integer_percent_is_honoured() -> None:
    fault = compile_fault(Delay(fixed_delay=0.5, percent=100), Abort(http_status=500, percent=100))
    assert fault is not None
    assert decide(fault, NoRandom()) == FaultVerdict(0.5, 500, None)


def test_resolution_is_istios_per_million() -> None:
    fault = compile_fault(abort=Abort(http_status=503, percentage=Percent(value=0.0001)))
    assert fault is not None
    assert fault.abort_per_million == 1
    assert compile_fault(abort=Abort(http_status=503, percentage=Percent(value=0.3))).abort_per_million == 3000  # type: ignore[union-attr]


def test_full_percentages_fire_without_drawing() -> None:
    fault = compile_fault(Delay(fixed_delay=2.0, percentage=Percent(value=100.0)),
                          Abort(http_status=418, percentage=Percent(value=100.0)))
    assert fault is not None
    verdict = decide(fault, NoRandom())
    assert (verdict.delay_seconds, verdict.abort_status, verdict.flags) == (2.0, 418, "DI,FI")
    assert verdict is decide(fault, NoRandom())  # precomputed, nothing allocated per request


def test_delay_is_drawn_first_then_abort_independently() -> None:
    fault = compile_fault(Delay(fixed_delay=1.0, percentage=Percent(value=50.0)),
                          Abort(http_status=503, percentage=Percent(value=50.0)))
    assert fault is not None
    rng = ScriptedRandom([0.1, 0.9])
    assert decide(fault, rng) == FaultVerdict(1.0, None, None)
    assert rng.calls == 2
    assert decide(fault, ScriptedRandom([0.9, 0.1])) == FaultVerdict(None, 503, None)
    assert decide(fault, ScriptedRandom([0.9, 0.9])) is NO_FAULT


def test_grpc_abort() -> None:
    fault = compile_fault(abort=Abort(grpc_status="UNAVAILABLE", percentage=Percent(value=100.0)))
    assert fault is not None
    verdict = decide(fault, NoRandom())
    assert (verdict.abort_status, verdict.grpc_status, verdict.aborts, verdict.flags) == (None, 14, True, "FI")
    assert ABORT_BODY == b"fault filter abort"


def test_flags() -> None:
    assert NO_FAULT.flags == ""
    assert FaultVerdict(1.0).flags == "DI"
    assert FaultVerdict(None, 500).flags == "FI"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentages_within_statistical_bounds_over_10000_draws(seed: int) -> None:
    fault = compile_fault(Delay(fixed_delay=0.1, percentage=Percent(value=25.0)),
                          Abort(http_status=503, percentage=Percent(value=50.0)))
    assert fault is not None
    rng = random.Random(seed)
    verdicts = [decide(fault, rng) for _ in range(10_000)]
    delays = sum(v.delay_seconds is not None for v in verdicts)
    aborts = sum(v.aborts for v in verdicts)
    both = sum(v.delay_seconds is not None and v.aborts for v in verdicts)
    # Binomial bounds at 4.5 standard deviations (sd = sqrt(n p (1-p))).
    assert abs(delays - 2500) <= 4.5 * (10_000 * 0.25 * 0.75) ** 0.5
    assert abs(aborts - 5000) <= 4.5 * (10_000 * 0.5 * 0.5) ** 0.5
    assert abs(both - 1250) <= 4.5 * (10_000 * 0.125 * 0.875) ** 0.5  # independent draws


def test_a_seed_replays_the_same_decisions() -> None:
    fault = compile_fault(abort=Abort(http_status=503, percentage=Percent(value=50.0)))
    assert fault is not None
    runs = [[decide(fault, rng).aborts for _ in range(100)] for rng in (random.Random(9), random.Random(9))]
    assert runs[0] == runs[1]
