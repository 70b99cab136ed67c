"""The load balancer: algorithms, weights, priorities and panic, locality, hashing, concurrency."""

from __future__ import annotations

import asyncio
import math
import random
import textwrap
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml

from pymesh.config.decode import Report, decode
from pymesh.config.networking.destinationrule import DestinationRule
from pymesh.config.networking.loadbalancer import (
    ConsistentHashLB,
    HTTPCookie,
    HTTPCookieAttribute,
    LoadBalancerSettings,
    LocalityDistribute,
    LocalityFailover,
    LocalityLoadBalancerSetting,
    MagLev,
    RingHash,
    WarmupConfiguration,
    ZoneAwareLoadBalancerSetting,
)
from pymesh.outbound.balancer import Balancer, make_balancer
from pymesh.outbound.hashing import HashPolicy, MaglevTable, RingHashTable, SetCookie
from pymesh.outbound.request import RequestInfo
from pymesh.snapshot.registry import Endpoint

RR = LoadBalancerSettings(simple="ROUND_ROBIN")
LR = LoadBalancerSettings(simple="LEAST_REQUEST")
RANDOM = LoadBalancerSettings(simple="RANDOM")
RING = LoadBalancerSettings(consistent_hash=ConsistentHashLB(http_header_name="x-user"))
MAGLEV = LoadBalancerSettings(consistent_hash=ConsistentHashLB(http_header_name="x-user",
                                                               maglev=MagLev(table_size=65537)))
ALL = [RR, LR, RANDOM, RING, MAGLEV]


def eps(n: int, *, weights: Sequence[int] | None = None, locality: str = "") -> list[Endpoint]:
    return [Endpoint(address=f"10.0.0.{i}", weight=weights[i] if weights else 1, locality=locality)
            for i in range(n)]


def ep(address: str, locality: str = "", weight: int = 1, **labels: str) -> Endpoint:
    return Endpoint(address=address, locality=locality, weight=weight, labels=labels)


def counts(b: Balancer, picks: int, **kw: Any) -> Counter[int | None]:
    return Counter(b.pick(**kw) for _ in range(picks))


def request(headers: Mapping[str, str] | None = None, path: str = "/", source_ip: str = "") -> RequestInfo:
    return RequestInfo(method="GET", scheme="http", host="svc", port=None, path=path,
                       headers=dict(headers or {}), source_ip=source_ip)


def keys(n: int) -> list[bytes]:
    return [f"user-{k}".encode() for k in range(n)]


# -- algorithm choice -------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "algorithm"), [
    (None, "LEAST_REQUEST"),
    (LoadBalancerSettings(), "LEAST_REQUEST"),
    (LoadBalancerSettings(simple="UNSPECIFIED"), "LEAST_REQUEST"),
    (LoadBalancerSettings(simple="LEAST_CONN"), "LEAST_REQUEST"),
    (LR, "LEAST_REQUEST"),
    (RR, "ROUND_ROBIN"),
    (RANDOM, "RANDOM"),
    (LoadBalancerSettings(simple="PASSTHROUGH"), "PASSTHROUGH"),
    (RING, "RING_HASH"),
    (LoadBalancerSettings(consistent_hash=ConsistentHashLB(use_source_ip=True, ring_hash=RingHash())), "RING_HASH"),
    (MAGLEV, "MAGLEV"),
])
def test_algorithm(settings: LoadBalancerSettings | None, algorithm: str) -> None:
    assert make_balancer(settings, eps(2)).algorithm == algorithm


def test_passthrough_returns_no_endpoint() -> None:
    b = make_balancer(LoadBalancerSettings(simple="PASSTHROUGH"), eps(3))
    assert b.passthrough
    assert b.pick() is None
    assert not make_balancer(RR, eps(3)).passthrough


@pytest.mark.parametrize("settings", ALL)
def test_no_endpoints(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, [])
    assert b.pick() is None
    assert b.pick(hash_key=b"k", healthy=lambda i: True) is None


@pytest.mark.parametrize("settings", ALL)
def test_single_endpoint(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(1))
    assert {b.pick(hash_key=k) for k in keys(20)} == {0}


# -- round robin, random, least request -------------------------------------------------------------


def test_round_robin_equal_weights_visits_each_once_per_cycle() -> None:
    b = make_balancer(RR, eps(5), rng=random.Random(7))
    for _ in range(4):
        assert sorted(b.pick() or 0 for _ in range(5)) == [0, 1, 2, 3, 4]


def test_round_robin_weighted_is_exact_and_smooth_over_a_cycle() -> None:
    b = make_balancer(RR, eps(3, weights=[1, 2, 3]), rng=random.Random(1))
    for _ in range(10):
        cycle = [b.pick() for _ in range(6)]
        assert Counter(cycle) == {0: 1, 1: 2, 2: 3}
    # smooth: the heaviest endpoint never takes three slots in a row
    seq = [b.pick() for _ in range(60)]
    assert not any(seq[i] == seq[i + 1] == seq[i + 2] for i in range(len(seq) - 2))


def test_round_robin_starts_at_a_random_offset() -> None:
    firsts = {make_balancer(RR, eps(5), rng=random.Random(seed)).pick() for seed in range(30)}
    assert len(firsts) > 1


def test_random_is_weighted() -> None:
    b = make_balancer(RANDOM, eps(3, weights=[1, 3, 6]), rng=random.Random(3))
    c = counts(b, 4000)
    for i, share in enumerate([0.1, 0.3, 0.6]):
        assert abs(c[i] / 4000 - share) < 0.05


def test_random_equal_weights_roughly_uniform() -> None:
    b = make_balancer(RANDOM, eps(4), rng=random.Random(4))
    c = counts(b, 4000)
    assert all(abs(c[i] / 4000 - 0.25) < 0.05 for i in range(4))


def test_least_request_prefers_the_less_loaded() -> None:
    b = make_balancer(LR, eps(2), rng=random.Random(5))
    for _ in range(5):
        b.start(0)
    c = counts(b, 2000)
    # two draws with replacement: endpoint 0 wins only when both draws are 0 (1/4)
    assert abs(c[1] / 2000 - 0.75) < 0.05
    for _ in range(5):
        b.finish(0)
    c = counts(b, 2000)
    assert abs(c[0] / 2000 - 0.5) < 0.05


def test_least_request_many_endpoints_one_busy() -> None:
    b = make_balancer(None, eps(4), rng=random.Random(6))  # Istio's default is LEAST_REQUEST
    b.start(2)
    c = counts(b, 4000)
    assert abs(c[2] / 4000 - 1 / 16) < 0.03
    assert all(abs(c[i] / 4000 - 5 / 16) < 0.05 for i in (0, 1, 3))


def test_least_request_weighted_divides_by_active_plus_one() -> None:
    b = make_balancer(LR, eps(2, weights=[1, 3]), rng=random.Random(7))
    c = counts(b, 400)
    assert c == {0: 100, 1: 300}  # no load: a weighted schedule, exact over cycles
    for _ in range(5):
        b.start(1)  # 3 / (5 + 1) = 0.5 against 1 / 1
    c = counts(b, 300)
    assert c == {0: 200, 1: 100}


def test_start_finish_counts() -> None:
    b = make_balancer(LR, eps(2))
    b.start(1)
    b.start(1)
    b.finish(1)
    assert (b.active(0), b.active(1)) == (0, 1)
    b.finish(0)  # never below zero
    assert b.active(0) == 0


# -- retries: previous hosts ------------------------------------------------------------------------


@pytest.mark.parametrize("settings", ALL)
def test_exclude_avoids_previous_hosts(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(4), rng=random.Random(8))
    for k in keys(200):
        first = b.pick(hash_key=k)
        assert first is not None
        second = b.pick(hash_key=k, exclude={first})
        assert second is not None
        assert second != first
        third = b.pick(hash_key=k, exclude=[first, second])
        assert third not in (first, second)


@pytest.mark.parametrize("settings", ALL)
def test_exclude_falls_back_when_nothing_else_qualifies(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(3), rng=random.Random(9), panic_threshold=0)
    assert b.pick(hash_key=b"k", exclude={0, 1, 2}) in (0, 1, 2)
    # unhealthy endpoints do not count as "something else"
    assert b.pick(hash_key=b"k", exclude={0}, healthy=lambda i: i == 0) == 0


@pytest.mark.parametrize("settings", ALL)
def test_unhealthy_endpoints_are_skipped(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(4), rng=random.Random(10))
    picked = {b.pick(hash_key=k, healthy=lambda i: i != 3) for k in keys(300)}
    assert picked == {0, 1, 2}


# -- panic mode and priority spillover --------------------------------------------------------------


def test_panic_mode_uses_every_endpoint() -> None:
    b = make_balancer(RR, eps(4), rng=random.Random(11))
    # 1 of 4 healthy: 25% < 50% (the default threshold), so all four take traffic
    c = counts(b, 400, healthy=lambda i: i == 0)
    assert c == {0: 100, 1: 100, 2: 100, 3: 100}
    # 2 of 4: 50% is not below the threshold; 2 x 1.4 / 4 = 70% health, no panic
    assert set(counts(b, 100, healthy=lambda i: i < 2)) == {0, 1}


def test_panic_threshold_is_a_parameter() -> None:
    b = make_balancer(RR, eps(4), panic_threshold=0.0)  # what Istio writes with outlier detection
    assert set(counts(b, 100, healthy=lambda i: i == 0)) == {0}
    assert b.pick(healthy=lambda i: False) is None  # 503 no healthy upstream
    strict = make_balancer(RR, eps(4), panic_threshold=80.0)
    assert set(counts(strict, 100, healthy=lambda i: i < 2)) == {0, 1, 2, 3}  # 50% < 80%, total health 70
    # 75% < 80%, but 3 x 1.4 / 4 = 105% is full health, and Envoy ignores the threshold then
    assert set(counts(strict, 100, healthy=lambda i: i < 3)) == {0, 1, 2}
    assert make_balancer(RR, eps(4)).pick(healthy=lambda i: False) is not None  # panic: everyone


@pytest.mark.parametrize("settings", [RING, MAGLEV])
def test_panic_mode_with_hashing_ignores_health(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(4))
    healthy = b.pick(hash_key=b"k")
    assert healthy is not None
    assert b.pick(hash_key=b"k", healthy=lambda i: i == (healthy + 1) % 4) == healthy  # 25%: panic
    assert make_balancer(settings, eps(4), panic_threshold=0).pick(hash_key=b"k", healthy=lambda i: False) is None


def two_levels(n0: int, n1: int, settings: LoadBalancerSettings = RR, **kw: Any) -> Balancer:
    near = [ep(f"10.1.0.{i}", "us-west/zone1/a") for i in range(n0)]
    far = [ep(f"10.2.0.{i}", "us-east/zone9/b") for i in range(n1)]
    return make_balancer(settings, near + far, client_locality="us-west/zone1/a", outlier_detection=True,
                         rng=random.Random(12), **kw)


def test_priority_spillover_by_health() -> None:
    b = two_levels(10, 10)
    assert b.priorities == (0,) * 10 + (1,) * 10
    assert all(i is not None and i < 10 for i in counts(b, 200, healthy=lambda i: True))
    # 8 of 10 healthy: 8 x 1.4 = 112% -> still takes all the traffic
    assert all(i is not None and i < 10 for i in counts(b, 400, healthy=lambda i: i not in (0, 1)))
    # 5 of 10 healthy: health 70 -> 70% stays, 30% spills to the next level
    c = counts(b, 4000, healthy=lambda i: i >= 5)
    near = sum(v for i, v in c.items() if i is not None and i < 10)
    assert abs(near / 4000 - 0.70) < 0.05
    # nothing healthy near: all to the far level
    assert all(i is not None and i >= 10 for i in counts(b, 200, healthy=lambda i: i >= 10))


def test_priority_health_normalized_when_short_of_100() -> None:
    # health = 140 x healthy // total; when the levels sum to less than 100 they are normalized
    b = two_levels(10, 10, panic_threshold=0.0)
    # P0 2 of 10 (28) and P1 2 of 10 (28): 50% / 50%
    c = counts(b, 4000, healthy=lambda i: i in (0, 1, 10, 11))
    near = sum(v for i, v in c.items() if i is not None and i < 10)
    assert abs(near / 4000 - 0.5) < 0.05
    # P0 1 of 10 (14) and P1 3 of 10 (42): 14 / 56 = 25% near
    c = counts(b, 4000, healthy=lambda i: i in (0, 10, 11, 12))
    near = sum(v for i, v in c.items() if i is not None and i < 10)
    assert abs(near / 4000 - 0.25) < 0.05


def test_total_panic_spreads_by_endpoint_count() -> None:
    b = two_levels(2, 6)  # nothing healthy, threshold 50: every level in panic, load by host count
    c = counts(b, 4000, healthy=lambda i: False)
    near = sum(v for i, v in c.items() if i is not None and i < 2)
    assert abs(near / 4000 - 0.25) < 0.05


@pytest.mark.parametrize("settings", [RING, MAGLEV])
def test_hashing_spills_by_priority_too(settings: LoadBalancerSettings) -> None:
    b = two_levels(4, 4, settings)
    assert all((b.pick(hash_key=k) or 0) < 4 for k in keys(100))
    spilled = {b.pick(hash_key=k, healthy=lambda i: i >= 4) for k in keys(100)}
    assert spilled <= {4, 5, 6, 7}


def test_retry_remote_localities_moves_to_the_next_level() -> None:
    b = two_levels(1, 3)
    assert b.pick(exclude={0}) == 0  # the only near endpoint: previous-hosts cannot leave the level
    assert b.pick(exclude={0}, retry_remote_localities=True) in (1, 2, 3)


# -- locality ---------------------------------------------------------------------------------------


LADDER = [
    ep("a", "us-west/zone1/sub1"), ep("b", "us-west/zone1/sub2"), ep("c", "us-west/zone2/sub1"),
    ep("d", "eu-west/zone1/sub1"), ep("e", "us-west/zone1/sub1"),
]


def test_locality_priorities_need_outlier_detection() -> None:
    b = make_balancer(RR, LADDER, client_locality="us-west/zone1/sub1", outlier_detection=True)
    assert b.priorities == (0, 1, 2, 3, 0)
    assert not b.locality_weighted
    assert set(counts(b, 50)) == {0, 4}
    flat = make_balancer(RR, LADDER, client_locality="us-west/zone1/sub1")
    assert flat.priorities == (0, 0, 0, 0, 0)
    assert set(counts(flat, 50)) == {0, 1, 2, 3, 4}


def test_locality_priorities_compacted() -> None:
    b = make_balancer(RR, LADDER, client_locality="eu-west/zone1/sub9", outlier_detection=True)
    assert b.priorities == (1, 1, 1, 0, 1)


def test_locality_failover_when_level_unhealthy() -> None:
    b = make_balancer(RR, LADDER, client_locality="us-west/zone1/sub1", outlier_detection=True, panic_threshold=0)
    assert set(counts(b, 20, healthy=lambda i: i not in (0, 4))) == {1}
    assert set(counts(b, 20, healthy=lambda i: i in (2, 3))) == {2}
    assert set(counts(b, 20, healthy=lambda i: i == 3)) == {3}


def test_locality_disabled() -> None:
    off = LocalityLoadBalancerSetting(enabled=False)
    dr_off = LoadBalancerSettings(simple="ROUND_ROBIN", locality_lb_setting=off)
    assert make_balancer(dr_off, LADDER, client_locality="us-west/zone1/sub1",
                         outlier_detection=True).priorities == (0,) * 5
    assert make_balancer(RR, LADDER, client_locality="us-west/zone1/sub1", mesh_locality=off,
                         outlier_detection=True).priorities == (0,) * 5
    # the DR's setting replaces the mesh's whole
    dr_on = LoadBalancerSettings(simple="ROUND_ROBIN", locality_lb_setting=LocalityLoadBalancerSetting())
    assert make_balancer(dr_on, LADDER, client_locality="us-west/zone1/sub1", mesh_locality=off,
                         outlier_detection=True).priorities == (0, 1, 2, 3, 0)


def test_region_failover_order() -> None:
    endpoints = [ep("w", "us-west/z1"), ep("e", "us-east/z1"), ep("eu", "eu-west/z1"), ep("ap", "ap-south/z1")]
    setting = LocalityLoadBalancerSetting(failover=(LocalityFailover(from_="us-west", to="eu-west"),))
    b = make_balancer(LoadBalancerSettings(simple="ROUND_ROBIN", locality_lb_setting=setting), endpoints,
                      client_locality="us-west/z1", outlier_detection=True, panic_threshold=0)
    assert b.priorities == (0, 2, 1, 2)  # named region next; other regions after it
    assert b.locality_weighted
    assert b.pick(healthy=lambda i: i != 0) == 2
    assert set(counts(b, 20, healthy=lambda i: i in (1, 3))) == {1, 3}


def test_failover_priority_labels() -> None:
    endpoints = [
        ep("1", "r1/z1", version="v1", tier="gold"),
        ep("2", "r1/z1", version="v1", tier="silver"),
        ep("3", "r1/z2", version="v2", tier="gold"),
        ep("4", "r2/z1", version="v1", tier="gold"),
    ]
    setting = LocalityLoadBalancerSetting(failover_priority=("version", "tier"))
    lb = LoadBalancerSettings(simple="ROUND_ROBIN", locality_lb_setting=setting)
    b = make_balancer(lb, endpoints, client_locality="r1/z1", client_labels={"version": "v1", "tier": "gold"},
                      outlier_detection=True)
    assert b.priorities == (0, 1, 2, 0)  # both labels match: 0; only the first: 1; not the first: 2
    # a "label=value" entry overrides the client's value
    pinned = LocalityLoadBalancerSetting(failover_priority=("version=v2",))
    b = make_balancer(LoadBalancerSettings(locality_lb_setting=pinned), endpoints,
                      client_labels={"version": "v1"}, outlier_detection=True)
    assert b.priorities == (1, 1, 0, 1)
    # topology labels come from the locality
    topo = LocalityLoadBalancerSetting(failover_priority=("topology.kubernetes.io/region",
                                                          "topology.kubernetes.io/zone"))
    b = make_balancer(LoadBalancerSettings(locality_lb_setting=topo), endpoints, client_locality="r1/z2",
                      client_labels={"app": "me"}, outlier_detection=True)
    assert b.priorities == (1, 1, 0, 2)
    # with failover also set, region failover applies within each label priority
    both = LocalityLoadBalancerSetting(failover_priority=("version",),
                                       failover=(LocalityFailover(from_="r1", to="r3"),))
    b = make_balancer(LoadBalancerSettings(locality_lb_setting=both), endpoints, client_locality="r1/z1",
                      client_labels={"version": "v1"}, outlier_detection=True)
    # 1, 2: version matches, same zone: 0 x 5 + 0; 4: version matches, a region the failover does not
    # name: 0 x 5 + 4; 3: version differs, same region: 1 x 5 + 2; compacted 0, 4, 7 -> 0, 1, 2
    assert b.priorities == (0, 0, 2, 1)


def test_distribute_weights_localities() -> None:
    endpoints = [
        ep("a", "us-west/zone1/s1"), ep("b", "us-west/zone1/s2"), ep("c", "us-west/zone1/s2"),
        ep("d", "us-west/zone2/s1"), ep("e", "us-east/zone1/s1"),
    ]
    setting = LocalityLoadBalancerSetting(distribute=(
        LocalityDistribute(from_="us-west/zone1/*", to={"us-west/zone1/*": 80, "us-west/zone2/*": 20}),
    ))
    lb = LoadBalancerSettings(simple="ROUND_ROBIN", locality_lb_setting=setting)
    b = make_balancer(lb, endpoints, client_locality="us-west/zone1/s1", rng=random.Random(13))
    assert b.locality_weighted
    assert b.priorities == (0, 0, 0, 0, None)  # us-east is not a target: no traffic
    c = counts(b, 4000)
    zone1 = c[0] + c[1] + c[2]
    assert abs(zone1 / 4000 - 0.80) < 0.05
    assert abs(c[3] / 4000 - 0.20) < 0.05
    assert c[4] == 0
    # within zone1 the 80 splits over its subzones by their weight (1 endpoint vs 2): 27 and 54
    assert abs(c[0] / 4000 - 27 / 101) < 0.05
    # a client the rule does not match keeps every locality at its own weight
    other = make_balancer(lb, endpoints, client_locality="us-east/zone1/s1")
    assert other.priorities == (0, 0, 0, 0, 0)


def test_distribute_unhealthy_locality_loses_weight() -> None:
    endpoints = [ep("a", "r/z1"), ep("b", "r/z1"), ep("c", "r/z2"), ep("d", "r/z2")]
    setting = LocalityLoadBalancerSetting(distribute=(
        LocalityDistribute(from_="r/*", to={"r/z1": 50, "r/z2": 50}),
    ))
    b = make_balancer(LoadBalancerSettings(simple="ROUND_ROBIN", locality_lb_setting=setting), endpoints,
                      client_locality="r/z1", rng=random.Random(14))
    # z1 has 1 of 2 healthy: availability min(1, 1.4 x 0.5) = 0.7 -> weights 35 : 50
    c = counts(b, 4000, healthy=lambda i: i != 0)
    assert abs(c[1] / 4000 - 35 / 85) < 0.05
    assert c[0] == 0


def test_zone_aware_setting_buckets_regions_without_outlier_detection() -> None:
    endpoints = [ep("a", "r1/z1"), ep("b", "r1/z2"), ep("c", "r2/z1"), ep("d", "r3/z1")]
    za = ZoneAwareLoadBalancerSetting(failover=(LocalityFailover(from_="r1", to="r3"),))
    b = make_balancer(LoadBalancerSettings(zone_aware_lb_setting=za), endpoints, client_locality="r1/z1")
    assert b.priorities == (0, 0, 2, 1)


# -- consistent hashing -----------------------------------------------------------------------------


def test_hash_policy_sources() -> None:
    header = HashPolicy.compile(ConsistentHashLB(http_header_name="X-User"))
    assert header.key(request({"x-user": "alice"})) == (b"alice", None)
    assert header.key(request()) == (None, None)
    query = HashPolicy.compile(ConsistentHashLB(http_query_parameter_name="u"))
    assert query.key(request(path="/p?a=1&u=bob&u=eve")) == (b"bob", None)
    assert query.key(request(path="/p?u=")) == (b"", None)  # present but empty still hashes
    assert query.key(request(path="/p")) == (None, None)
    source = HashPolicy.compile(ConsistentHashLB(use_source_ip=True))
    assert source.key(request(source_ip="10.9.8.7")) == (b"10.9.8.7", None)
    assert source.key(request()) == (None, None)
    nothing = HashPolicy.compile(ConsistentHashLB(maglev=MagLev(table_size=7)))
    assert nothing.key(request({"x-user": "a"}, source_ip="10.9.8.7")) == (None, None)


def test_cookie_present_absent_and_quoted() -> None:
    policy = HashPolicy.compile(ConsistentHashLB(http_cookie=HTTPCookie(name="sid")))
    assert policy.key(request({"cookie": "a=1; sid=abc"})) == (b"abc", None)
    assert policy.key(request({"cookie": 'sid="abc"'})) == (b"abc", None)
    assert policy.key(request({"cookie": "sid="})) == (None, None)  # empty: absent; no ttl: no cookie made
    assert policy.key(request()) == (None, None)


def test_cookie_generated_when_absent_with_ttl() -> None:
    cookie = HTTPCookie(name="sid", path="/api", ttl=3600.5,
                        attributes=(HTTPCookieAttribute(name="SameSite", value="Strict"),
                                    HTTPCookieAttribute(name="Secure")))
    policy = HashPolicy.compile(ConsistentHashLB(http_cookie=cookie))
    key, set_cookie = policy.key(request(), rng=random.Random(15))
    assert set_cookie is not None
    assert key == set_cookie.value.encode()
    assert len(set_cookie.value) == 16
    int(set_cookie.value, 16)
    assert set_cookie == SetCookie("sid", set_cookie.value, "/api", 3600, (("SameSite", "Strict"), ("Secure", "")))
    assert set_cookie.header_value() == (
        f'sid="{set_cookie.value}"; Max-Age=3600; Path=/api; SameSite=Strict; Secure; HttpOnly'
    )
    # the client sends it back (quoted, as set): same key, no new cookie
    again = policy.key(request({"cookie": f'sid="{set_cookie.value}"'}))
    assert again == (key, None)
    # seeded: reproducible; different draws differ
    assert policy.key(request(), rng=random.Random(15))[0] == key
    assert policy.key(request(), rng=random.Random(16))[0] != key


def test_session_cookie_rendering() -> None:
    policy = HashPolicy.compile(ConsistentHashLB(http_cookie=HTTPCookie(name="s", ttl=0.0)))
    _, set_cookie = policy.key(request(), rng=random.Random(1))
    assert set_cookie is not None
    assert set_cookie.ttl_seconds == 0
    assert set_cookie.header_value() == f's="{set_cookie.value}"; HttpOnly'


def test_cookie_policy_from_yaml() -> None:
    r = Report("t.yaml", 0)
    r.namespace = "default"
    node = yaml.compose(textwrap.dedent("""
        host: reviews
        trafficPolicy:
          loadBalancer:
            consistentHash:
              httpCookie: {name: user, path: /, ttl: 10s}
    """))
    assert node is not None
    spec = decode(DestinationRule, node, r, ("spec",))
    lb = spec.traffic_policy.load_balancer
    b = make_balancer(lb, eps(3))
    assert b.hash_policy is not None
    key, set_cookie = b.hash_policy.key(request())
    assert set_cookie is not None
    assert set_cookie.header_value() == f'user="{set_cookie.value}"; Max-Age=10; Path=/; HttpOnly'
    assert b.pick(hash_key=key) == b.pick(hash_key=key)


@pytest.mark.parametrize("settings", [RING, MAGLEV])
def test_hash_is_stable_across_instances_and_endpoint_order(settings: LoadBalancerSettings) -> None:
    endpoints = eps(7)
    shuffled = endpoints[:]
    random.Random(17).shuffle(shuffled)
    a = make_balancer(settings, endpoints, rng=random.Random(1))
    b = make_balancer(settings, endpoints, rng=random.Random(2))
    c = make_balancer(settings, shuffled, rng=random.Random(3))
    for k in keys(500):
        ia, ib, ic = a.pick(hash_key=k), b.pick(hash_key=k), c.pick(hash_key=k)
        assert ia is not None
        assert ic is not None
        assert ia == ib
        assert a.endpoints[ia].address == c.endpoints[ic].address
    # and the keys spread over every endpoint
    assert {a.pick(hash_key=k) for k in keys(500)} == set(range(7))


@pytest.mark.parametrize("settings", [RING, MAGLEV])
@pytest.mark.parametrize("n", [5, 10, 20, 50])
def test_adding_an_endpoint_moves_about_one_in_n_plus_one(settings: LoadBalancerSettings, n: int) -> None:
    endpoints = eps(n + 1)
    before = make_balancer(settings, endpoints[:n])
    after = make_balancer(settings, endpoints)
    sample = keys(2000)
    moved = to_new = 0
    for k in sample:
        old, new = before.pick(hash_key=k), after.pick(hash_key=k)
        if old != new:
            moved += 1
            to_new += new == n
    ideal = 1 / (n + 1)
    # the newcomer takes its fair share, and (almost) only keys going to it move
    assert abs(to_new / len(sample) - ideal) < ideal * 0.3
    if settings is MAGLEV:
        assert moved / len(sample) < 1.3 * ideal
    else:
        # Envoy's ring gives each host ceil(1024 / n) points, so growing n also drops each old
        # host's highest-numbered points (none for 50 -> 51: 21 points either way); keys on those
        # points move to their clockwise neighbour. The bound is the newcomer's share plus them.
        dropped = 1 - math.ceil(1024 / (n + 1)) / math.ceil(1024 / n)
        assert moved / len(sample) < 1.2 * (ideal + dropped)
        if not dropped:
            assert moved == to_new


@pytest.mark.parametrize("settings", [RING, MAGLEV])
def test_hash_honours_weights(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(2, weights=[1, 3]))
    c = Counter(b.pick(hash_key=k) for k in keys(4000))
    assert abs(c[1] / 4000 - 0.75) < 0.05


@pytest.mark.parametrize("settings", [RING, MAGLEV])
def test_no_hash_key_picks_at_random(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(4), rng=random.Random(18))
    c = counts(b, 4000)
    assert all(abs(c[i] / 4000 - 0.25) < 0.05 for i in range(4))


@pytest.mark.parametrize("settings", [RING, MAGLEV])
def test_unhealthy_host_moves_only_its_own_keys(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, eps(6))
    sample = keys(1000)
    before = [b.pick(hash_key=k) for k in sample]
    after = [b.pick(hash_key=k, healthy=lambda i: i != 2) for k in sample]
    for x, y in zip(before, after, strict=True):
        assert y != 2
        if x != 2:
            assert x == y


def test_ring_size_and_weights() -> None:
    ring = RingHashTable(range(3), ["a", "b", "c"], [1.0, 1.0, 1.0])
    assert len(ring) == 1026  # ceil(1024 / 3) points each
    weighted = RingHashTable(range(2), ["a", "b"], [1.0, 3.0], min_size=100)
    assert (weighted.share(0), weighted.share(1)) == (25, 75)  # the lightest gets ceil(0.25 x 100)
    uncapped = RingHashTable(range(2), ["a", "b"], [1.0, 1000.0], min_size=1024)
    assert len(uncapped) == 2002  # ceil(1024 / 1001) = 2 points for the light host, scaled up
    capped = RingHashTable(range(2), ["a", "b"], [1.0, 1023.0], min_size=256, max_size=512)
    assert (capped.share(0), capped.share(1)) == (1, 511)  # 1024 needed for a whole point each, capped at 512
    with pytest.raises(ValueError, match="minimum_ring_size"):
        RingHashTable([0], ["a"], [1.0], min_size=10, max_size=5)
    b = make_balancer(LoadBalancerSettings(consistent_hash=ConsistentHashLB(
        http_header_name="h", ring_hash=RingHash(minimum_ring_size=4096))), eps(2))
    assert b.pick(hash_key=b"x") in (0, 1)


def test_maglev_table_fill_by_weight() -> None:
    table = MaglevTable(range(3), ["a", "b", "c"], [1.0, 2.0, 3.0], size=6007)
    assert len(table) == 6007
    shares = [table.share(i) / 6007 for i in range(3)]
    assert [round(s, 2) for s in shares] == [0.17, 0.33, 0.5]
    small = MaglevTable(range(2), ["a", "b"], [1.0, 1.0], size=7)
    assert sorted(small.share(i) for i in range(2)) == [3, 4]


# -- slow start -------------------------------------------------------------------------------------


def test_slow_start_ramps_a_new_endpoint() -> None:
    now = [1000.0]

    def clock() -> float:
        return now[0]

    warm = LoadBalancerSettings(simple="ROUND_ROBIN", warmup=WarmupConfiguration(duration=100.0))
    endpoints = eps(2)
    b = make_balancer(warm, endpoints, joined_at={"10.0.0.0": 0.0}, clock=clock)
    assert b.joined_at == {"10.0.0.0": 0.0, "10.0.0.1": 1000.0}
    c = counts(b, 1100)  # age 0: the minimum 10%
    assert abs(c[1] / 1100 - 0.1 / 1.1) < 0.02
    now[0] = 1050.0  # half way: 50%
    c = counts(b, 1500)
    assert abs(c[1] / 1500 - 0.5 / 1.5) < 0.02
    now[0] = 1200.0  # past the window: equal again
    assert counts(b, 1000) == {0: 500, 1: 500}


# -- concurrency ------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", ALL)
@pytest.mark.parametrize("weights", [None, [1, 2, 3, 4]])
def test_threads_leave_no_active_requests(settings: LoadBalancerSettings, weights: list[int] | None) -> None:
    b = make_balancer(settings, eps(4, weights=weights), rng=random.Random(19))
    errors: list[BaseException] = []
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def not_three(i: int) -> bool:
        return i != 3

    def worker(seed: int) -> None:
        try:
            local: Counter[int] = Counter()
            for n in range(500):
                i = b.pick(hash_key=f"{seed}-{n}".encode(), healthy=not_three if n % 2 else None,
                           exclude={n % 4} if n % 3 == 0 else ())
                assert i is not None
                b.start(i)
                local[i] += 1
                b.finish(i)
            with lock:
                seen.update(local)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [b.active(i) for i in range(4)] == [0, 0, 0, 0]
    assert sum(seen.values()) == 4000


@pytest.mark.parametrize("settings", [RING, MAGLEV])
def test_repeated_addresses_are_distinct_hosts(settings: LoadBalancerSettings) -> None:
    b = make_balancer(settings, [ep("10.0.0.1"), ep("10.0.0.1"), ep("10.0.0.2")])
    assert {b.pick(hash_key=k) for k in keys(300)} == {0, 1, 2}


def test_event_loop_tasks_interleave_safely() -> None:
    b = make_balancer(LR, eps(4), rng=random.Random(20))

    async def request(n: int) -> int | None:
        i = b.pick(exclude={n % 4})
        assert i is not None
        b.start(i)
        await asyncio.sleep(0)  # other tasks pick while this request is in flight
        busy = b.active(i)
        b.finish(i)
        return busy

    async def main() -> list[int | None]:
        return await asyncio.gather(*(request(n) for n in range(400)))

    busy = asyncio.run(main())
    assert max(b or 0 for b in busy) > 1  # requests really overlapped
    assert [b.active(i) for i in range(4)] == [0, 0, 0, 0]
