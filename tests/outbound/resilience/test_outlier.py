"""Outlier detection with Envoy's counters, ejection cap, sweep, multiplier growth and decay."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import pytest

from pymesh.config.networking.destinationrule import OutlierDetection
from pymesh.outbound.resilience.classify import ErrorKind, Outcome, classify
from pymesh.outbound.resilience.outlier import EjectionEvent, OutlierDetector, OutlierPolicy
from tests.outbound.resilience.conftest import FakeClock

OK = classify(200, None, None)
E500 = classify(500, None, None)
E503 = classify(503, None, None)


def err(kind: ErrorKind) -> Outcome:
    return classify(None, None, kind)


def detector(size: int = 1, clock: FakeClock | None = None, events: list[EjectionEvent] | None = None,
             **policy: object) -> OutlierDetector:
    policy.setdefault("max_ejection_percent", 100)
    sink = events if events is not None else []
    return OutlierDetector(OutlierPolicy(**policy), size, clock=clock or FakeClock(),  # type: ignore[arg-type]
                           on_ejection=sink.append)


def feed(d: OutlierDetector, index: int, *outcomes: Outcome) -> None:
    for outcome in outcomes:
        d.record(index, outcome)


# -- compiling Istio's block ----------------------------------------------------------------------


def test_istio_defaults_when_the_block_is_present() -> None:
    p = OutlierPolicy.compile(OutlierDetection())
    assert (p.consecutive_5xx, p.consecutive_gateway, p.split_local_origin) == (5, 0, False)
    assert (p.interval, p.base_ejection_time, p.max_ejection_time) == (10.0, 30.0, 300.0)
    assert (p.max_ejection_percent, p.min_health_percent) == (10, 0.0)
    assert not p.always_eject_one_host


def test_field_mapping() -> None:
    p = OutlierPolicy.compile(OutlierDetection(
        consecutive_5xx_errors=0, consecutive_gateway_errors=3, split_external_local_origin_errors=True,
        consecutive_local_origin_failures=2, interval=1.0, base_ejection_time=400.0, max_ejection_percent=50,
        min_health_percent=30, outlier_detection_http_error_codes=(429,)))
    assert (p.consecutive_5xx, p.consecutive_gateway, p.consecutive_local_origin) == (0, 3, 2)
    assert p.split_local_origin
    assert (p.interval, p.base_ejection_time, p.max_ejection_time) == (1.0, 400.0, 400.0)
    assert (p.max_ejection_percent, p.min_health_percent, p.error_codes) == (50, 30.0, frozenset({429}))


def test_deprecated_consecutive_errors_count_gateway_errors_as_istio_1_1_to_1_6() -> None:
    p = OutlierPolicy.compile(OutlierDetection(consecutive_errors=3))
    assert (p.consecutive_gateway, p.consecutive_5xx) == (3, 0)
    both = OutlierPolicy.compile(OutlierDetection(consecutive_errors=3, consecutive_5xx_errors=7))
    assert (both.consecutive_gateway, both.consecutive_5xx) == (3, 7)
    d = OutlierDetector(OutlierPolicy.compile(OutlierDetection(consecutive_errors=2, max_ejection_percent=100)), 1,
                        clock=FakeClock())
    feed(d, 0, E500, E500, E500)
    assert d.healthy(0)  # 500 is not a gateway error
    feed(d, 0, E503, E503)
    assert not d.healthy(0)


# -- counting and ejecting -------------------------------------------------------------------------


def test_ejection_after_n_consecutive_5xx() -> None:
    events: list[EjectionEvent] = []
    clock = FakeClock(3.0)
    d = detector(2, clock, events, consecutive_5xx=3)
    feed(d, 0, E500, E503)
    assert d.healthy(0)
    assert d.health_filter() is None  # nothing ejected: the balancer's fast path
    d.record(0, E500)
    assert not d.healthy(0)
    assert d.healthy(1)
    assert d.ejected == {0}
    accept = d.health_filter()
    assert accept is not None
    assert (accept(0), accept(1)) == (False, True)
    assert events == [EjectionEvent("eject", 0, "consecutive-5xx", 1, 30.0, 3.0)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].index = 1  # type: ignore[misc]


def test_a_success_resets_the_counters() -> None:
    d = detector(consecutive_5xx=3)
    feed(d, 0, E500, E500, OK, E500, E500)
    assert d.healthy(0)


def test_gateway_errors_and_the_reset_by_other_5xx() -> None:
    events: list[EjectionEvent] = []
    d = detector(events=events, consecutive_gateway=2, consecutive_5xx=5)
    feed(d, 0, E503, E500, E503)
    assert d.healthy(0)  # the 500 reset the gateway count
    d.record(0, classify(504, None, None))
    assert not d.healthy(0)
    assert events[0].reason == "consecutive-gateway-error"


def test_local_origin_failures_count_as_5xx_without_split() -> None:
    d = detector(consecutive_5xx=3)
    feed(d, 0, err("connect-failure"), err("timeout"), err("reset"))
    assert not d.healthy(0)


def test_split_local_origin_failures_have_their_own_counter() -> None:
    events: list[EjectionEvent] = []
    d = detector(events=events, consecutive_5xx=3, split_local_origin=True, consecutive_local_origin=5)
    feed(d, 0, *[err("connect-failure")] * 4)
    assert d.healthy(0)  # not 5xx any more
    d.record(0, err("connect-failure"))
    assert not d.healthy(0)
    assert events[0].reason == "consecutive-local-origin-failure"
    real = detector(consecutive_5xx=3, split_local_origin=True, consecutive_local_origin=5)
    feed(real, 0, err("connect-failure"), E500, err("connect-failure"), E500, err("connect-failure"), E500)
    assert not real.healthy(0)  # 5xx responses counted alone, and each reset the local-origin count


def test_split_counts_a_failure_after_connecting_once_as_envoy_does() -> None:
    d = detector(split_local_origin=True, consecutive_local_origin=2)
    feed(d, 0, err("timeout"), err("reset"), err("timeout"), err("refused-stream"))
    assert d.healthy(0)  # each try first reported a connection success
    feed(d, 0, err("connect-failure"))
    assert not d.healthy(0)  # the last timeout counted 1, this connect failure 2


def test_overflow_is_not_an_upstream_outcome() -> None:
    d = detector(consecutive_5xx=1)
    d.record(0, err("overflow"))
    assert d.healthy(0)


def test_http_error_codes_replace_the_5xx_rule() -> None:
    d = detector(consecutive_5xx=2, error_codes=frozenset({429}))
    feed(d, 0, E500, E500, E500)
    assert d.healthy(0)
    feed(d, 0, classify(429, None, None), classify(429, None, None))
    assert not d.healthy(0)


# -- the ejection cap ------------------------------------------------------------------------------


def test_max_ejection_percent_caps_ejections() -> None:
    d = detector(10, consecutive_5xx=1, max_ejection_percent=10)
    d.record(0, E500)
    d.record(1, E500)
    assert d.ejected == {0}  # 20 % would exceed 10 %
    assert d.overflows == 1
    d.record(1, E500)
    assert d.overflows == 2  # the counter was reset after the refused ejection and fired again


def test_envoy_no_longer_ejects_one_host_whatever_the_percentage() -> None:
    d = detector(4, consecutive_5xx=1, max_ejection_percent=10)
    d.record(0, E500)
    assert d.ejected == frozenset()  # 25 % > 10 %: current Envoy refuses even the first
    old = detector(4, consecutive_5xx=1, max_ejection_percent=10, always_eject_one_host=True)
    old.record(0, E500)
    old.record(1, E500)
    assert old.ejected == {0}


def test_a_single_endpoint_can_be_ejected_at_100_percent() -> None:
    d = detector(1, consecutive_5xx=1, max_ejection_percent=100)
    d.record(0, E500)
    accept = d.health_filter()
    assert accept is not None
    assert not accept(0)


# -- the sweep ------------------------------------------------------------------------------------


def test_uneject_at_the_first_sweep_after_base_times_count() -> None:
    events: list[EjectionEvent] = []
    clock = FakeClock()
    d = detector(clock=clock, events=events, consecutive_5xx=1)  # sweeps at 10, 20, 30, ...
    clock.now = 5.0
    d.record(0, E500)
    for t in (34.9, 35.0, 39.9):
        clock.now = t
        assert not d.healthy(0), t  # the sweep at 30 found 25 s < 30 s
    clock.now = 40.0
    assert d.healthy(0)
    assert events[-1] == EjectionEvent("uneject", 0, None, 1, None, 40.0)


def test_counters_restart_after_an_uneject_and_an_ejected_host_ignores_errors() -> None:
    clock = FakeClock()
    d = detector(clock=clock, consecutive_5xx=3)
    feed(d, 0, E500, E500, E500, E500, E500)  # two more while ejected: ignored
    clock.now = 40.0
    feed(d, 0, E500, E500)
    assert d.healthy(0)


def ejection_durations(d: OutlierDetector, clock: FakeClock, events: list[EjectionEvent],
                       eject_at: list[float]) -> list[float | None]:
    out: list[float | None] = []
    for t in eject_at:
        clock.now = t
        assert d.healthy(0), t
        d.record(0, E500)
        out.append(events[-1].duration)
    return out


def test_multiplier_grows_with_each_ejection() -> None:
    events: list[EjectionEvent] = []
    clock = FakeClock()
    d = detector(clock=clock, events=events, consecutive_5xx=1)
    assert ejection_durations(d, clock, events, [5.0, 41.0]) == [30.0, 60.0]
    clock.now = 109.9
    assert not d.healthy(0)  # due at the sweep at or after 101: 110
    clock.now = 110.0
    assert d.healthy(0)


def test_multiplier_decays_one_per_healthy_interval() -> None:
    events: list[EjectionEvent] = []
    clock = FakeClock()
    d = detector(clock=clock, events=events, consecutive_5xx=1)
    # x1 at 5 (back at 40), x2 at 41 (back at 110); the sweep at 120 lowers it to 1: x2 again at 125.
    assert ejection_durations(d, clock, events, [5.0, 41.0, 125.0]) == [30.0, 60.0, 60.0]
    clock.now = 190.0  # 125 + 60 -> back at the sweep at 190
    assert d.healthy(0)
    clock.now = 215.0  # sweeps at 200 (2 -> 1) and 210 (1 -> 0): x1 again
    assert ejection_durations(d, clock, events, [215.0]) == [30.0]


def test_a_long_idle_period_is_swept_in_one_step() -> None:
    events: list[EjectionEvent] = []
    clock = FakeClock()
    d = detector(clock=clock, events=events, consecutive_5xx=1, interval=0.001, base_ejection_time=0.001)
    for _ in range(5):
        d.record(0, E500)
        clock.advance(0.0101)
        assert d.healthy(0)
    clock.advance(3600.0)
    started = time.perf_counter()
    assert d.healthy(0)
    assert time.perf_counter() - started < 0.5  # not 3.6 million sweeps one by one
    clock.advance(0.0005)
    d.record(0, E500)
    assert events[-1].duration == pytest.approx(0.001)  # the multiplier decayed to zero while idle


def test_ejection_time_is_capped_at_max_ejection_time() -> None:
    events: list[EjectionEvent] = []
    clock = FakeClock()
    d = detector(clock=clock, events=events, consecutive_5xx=1)
    durations = []
    for _ in range(14):
        d.record(0, E500)
        eject = events[-1]
        durations.append(eject.duration)
        assert eject.duration is not None
        clock.now = math.ceil((eject.at + eject.duration) / 10.0) * 10.0  # the sweep that returns it
        assert d.healthy(0)  # and fails again before the next sweep could lower the multiplier
    assert durations == [30.0 * n for n in range(1, 11)] + [300.0] * 4


def test_record_on_one_host_runs_the_sweep_for_all() -> None:
    events: list[EjectionEvent] = []
    clock = FakeClock()
    d = detector(2, clock, events, consecutive_5xx=1)
    d.record(0, E500)
    clock.now = 31.0
    d.record(1, OK)
    assert [e.action for e in events] == ["eject", "uneject"]
    d.tick()
    assert d.ejected == frozenset()


def test_eight_threads_recording_concurrently() -> None:
    d = detector(8, consecutive_5xx=500)
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for _ in range(499):
            d.record(n, E500)
            d.healthy((n + 1) % 8)
        d.record(n, E500)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d.ejected == frozenset(range(8))
