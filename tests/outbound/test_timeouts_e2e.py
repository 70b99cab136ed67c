"""End to end, timeouts through the mesh against real loopback upstreams, sync and async.

Covered: ``perTryTimeout`` then success on another endpoint (retried only under ``5xx``,
``gateway-error`` or ``reset``; otherwise the caller gets 504 UT after one try); the route
``timeout`` capping every try and backoff (1 s route timeout, 3 retries, 400 ms per try, a 2 s
upstream: 504 UT at about 1 s, at most 3 tries, none started after the deadline); no timeout
by default; ``raise_errors=True`` raising ``pymesh.UpstreamTimeoutError`` (an
``httpx.TimeoutException``); the caller's own httpx timeout, shorter than the mesh's, still
raising ``httpx.ReadTimeout`` (and never retried); the tutorial's
``virtual-service-recommendation-timeout.yml``.

Times are measured with generous tolerances (the suite runs on two busy cores): the bounds
that matter are that a timed-out call ends well before the upstream would have answered.
"""

from __future__ import annotations

import time

import httpx
import pytest

import pymesh
from pymesh.testing.upstream import Upstream, service_yaml
from tests.conftest import shared_dir
from tests.outbound.conftest import Connect, MakeMesh, Sender, StartUpstream, docs, echo, served_by
from tests.outbound.test_resilience_e2e import ATTEMPT, BODY, FLAGS, URL, Script, dest_rule, route_vs

TUTORIAL = shared_dir() / "conformance" / "istio-tutorial"
SLOW = 2.0  # an upstream that answers long after any timeout below


def timed(sender: Sender, method: str, url: str, **kw: object) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = sender.send(method, url, **kw)
    return r, time.monotonic() - start


def slow_and_fast(servers: StartUpstream) -> tuple[Upstream, Upstream]:
    slow, fast = servers("svc-slow"), servers("svc-fast")
    slow.respond(Script(200, delay=SLOW))
    return slow, fast


# -- perTryTimeout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_on", ["5xx", "gateway-error", "reset", "connect-failure,5xx"])
def test_per_try_timeout_then_success_on_the_other_endpoint(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, retry_on: str
) -> None:
    slow, fast = slow_and_fast(servers)
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [slow, fast]), dest_rule("{loadBalancer: {simple: ROUND_ROBIN}}"),
                          route_vs(f"retries: {{attempts: 2, perTryTimeout: 0.3s, retryOn: '{retry_on}'}}")))
    sender = connect(mesh)
    n = 4
    for _ in range(n):
        r, elapsed = timed(sender, "POST", URL, content=BODY)
        assert served_by(r) == "svc-fast"
        assert elapsed < SLOW - 0.5  # the slow try was cut, not waited for
    # Round robin: half the requests went to the slow endpoint first and were retried on the fast one.
    assert slow.count() == n // 2
    assert fast.count() == n
    assert sorted(x.headers[ATTEMPT] for x in fast.received) == ["1", "1", "2", "2"]
    assert [x.headers[ATTEMPT] for x in slow.received] == ["1", "1"]
    assert all(x.body == BODY for x in (*slow.received, *fast.received))


@pytest.mark.parametrize("retries", [
    "{attempts: 2, perTryTimeout: 0.3s}",  # no retryOn: the default conditions, which have no timeout
    "{attempts: 2, perTryTimeout: 0.3s, retryOn: 'connect-failure,refused-stream,503'}",
])
def test_per_try_timeout_is_not_retried_without_5xx_gateway_error_or_reset(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, retries: str
) -> None:
    slow = servers("svc-slow")
    slow.respond(Script(200, delay=SLOW))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [slow]), route_vs(f"retries: {retries}")))
    r, elapsed = timed(connect(mesh), "GET", URL)
    assert r.status_code == 504
    assert r.headers[FLAGS] == "UT"
    assert r.text == "upstream request timeout"
    assert 0.25 <= elapsed < 1.2
    assert slow.count() == 1


def test_per_try_timeouts_exhausted_give_504_ut_urx(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    slow = servers("svc-slow")
    slow.respond(Script(200, delay=SLOW))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [slow]),
                          route_vs("retries: {attempts: 1, perTryTimeout: 0.25s, retryOn: 5xx}")))
    r, elapsed = timed(connect(mesh), "GET", URL)
    assert (r.status_code, r.headers[FLAGS]) == (504, "UT,URX")
    assert slow.count() == 2
    assert 0.45 <= elapsed < 1.5


# -- the route timeout ------------------------------------------------------------------------------


def test_route_timeout_caps_every_try_and_backoff(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-slow")
    script = Script(200, delay=SLOW)
    up.respond(script)
    retries = "retries: {attempts: 3, perTryTimeout: 0.4s, retryOn: '5xx,reset'}"
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs(f"timeout: 1s\n    {retries}")))
    sender = connect(mesh)
    start = time.monotonic()
    r = sender.send("POST", URL, content=BODY)
    elapsed = time.monotonic() - start
    assert r.status_code == 504
    assert r.headers[FLAGS] == "UT"  # the deadline, not the retry count, ended it: no URX
    assert r.text == "upstream request timeout"
    assert 0.8 <= elapsed <= 1.6, elapsed
    # 400 ms tries in a 1 s budget: two full tries and a third cut short by the deadline.
    assert 2 <= script.count <= 3, script.times
    assert all(t - start < 1.0 + 0.15 for t in script.times), [round(t - start, 3) for t in script.times]
    assert [x.headers[ATTEMPT] for x in up.received] == [str(i) for i in range(1, script.count + 1)]
    assert all(x.body == BODY for x in up.received)
    # Nothing starts after the deadline, also later: the upstream sees no late try.
    sender.pump(0.3)
    assert up.count() == script.count


def test_route_timeout_without_retries_gives_504_ut(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-slow")
    up.respond(Script(200, delay=SLOW))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("timeout: 0.5s")))
    r, elapsed = timed(connect(mesh), "GET", URL)
    assert (r.status_code, r.headers[FLAGS]) == (504, "UT")
    assert 0.4 <= elapsed < 1.2
    assert up.count() == 1


def test_route_timeout_leaves_fast_answers_alone(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(200, delay=0.2))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("timeout: 1.5s")))
    sender = connect(mesh)
    for r in sender.many(3, URL):
        assert served_by(r) == "svc-v1"


def test_no_timeout_by_default(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    up = servers("svc-v1")
    up.respond(Script(200, delay=0.6))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs()))
    assert mesh.route("GET", URL).timeout is None
    r, elapsed = timed(connect(mesh), "GET", URL)
    assert served_by(r) == "svc-v1"
    assert elapsed >= 0.55


@pytest.mark.parametrize("retries", ["", "\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: 5xx}"])
def test_route_timeout_with_raise_errors_raises_a_timeout_exception(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, retries: str
) -> None:
    up = servers("svc-slow")
    up.respond(Script(200, delay=SLOW))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs(f"timeout: 0.4s{retries}")))
    sender = connect(mesh, raise_errors=True)
    start = time.monotonic()
    with pytest.raises(pymesh.UpstreamTimeoutError) as info:
        sender.get(URL)
    assert time.monotonic() - start < 1.2
    assert isinstance(info.value, httpx.TimeoutException)  # what an existing handler catches
    assert isinstance(info.value, pymesh.MeshError)
    assert info.value.status == 504
    assert "UT" in info.value.flags.split(",")


# -- the caller's own timeouts ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["client", "request"])
def test_callers_shorter_httpx_timeout_still_raises_read_timeout(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, where: str
) -> None:
    up = servers("svc-slow")
    up.respond(Script(200, delay=1.2))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          route_vs("timeout: 3s\n    retries: {attempts: 3, perTryTimeout: 1s, retryOn: '5xx,reset'}")))
    timeout = httpx.Timeout(5.0, read=0.3)
    sender = connect(mesh, timeout=timeout) if where == "client" else connect(mesh)
    kw = {} if where == "client" else {"timeout": timeout}
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        sender.get(URL, **kw)
    assert time.monotonic() - start < 1.0  # the caller's 0.3 s, not the mesh's 1 s per try
    assert up.count() == 1  # the caller's timeout is theirs to handle: never retried


def test_callers_longer_httpx_timeout_leaves_the_mesh_timeout_in_charge(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-slow")
    up.respond(Script(200, delay=SLOW))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("timeout: 0.4s")))
    sender = connect(mesh, timeout=httpx.Timeout(10.0))
    r = sender.get(URL)
    assert (r.status_code, r.headers[FLAGS]) == (504, "UT")


# -- the tutorial ------------------------------------------------------------------------------------


def test_tutorial_timeout_file_cuts_the_slow_recommendation_at_one_second(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    # The tutorial makes recommendation v2 sleep 3 s; any delay past the 1 s timeout shows the same.
    v1 = servers("recommendation-v1", {"version": "v1"})
    v2 = servers("recommendation-v2", {"version": "v2"})
    v2.respond(Script(200, delay=1.6))
    text = (TUTORIAL / "virtual-service-recommendation-timeout.yml").read_text()
    assert "timeout: 1.000s" in text
    rr = dest_rule("{loadBalancer: {simple: ROUND_ROBIN}}", host="recommendation", namespace="tutorial")
    mesh = make_mesh(docs(service_yaml("recommendation", "tutorial", [v1, v2]), rr, text),
                     namespace="tutorial", name="preference")
    assert mesh.route("GET", "http://recommendation:8080/").timeout == 1.0
    sender = connect(mesh)
    seen: dict[str, float] = {}
    for _ in range(2):  # round robin: one request to each version
        r, elapsed = timed(sender, "GET", "http://recommendation:8080/")
        if r.status_code == 200:
            seen[echo(r)["name"]] = elapsed
        else:
            assert (r.status_code, r.text, r.headers[FLAGS]) == (504, "upstream request timeout", "UT")
            seen["timeout"] = elapsed
    assert set(seen) == {"recommendation-v1", "timeout"}
    assert 0.8 <= seen["timeout"] <= 1.5
    assert (v1.count(), v2.count()) == (1, 1)  # the default policy does not retry a timeout
