"""End to end, load balancing through the mesh: DestinationRule ``loadBalancer`` over real
loopback endpoints, for the sync and the async client.

Covered: the simple algorithms, consistent hashing on a header, a cookie (generated with
``ttl``), a query parameter and the source IP, and locality priorities relative to the
calling workload. Istio writes failover priorities only when the cluster has
``outlierDetection`` (``distribute`` applies regardless); with it, a stopped local endpoint
is ejected on its connect failure and the retry fails over to the next locality.

``Upstream.stop()`` closes the listening socket but not connections already open (their
handler threads keep serving keep-alive requests), so a test that stops an endpoint sends
the next request from a new client, whose pool has no connection to it.
"""

from __future__ import annotations

from collections import Counter
from http.cookies import SimpleCookie
from typing import Any

import pytest

from pymesh.testing.upstream import Upstream, service_yaml
from tests.outbound.conftest import Connect, MakeMesh, Sender, StartUpstream, binomial_bounds, docs, served_by

Trio = tuple[Upstream, Upstream, Upstream]
NAMES = {"svc-v1", "svc-v2", "svc-v3"}
URL = "http://svc:8080/lb"


def lb_config(trio: Trio, load_balancer: str) -> str:
    dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc, namespace: ns1}\n"
          f"spec:\n  host: svc\n  trafficPolicy:\n    loadBalancer: {load_balancer}\n")
    return docs(service_yaml("svc", "ns1", trio), dr)


def spread(sender: Sender, n: int, **kw: Any) -> Counter[str]:
    return Counter(served_by(r) for r in sender.many(n, URL, **kw))


# -- simple algorithms ---------------------------------------------------------------------------------


def test_round_robin_spreads_evenly(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(lb_config(trio, "{simple: ROUND_ROBIN}"))
    sender = connect(mesh)
    order = [served_by(r) for r in sender.many(99, URL)]
    assert Counter(order) == {"svc-v1": 33, "svc-v2": 33, "svc-v3": 33}
    for i in range(0, 99, 3):
        assert set(order[i:i + 3]) == NAMES  # a strict rotation, not just even totals
    assert [u.count() for u in trio] == [33, 33, 33]
    policy = mesh.route("GET", URL).traffic_policy
    assert policy is not None
    assert policy.load_balancer.simple == "ROUND_ROBIN"


@pytest.mark.parametrize("load_balancer", ["{simple: RANDOM}", "{simple: LEAST_REQUEST}", "{simple: LEAST_CONN}"])
def test_other_simple_algorithms_use_every_endpoint(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, load_balancer: str
) -> None:
    n = 150
    seen = spread(connect(make_mesh(lb_config(trio, load_balancer))), n)
    low, high = binomial_bounds(n, 1 / 3)
    assert set(seen) == NAMES
    assert all(low <= c <= high for c in seen.values()), seen


def test_default_policy_without_destination_rule_uses_every_endpoint(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    seen = spread(connect(make_mesh(service_yaml("svc", "ns1", trio))), 60)
    assert set(seen) == NAMES


# -- consistent hashing -------------------------------------------------------------------------------


@pytest.mark.parametrize("load_balancer", [
    "{consistentHash: {httpHeaderName: x-user}}",
    "{consistentHash: {httpHeaderName: X-User, ringHash: {minimumRingSize: 64}}}",
    "{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}",
])
def test_consistent_hash_on_a_header_keeps_a_key_on_one_endpoint(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, load_balancer: str
) -> None:
    sender = connect(make_mesh(lb_config(trio, load_balancer)))
    owners: dict[str, str] = {}
    for user in range(16):
        seen = spread(sender, 5, headers={"x-user": f"user-{user}"})
        assert len(seen) == 1, (user, seen)  # every request of one key lands on one endpoint
        owners[f"user-{user}"] = next(iter(seen))
    assert len(set(owners.values())) >= 2  # and the keys are spread over the endpoints
    # the owner is stable: ask again, in another order
    for key, owner in reversed(owners.items()):
        assert served_by(sender.get(URL, headers={"x-user": key})) == owner


def test_consistent_hash_without_the_header_picks_at_random(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    sender = connect(make_mesh(lb_config(trio, "{consistentHash: {httpHeaderName: x-user}}")))
    assert len(spread(sender, 30)) >= 2


def _cookie(set_cookie: str, name: str) -> str:
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookie)
    return jar[name].value


def test_consistent_hash_on_a_cookie_with_ttl_sets_the_cookie_and_sticks(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(lb_config(trio, "{consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}}}"))
    sender = connect(mesh)
    first = sender.get(URL)
    owner = served_by(first)
    header = first.headers["set-cookie"]
    assert header.startswith('sticky="')
    assert "Max-Age=60" in header
    assert "Path=/" in header
    assert "HttpOnly" in header
    value = _cookie(header, "sticky")
    assert len(value) == 16
    for _ in range(10):
        r = sender.get(URL, headers={"cookie": f'other=1; sticky="{value}"'})
        assert served_by(r) == owner
        assert "set-cookie" not in r.headers  # the request carried the cookie: nothing to set
    # the client's own cookie jar took the cookie and keeps the session on the same endpoint
    for r in sender.many(5, URL):
        assert served_by(r) == owner
        assert "set-cookie" not in r.headers


def test_cookie_sessions_spread_over_endpoints(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    sender = connect(make_mesh(lb_config(trio, "{consistentHash: {httpCookie: {name: sticky, ttl: 0s}}}")))
    owners = set()
    for _ in range(30):
        sender.client.cookies.clear()  # a new session each time
        r = sender.get(URL)
        assert "Max-Age" not in r.headers["set-cookie"]  # ttl 0: a session cookie
        owners.add(served_by(r))
    assert len(owners) >= 2


def test_cookie_without_ttl_is_never_generated(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    sender = connect(make_mesh(lb_config(trio, "{consistentHash: {httpCookie: {name: sticky}}}")))
    responses = sender.many(30, URL)
    assert all("set-cookie" not in r.headers for r in responses)
    assert len({served_by(r) for r in responses}) >= 2
    owners = {served_by(r) for r in sender.many(8, URL, headers={"cookie": "sticky=abc"})}
    assert len(owners) == 1


def test_consistent_hash_on_a_query_parameter(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    sender = connect(make_mesh(lb_config(trio, "{consistentHash: {httpQueryParameterName: user}}")))
    owners = {}
    for user in range(16):
        seen = Counter(served_by(r) for r in sender.many(4, f"{URL}?user=u{user}&x={user}"))
        assert len(seen) == 1
        owners[user] = next(iter(seen))
    assert len(set(owners.values())) >= 2
    # the first occurrence of the name is the key
    assert served_by(sender.get(f"{URL}?user=u3&user=u4")) == owners[3]


def test_consistent_hash_on_the_source_ip_keeps_this_client_on_one_endpoint(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    config = lb_config(trio, "{consistentHash: {useSourceIp: true}}")
    assert len(spread(connect(make_mesh(config)), 20)) == 1  # every request comes from this one workload
    owners = set()
    for i in range(8):  # workloads with other addresses hash elsewhere
        seen = spread(connect(make_mesh(config, address=f"10.0.0.{i + 1}")), 4)
        assert len(seen) == 1
        owners |= set(seen)
    assert len(owners) >= 2


def test_source_ip_hash_in_a_dry_run_uses_the_given_address(trio: Trio, make_mesh: MakeMesh) -> None:
    mesh = make_mesh(lb_config(trio, "{consistentHash: {useSourceIp: true}}"))
    d = mesh.route("GET", URL, source_ip="10.1.2.3")
    assert d.traffic_policy is not None
    assert d.traffic_policy.load_balancer.consistent_hash.use_source_ip is True
    assert len(d.endpoints) == 3


# -- locality ---------------------------------------------------------------------------------------------

LOCAL = "region1/zone1/sub1"
OUTLIER = "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}"


def zones(servers: StartUpstream) -> tuple[Upstream, Upstream, Upstream]:
    return (servers("local", {"zone": "a"}, locality=LOCAL),
            servers("same-region", {"zone": "b"}, locality="region1/zone2/sub1"),
            servers("far", {"zone": "c"}, locality="region2/zone3/sub1"))


def zone_config(ups: tuple[Upstream, Upstream, Upstream], policy: str) -> str:
    dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: zoned, namespace: ns1}\n"
          f"spec:\n  host: zoned\n  trafficPolicy: {{{policy}}}\n") if policy else ""
    return docs(service_yaml("zoned", "ns1", ups), dr)


ZONED = "http://zoned:8080/"


def test_locality_prefers_the_same_zone_with_outlier_detection(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ups = zones(servers)
    mesh = make_mesh(zone_config(ups, OUTLIER), locality=LOCAL)
    seen = Counter(served_by(r) for r in connect(mesh).many(40, ZONED))
    assert seen == {"local": 40}


def test_without_outlier_detection_every_locality_is_equal(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ups = zones(servers)
    mesh = make_mesh(zone_config(ups, "loadBalancer: {simple: ROUND_ROBIN}"), locality=LOCAL)
    seen = Counter(served_by(r) for r in connect(mesh).many(30, ZONED))
    assert seen == {"local": 10, "same-region": 10, "far": 10}


def test_a_client_without_locality_sees_every_locality_alike(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ups = zones(servers)
    mesh = make_mesh(zone_config(ups, OUTLIER + ", loadBalancer: {simple: ROUND_ROBIN}"))
    seen = Counter(served_by(r) for r in connect(mesh).many(30, ZONED))
    assert seen == {"local": 10, "same-region": 10, "far": 10}


def test_locality_distribute_weights_traffic_by_zone(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ups = zones(servers)
    policy = ("loadBalancer: {simple: RANDOM, localityLbSetting: {distribute: [{from: 'region1/zone1/*', "
              "to: {'region1/zone1/*': 80, 'region1/zone2/*': 20}}]}}")
    mesh = make_mesh(zone_config(ups, policy), locality=LOCAL)
    n = 400
    seen = Counter(served_by(r) for r in connect(mesh).many(n, ZONED))
    assert seen["far"] == 0  # a locality the rule does not name gets nothing
    low, high = binomial_bounds(n, 0.8)
    assert low <= seen["local"] <= high, seen
    assert seen["local"] + seen["same-region"] == n


def test_locality_fails_over_to_the_same_region_when_the_local_endpoint_stops(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ups = zones(servers)
    mesh = make_mesh(zone_config(ups, OUTLIER), locality=LOCAL)
    assert served_by(connect(mesh).get(ZONED)) == "local"
    ups[0].stop()
    answers = connect(mesh).many(10, ZONED)
    # the connect failure ejects the local endpoint and the retry (connect-failure is retried by
    # default) goes on to the next priority: the same region, never the far one
    assert [(r.status_code, served_by(r)) for r in answers] == [(200, "same-region")] * 10
    ups[1].stop()
    answers = connect(mesh).many(5, ZONED)
    assert [(r.status_code, served_by(r)) for r in answers] == [(200, "far")] * 5  # then the other region
