"""End to end, request and response shaping: rewrites, redirects, direct responses, header
operations, and mirroring, for the sync and the async client.

Routing is to ``svc`` in ``ns1`` over the shared upstreams ``svc-v1``..``svc-v3`` (subsets
``v1``..``v3``) unless a test needs a header-exact echo (``RawEcho``, which keeps repeated
header lines and their order).
"""

from __future__ import annotations

import base64
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from pymesh.testing.upstream import Received, Reply, Upstream, service_yaml
from tests.outbound.conftest import (
    WAIT,
    Connect,
    MakeMesh,
    RawEcho,
    Sender,
    StartUpstream,
    binomial_bounds,
    docs,
    echo,
    mesh_config,
    raw_headers,
    served_by,
    subsets_dr,
    vs,
)

Trio = tuple[Upstream, Upstream, Upstream]


def base(trio: Trio, *extra: str) -> str:
    return docs(service_yaml("svc", "ns1", trio), subsets_dr("svc", "ns1", "v1", "v2", "v3"), *extra)


def one_rule(rule: str, *more: str, hosts: str = "[svc]") -> str:
    """A VirtualService for ``svc`` with the given http rules (flow YAML)."""
    body = "  http:\n" + "".join(f"  - {r}\n" for r in (rule, *more))
    return vs("svc-routes", "ns1", body, hosts=hosts)


V1 = "route: [{destination: {host: svc, subset: v1}}]"


def path_seen(sender: Sender, url: str, **kw: object) -> str:
    r = sender.get(url, **kw)
    assert served_by(r) == "svc-v1"
    path: str = echo(r)["path"]
    return path


# -- rewrite -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "cases"), [
    pytest.param("{match: [{uri: {prefix: /api/}}], rewrite: {uri: /v2/}, " + V1 + "}", [
        ("/api/users?x=1", "/v2/users?x=1"), ("/api/", "/v2/"),
    ], id="prefix-replaced-query-kept"),
    pytest.param("{match: [{uri: {prefix: /customer}}], rewrite: {uri: /}, " + V1 + "}", [
        ("/customer", "/"), ("/customerX", "/X"), ("/customer?x=/", "/?x=/"),
    ], id="prefix-to-slash"),
    pytest.param("{rewrite: {uri: /v1}, " + V1 + "}", [
        ("/x", "/v1x"), ("/", "/v1"), ("/a/b?c=d", "/v1a/b?c=d"),
    ], id="no-uri-match-replaces-slash"),
    pytest.param("{match: [{uri: {exact: /old}}], rewrite: {uri: /new/place}, " + V1 + "}", [
        ("/old", "/new/place"), ("/old?a=1&b=2", "/new/place?a=1&b=2"),
    ], id="exact-replaces-whole-path-keeps-query"),
    pytest.param("{match: [{uri: {prefix: /a/}}, {uri: {prefix: /bb/}}], rewrite: {uri: /z/}, " + V1 + "}", [
        ("/a/1", "/z/1"), ("/bb/2?q", "/z/2?q"),
    ], id="prefix-of-the-block-that-matched"),
    pytest.param("{match: [{uri: {prefix: /API/}, ignoreUriCase: true}], rewrite: {uri: /v2/}, " + V1 + "}", [
        ("/api/x", "/v2/x"), ("/Api/y", "/v2/y"),
    ], id="ignore-uri-case-prefix"),
    pytest.param(r"{match: [{uri: {prefix: /service}}], rewrite: {uriRegexRewrite: "
                 r"{match: '^/service/([^/]+)(/.*)$', rewrite: '\2/instance/\1'}}, " + V1 + "}", [
        ("/service/foo/v1/api?q=1", "/v1/api/instance/foo?q=1"), ("/service/bar/x", "/x/instance/bar"),
    ], id="uri-regex-rewrite-captures"),
    pytest.param("{rewrite: {uriRegexRewrite: {match: o, rewrite: '0'}}, " + V1 + "}", [
        ("/foo/boo?o=o", "/f00/b00?o=o"),
    ], id="uri-regex-rewrite-is-global-path-only"),
])
def test_uri_rewrite(trio: Trio, make_mesh: MakeMesh, connect: Connect, rule: str,
                     cases: list[tuple[str, str]]) -> None:
    mesh = make_mesh(base(trio, one_rule(rule)))
    sender = connect(mesh)
    for sent, expected in cases:
        assert path_seen(sender, f"http://svc:8080{sent}") == expected, sent
        assert mesh.route("GET", f"http://svc:8080{sent}").path == expected


def test_prefix_rewrite_to_slash_doubles_the_slash_on_the_wire(
    raw_echo: Callable[[str], RawEcho], make_mesh: MakeMesh, connect: Connect
) -> None:
    server = raw_echo("raw")
    rule = vs("raw", "ns1", "  http:\n  - {match: [{uri: {prefix: /customer}}], rewrite: {uri: /}, "
              "route: [{destination: {host: raw}}]}\n", hosts="[raw]")
    mesh = make_mesh(docs(raw_service(server), rule))
    r = connect(mesh).get("http://raw:8080/customer/foo?a=1")
    assert r.json()["target"] == "//foo?a=1"  # the known Istio quirk: include the trailing slash in the match
    assert mesh.route("GET", "http://raw:8080/customer/foo").path == "//foo"


def test_rewrite_authority_changes_the_host_the_upstream_sees(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    rule = "{rewrite: {authority: new-host.example, uri: /base}, " + V1 + "}"
    mesh = make_mesh(base(trio, one_rule(rule)))
    r = connect(mesh).get("http://svc:8080/x")
    seen = echo(r)
    assert seen["headers"]["host"] == "new-host.example"
    assert seen["path"] == "/basex"
    assert str(r.request.url) == "http://svc:8080/x"  # the caller's request is not changed
    assert mesh.route("GET", "http://svc:8080/x").authority == "new-host.example"


def test_rewrite_records_the_original_path(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, one_rule("{match: [{uri: {prefix: /api}}], rewrite: {uri: /v2}, " + V1 + "}")))
    seen = echo(connect(mesh).get("http://svc:8080/api/x?q=1"))
    assert seen["path"] == "/v2/x?q=1"
    assert seen["headers"]["x-envoy-original-path"] == "/api/x?q=1"


# -- redirect ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("redirect", "url", "status", "location"), [
    ("{uri: /new}", "http://svc:8080/old?q=1", 301, "http://svc:8080/new?q=1"),
    ("{uri: '/new?z=2'}", "http://svc:8080/old?q=1", 301, "http://svc:8080/new?z=2"),
    ("{authority: other.example}", "http://svc/old", 301, "http://other.example/old"),
    ("{authority: 'other.example:9000'}", "http://svc/old?a=b", 301, "http://other.example:9000/old?a=b"),
    ("{scheme: https}", "http://svc/old", 301, "https://svc/old"),
    ("{port: 8443}", "http://svc/old", 301, "http://svc:8443/old"),
    ("{scheme: https, port: 443}", "http://svc:8080/old", 301, "https://svc/old"),
    ("{scheme: https, derivePort: FROM_REQUEST_PORT}", "http://svc:8080/old", 301, "https://svc:8080/old"),
    ("{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}", "http://svc:8080/old", 301, "https://svc/old"),
    ("{uri: /new, redirectCode: 302}", "http://svc:8080/old", 302, "http://svc:8080/new"),
    ("{uri: /new, redirectCode: 308}", "http://svc:8080/old", 308, "http://svc:8080/new"),
    ("{uri: /new, authority: b.example, scheme: https}", "http://svc:8080/old", 301, "https://b.example/new"),
])
def test_redirect(trio: Trio, make_mesh: MakeMesh, connect: Connect, redirect: str, url: str, status: int,
                  location: str) -> None:
    mesh = make_mesh(base(trio, one_rule(f"{{redirect: {redirect}}}")))
    r = connect(mesh, follow_redirects=False).get(url)
    assert r.status_code == status
    assert r.headers["location"] == location
    assert r.content == b""
    assert "x-pymesh-flags" not in r.headers
    assert sum(u.count() for u in trio) == 0
    d = mesh.route("GET", url)
    assert (d.action, d.status, d.location) == ("redirect", status, location)


def test_redirect_prefix_rewrite(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    rule = ("{match: [{uri: {prefix: /old/}}], redirect: {prefixRewrite: /new/}, "
            "headers: {response: {set: {x-moved: 'yes'}}}}")
    mesh = make_mesh(base(trio, one_rule(rule, "{" + V1 + "}")))
    sender = connect(mesh, follow_redirects=False)
    r = sender.get("http://svc:8080/old/a/b?x=1")
    assert r.status_code == 301
    assert r.headers["location"] == "http://svc:8080/new/a/b?x=1"
    assert r.headers["x-moved"] == "yes"  # response header operations apply to the local reply
    assert served_by(sender.get("http://svc:8080/other")) == "svc-v1"


def test_following_a_mesh_redirect_lands_on_the_new_route(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    rule = "{match: [{uri: {exact: /old}}], redirect: {uri: /new}}"
    mesh = make_mesh(base(trio, one_rule(rule, "{" + V1 + "}")))
    r = connect(mesh, follow_redirects=True).get("http://svc:8080/old?k=v")
    assert served_by(r) == "svc-v1"
    assert echo(r)["path"] == "/new?k=v"
    assert [h.status_code for h in r.history] == [301]


# -- direct response ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("direct", "status", "body"), [
    ("{status: 503, body: {string: 'sorry, closed'}}", 503, b"sorry, closed"),
    (f"{{status: 200, body: {{bytes: {base64.b64encode(b'hello world').decode()}}}}}", 200, b"hello world"),
    (f"{{status: 200, body: {{bytes: {base64.b64encode(bytes(range(256))).decode()}}}}}", 200, bytes(range(256))),
    ("{status: 204}", 204, b""),
    ("{status: 418, body: {string: ''}}", 418, b""),
])
def test_direct_response(trio: Trio, make_mesh: MakeMesh, connect: Connect, direct: str, status: int,
                         body: bytes) -> None:
    mesh = make_mesh(base(trio, one_rule(f"{{directResponse: {direct}}}")))
    r = connect(mesh, raise_errors=True).get("http://svc:8080/anything")  # configured answers never raise
    assert r.status_code == status
    assert r.content == body
    assert "x-pymesh-flags" not in r.headers
    assert sum(u.count() for u in trio) == 0
    assert mesh.route("GET", "http://svc:8080/").action == "direct_response"


def test_direct_response_with_response_headers(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    rule = ("{directResponse: {status: 200, body: {string: '{\"ok\": true}'}}, "
            "headers: {response: {set: {content-type: application/json}, add: {x-served-by: mesh}}}}")
    mesh = make_mesh(base(trio, one_rule(rule)))
    r = connect(mesh).get("http://svc:8080/")
    assert r.json() == {"ok": True}
    assert r.headers.get_list("content-type") == ["application/json"]
    assert r.headers["x-served-by"] == "mesh"


# -- header operations -----------------------------------------------------------------------------------


def raw_service(server: RawEcho) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: raw, namespace: ns1}}
spec:
  hosts: [raw]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {server.port}}}, labels: {{version: v1}}}}]
"""


def raw_rule(headers: str, dest_headers: str = "") -> str:
    dest = "{destination: {host: raw}" + (f", headers: {dest_headers}" if dest_headers else "") + "}"
    return vs("raw", "ns1", f"  http:\n  - {{headers: {headers}, route: [{dest}]}}\n", hosts="[raw]")


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def test_request_header_operations_remove_then_set_then_add(
    raw_echo: Callable[[str], RawEcho], make_mesh: MakeMesh, connect: Connect
) -> None:
    server = raw_echo("raw")
    ops = ("{request: {remove: [x-remove, x-readd], set: {x-set: route, x-set-add: s}, "
           "add: {x-add: added, x-readd: fresh, x-set-add: a}}}")
    mesh = make_mesh(docs(raw_service(server), raw_rule(ops)))
    r = connect(mesh).get("http://raw:8080/", headers=[
        ("x-keep", "k"), ("x-remove", "gone"), ("x-set", "client"), ("x-set", "client2"),
        ("x-add", "client"), ("x-readd", "old"), ("x-set-add", "client"),
    ])
    seen = raw_headers(r)
    assert values(seen, "x-keep") == ["k"]
    assert values(seen, "x-remove") == []
    assert values(seen, "x-set") == ["route"]  # set replaces every value
    assert values(seen, "x-add") == ["client", "added"]  # add appends
    assert values(seen, "x-readd") == ["fresh"]  # removed first, then added
    assert values(seen, "x-set-add") == ["s", "a"]  # set, then add
    assert values(seen, "host") == ["raw:8080"]


def test_destination_header_operations_follow_the_routes(
    raw_echo: Callable[[str], RawEcho], make_mesh: MakeMesh, connect: Connect
) -> None:
    server = raw_echo("raw")
    route_ops = "{request: {set: {x-who: route, x-route: r}, add: {x-trail: route}}}"
    dest_ops = "{request: {set: {x-who: destination}, add: {x-trail: destination}, remove: [x-route]}}"
    mesh = make_mesh(docs(raw_service(server), raw_rule(route_ops, dest_ops)))
    seen = raw_headers(connect(mesh).get("http://raw:8080/"))
    assert values(seen, "x-who") == ["destination"]  # the destination's set wins
    assert values(seen, "x-trail") == ["route", "destination"]


def test_each_weighted_destination_applies_only_its_own_header_operations(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    rule = ("{headers: {request: {set: {x-route: all}}}, route: ["
            "{destination: {host: svc, subset: v1}, weight: 50, headers: {request: {set: {x-dest: one}}}},"
            "{destination: {host: svc, subset: v2}, weight: 50, headers: {request: {set: {x-dest: two}}}}]}")
    mesh = make_mesh(base(trio, one_rule(rule)))
    sender = connect(mesh)
    for r in sender.many(30, "http://svc:8080/"):
        seen = echo(r)
        assert seen["headers"]["x-route"] == "all"
        assert seen["headers"]["x-dest"] == {"svc-v1": "one", "svc-v2": "two"}[seen["name"]]
    assert trio[0].count() > 0
    assert trio[1].count() > 0


def test_response_header_operations(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    trio[0].respond(Reply(headers=(("x-up", "1"), ("x-drop", "1"), ("x-over", "up"), ("x-multi", "up"),
                                   ("x-dest-drop", "1"))))
    rule = ("{headers: {response: {remove: [x-drop], set: {x-over: route, x-route-only: r}, add: {x-multi: mesh}}}, "
            "route: [{destination: {host: svc, subset: v1}, "
            "headers: {response: {set: {x-over: destination}, add: {x-dest: d}, remove: [x-dest-drop]}}}]}")
    mesh = make_mesh(base(trio, one_rule(rule)))
    r = connect(mesh).get("http://svc:8080/")
    assert r.status_code == 200
    assert r.headers["x-up"] == "1"
    assert "x-drop" not in r.headers
    assert "x-dest-drop" not in r.headers
    assert r.headers.get_list("x-over") == ["destination"]
    assert r.headers["x-route-only"] == "r"
    assert r.headers.get_list("x-multi") == ["up", "mesh"]
    assert r.headers["x-dest"] == "d"


@pytest.mark.parametrize("op", ["set: {':authority': new.example}", "set: {host: new.example}",
                                "add: {host: new.example}"])
def test_authority_or_host_header_operation_rewrites_the_host(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, op: str
) -> None:
    mesh = make_mesh(base(trio, one_rule(f"{{headers: {{request: {{{op}}}}}, {V1}}}")))
    seen = echo(connect(mesh).get("http://svc:8080/p"))
    assert seen["headers"]["host"] == "new.example"
    assert seen["path"] == "/p"


def test_destination_authority_operation_rewrites_the_host(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    rule = "{route: [{destination: {host: svc, subset: v1}, headers: {request: {set: {':authority': d.example}}}}]}"
    mesh = make_mesh(base(trio, one_rule(rule)))
    assert echo(connect(mesh).get("http://svc:8080/"))["headers"]["host"] == "d.example"


# -- mirroring ---------------------------------------------------------------------------------------------


def mirror_rule(mirror: str = "mirror: {host: svc, subset: v2}") -> str:
    return one_rule("{" + V1 + ", " + mirror + "}")


def test_mirror_copies_requests_to_the_subset_and_the_caller_sees_only_the_primary(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(base(trio, mirror_rule()))
    sender = connect(mesh)
    n = 10
    for i in range(n):
        r = sender.send("POST", f"http://svc:8080/m/{i}?x=1", content=f"body-{i}".encode(),
                        headers={"x-custom": str(i)})
        assert served_by(r) == "svc-v1"
        assert echo(r)["body"] == f"body-{i}"
    assert sender.wait_for(lambda: trio[1].count() == n)
    copies = sorted(trio[1].received, key=lambda c: c.path)
    assert [(c.method, c.path, c.body, c.headers["x-custom"]) for c in copies] == sorted(
        ("POST", f"/m/{i}?x=1", f"body-{i}".encode(), str(i)) for i in range(n))
    assert trio[0].count() == n
    assert trio[2].count() == 0
    assert sender.wait_for(lambda: sender.transport.mirror.sent == n)
    assert sender.transport.mirror.dropped == 0


@pytest.mark.parametrize(("setting", "host"), [
    ("", "svc:8080"),
    ("  shadowHostSuffix: false", "svc:8080"),
    ("  shadowHostSuffix: true", "svc-shadow:8080"),
])
def test_mirror_host_header(trio: Trio, make_mesh: MakeMesh, connect: Connect, setting: str, host: str) -> None:
    mesh = make_mesh(base(trio, mirror_rule(), mesh_config(setting) if setting else ""))
    sender = connect(mesh)
    r = sender.get("http://svc:8080/h")
    assert echo(r)["headers"]["host"] == "svc:8080"  # the primary keeps the caller's host
    assert sender.wait_for(lambda: trio[1].count() == 1)
    assert trio[1].received[0].headers["host"] == host


def test_mirrors_list_sends_to_every_mirror(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, mirror_rule(
        "mirrors: [{destination: {host: svc, subset: v2}}, {destination: {host: svc, subset: v3}, "
        "percentage: {value: 100}}]")))
    sender = connect(mesh)
    for r in sender.many(5, "http://svc:8080/"):
        assert served_by(r) == "svc-v1"
    assert sender.wait_for(lambda: trio[1].count() == 5 and trio[2].count() == 5)


def _settle(sender: Sender, counter: Callable[[], int], quiet: float = 0.3) -> int:
    """Wait (bounded) until ``counter`` stops moving and every received mirror has finished."""
    last = -1
    for _ in range(int(WAIT / quiet)):
        sender.pump(quiet)
        now = counter()
        if now == last and sender.transport.mirror.sent == now:
            break
        last = now
    return counter()


def test_mirror_percentage_zero_mirrors_nothing(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, mirror_rule("mirror: {host: svc, subset: v2}, mirrorPercentage: {value: 0}")))
    sender = connect(mesh)
    assert {served_by(r) for r in sender.many(50, "http://svc:8080/")} == {"svc-v1"}
    sender.pump(0.2)
    assert trio[1].count() == 0
    assert (sender.transport.mirror.sent, sender.transport.mirror.dropped) == (0, 0)


def test_mirror_percentage_fifty_mirrors_about_half(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, mirror_rule("mirror: {host: svc, subset: v2}, mirrorPercentage: {value: 50}")))
    sender = connect(mesh)
    n = 200
    assert Counter(served_by(r) for r in sender.many(n, "http://svc:8080/")) == {"svc-v1": n}
    mirrored = _settle(sender, trio[1].count)
    low, high = binomial_bounds(n, 0.5)
    assert low <= mirrored <= high
    assert sender.transport.mirror.dropped == 0


def _gate(up: Upstream, seconds: float = 2.0) -> threading.Event:
    """Make ``up`` answer after ``seconds`` (2 s), or as soon as the returned event is set."""
    gate = threading.Event()

    def slow(_: Received) -> Reply:
        gate.wait(seconds)
        return Reply(body=b"late")

    up.respond(slow)
    return gate


def test_slow_mirror_does_not_delay_the_caller(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    gate = _gate(trio[1])
    mesh = make_mesh(base(trio, mirror_rule()))
    sender = connect(mesh)
    try:
        answers = [served_by(r) for r in sender.many(20, "http://svc:8080/")]
        finished = sender.transport.mirror.sent
        assert answers == ["svc-v1"] * 20
        # all 20 answers are in while no mirrored request has finished
        assert finished == 0
        assert sender.wait_for(lambda: trio[1].count() >= 1)  # the mirror is busy, not idle
    finally:
        gate.set()
    assert sender.wait_for(lambda: sender.transport.mirror.sent == 20)
    assert trio[1].count() == 20


def test_a_mirror_flood_is_dropped_not_queued(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    gate = _gate(trio[1])
    mesh = make_mesh(base(trio, mirror_rule()))
    sender = connect(mesh, mirror_capacity=2)
    try:
        assert {served_by(r) for r in sender.many(20, "http://svc:8080/")} == {"svc-v1"}
        dropped = sender.transport.mirror.dropped
        assert dropped > 0
        assert dropped <= 20 - 2
    finally:
        gate.set()
    assert sender.wait_for(lambda: sender.transport.mirror.sent == 20 - dropped)
    assert trio[1].count() == 20 - dropped
    # A dropped mirror gives back what its try held: no ticket or active count stays taken.
    for state in mesh._runtime._entries.values():
        assert state.limits.active == 0, state.cluster.key
        assert not any(state.balancer._active), (state.cluster.key, state.balancer._active)


def test_a_failing_mirror_does_not_affect_the_caller(
    trio: Trio, servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    gone = servers("gone")
    dead = service_yaml("dead", "ns1", [gone])
    gone.stop()
    mesh = make_mesh(base(trio, dead, mirror_rule("mirror: {host: dead}")))
    sender = connect(mesh)
    assert {served_by(r) for r in sender.many(5, "http://svc:8080/")} == {"svc-v1"}
    sender.pump(0.1)
    assert sender.transport.mirror.sent == 0
