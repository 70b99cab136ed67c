"""End to end, outbound routing: host resolution, route matching, destinations and weights,
failures and ``mesh.route()``, through real loopback upstreams, for the sync and the async client.

The shared upstreams ``svc-v1``/``svc-v2``/``svc-v3`` (fixture ``trio``) serve ``svc`` in
namespace ``ns1`` with subsets ``v1``..``v3``; the caller runs in ``ns1`` unless a test says
otherwise. A routing test sends a request and asserts which upstream answered and what it
received (path, headers, Host), and what the caller saw.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.errors import NoHealthyUpstreamError, RouteNotFoundError, UpstreamConnectError
from pymesh.testing.upstream import Reply, Upstream, service_yaml
from tests.outbound.conftest import (
    Connect,
    MakeMesh,
    StartUpstream,
    binomial_bounds,
    docs,
    echo,
    mesh_config,
    served_by,
    subsets_dr,
    vs,
)

Trio = tuple[Upstream, Upstream, Upstream]
FQDN = "svc.ns1.svc.cluster.local"


def base(trio: Trio, *extra: str) -> str:
    """``svc`` in ns1 on the three upstreams, a DestinationRule with subsets v1..v3, and ``extra``."""
    return docs(service_yaml("svc", "ns1", trio), subsets_dr("svc", "ns1", "v1", "v2", "v3"), *extra)


def to(subset: str, host: str = "svc", **extra: str) -> str:
    """One http route (flow YAML) to ``host``/``subset``; ``extra`` keys go beside ``route``."""
    parts = [f"{k}: {v}" for k, v in extra.items()]
    dest = f"{{host: {host}, subset: {subset}}}" if subset else f"{{host: {host}}}"
    parts.append(f"route: [{{destination: {dest}}}]")
    return "{" + ", ".join(parts) + "}"


def routes(*rules: str, name: str = "svc-routes", namespace: str = "ns1", hosts: str = "[svc]",
           top: str = "", extra_meta: str = "") -> str:
    """A VirtualService with the given http rules (flow YAML, one per list item)."""
    body = top + "  http:\n" + "".join(f"  - {r}\n" for r in rules)
    return vs(name, namespace, body, hosts=hosts, extra_meta=extra_meta)


def url(path: str) -> str:
    return path if path.startswith("http") else f"http://svc:8080{path}"


# -- host resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "svc:8080", "svc", "svc.ns1:8080", "svc.ns1", f"{FQDN}:8080", FQDN, "SVC.ns1:8080",
])
def test_host_forms_reach_the_service_and_keep_the_callers_host(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, address: str
) -> None:
    mesh = make_mesh(base(trio, routes(to("v2"))))
    r = connect(mesh).get(f"http://{address}/p?q=1", headers={"x-test": "yes"})
    assert served_by(r) == "svc-v2"
    seen = echo(r)
    assert seen["path"] == "/p?q=1"
    assert seen["headers"]["host"] == address.lower()  # the original Host (httpx lower-cases it)
    assert seen["headers"]["x-test"] == "yes"
    assert "x-pymesh-flags" not in r.headers
    assert trio[1].count() == 1
    assert trio[0].count() == trio[2].count() == 0


def test_short_name_resolves_in_the_callers_namespace_only(trio: Trio, make_mesh: MakeMesh) -> None:
    config = base(trio, routes(to("v2")))
    here = make_mesh(config, namespace="ns1")
    assert here.route("GET", "http://svc:8080/").destination == (FQDN, "v2", 8080)
    elsewhere = make_mesh(config, namespace="ns2")
    assert elsewhere.route("GET", "http://svc:8080/").action == "passthrough"  # svc.ns2... is unknown
    assert elsewhere.route("GET", f"http://{FQDN}:8080/").destination == (FQDN, "v2", 8080)
    assert elsewhere.route("GET", "http://svc.ns1:8080/").destination == (FQDN, "v2", 8080)


def test_caller_in_another_namespace_reaches_the_service_by_its_longer_names(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(base(trio, routes(to("v3"))), namespace="ns2")
    sender = connect(mesh)
    for address in ("svc.ns1:8080", f"{FQDN}:8080", "svc.ns1.svc:8080"):
        r = sender.get(f"http://{address}/")
        assert served_by(r) == "svc-v3"
        assert echo(r)["headers"]["host"] == address


def _wildcard_entry(up: Upstream) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: wild, namespace: ns1}}
spec:
  hosts: ["*.example.test"]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {up.port}}}}}]
"""


def test_wildcard_service_entry_host(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    ext = servers("external")
    mesh = make_mesh(docs(_wildcard_entry(ext), mesh_config("  outboundTrafficPolicy: {mode: REGISTRY_ONLY}")))
    sender = connect(mesh)
    for host in ("api.example.test:8080", "a.b.example.test:8080", "api.example.test"):
        r = sender.get(f"http://{host}/w")
        assert served_by(r) == "external"
        assert echo(r)["headers"]["host"] == host
        assert echo(r)["path"] == "/w"
    # the wildcard does not cover the bare domain: under REGISTRY_ONLY that is outside the registry
    r = sender.get("http://example.test:8080/w")
    assert r.status_code == 502
    assert r.headers["x-pymesh-flags"] == "NR"
    assert ext.count() == 3


def test_wildcard_virtual_service_routes_matching_hosts(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ext, alt = servers("external"), servers("alt")
    alt_entry = service_yaml("alt", "ns1", [alt])
    wild_vs = routes("{match: [{headers: {x-alt: {exact: '1'}}}], route: [{destination: {host: alt}}]}",
                     "{route: [{destination: {host: api.example.test}}]}", name="wild", hosts='["*.example.test"]')
    mesh = make_mesh(docs(_wildcard_entry(ext), alt_entry, wild_vs))
    sender = connect(mesh)
    assert served_by(sender.get("http://api.example.test:8080/")) == "external"
    r = sender.get("http://other.example.test:8080/", headers={"x-alt": "1"})
    assert served_by(r) == "alt"
    assert echo(r)["headers"]["host"] == "other.example.test:8080"
    assert mesh.route("GET", "http://x.example.test:8080/").virtual_service == "ns1/wild"


def test_unknown_host_passes_through_under_allow_any(
    trio: Trio, servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    outside = servers("outside")
    mesh = make_mesh(base(trio, routes(to("v1"))))
    r = connect(mesh).get(f"http://127.0.0.1:{outside.port}/out?x=1", headers={"x-mine": "kept"})
    assert served_by(r) == "outside"
    seen = echo(r)
    assert seen["path"] == "/out?x=1"
    assert seen["headers"]["host"] == f"127.0.0.1:{outside.port}"
    assert seen["headers"]["x-mine"] == "kept"
    assert "x-pymesh-flags" not in r.headers
    assert sum(u.count() for u in trio) == 0
    assert mesh.route("GET", f"http://127.0.0.1:{outside.port}/").action == "passthrough"


@pytest.mark.parametrize("api", ["pymesh/v1 MeshConfig", "istio ConfigMap"])
def test_unknown_host_is_502_nr_under_registry_only(
    trio: Trio, servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, api: str
) -> None:
    outside = servers("outside")
    if api == "pymesh/v1 MeshConfig":
        setting = mesh_config("  outboundTrafficPolicy: {mode: REGISTRY_ONLY}")
    else:
        setting = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                   "data:\n  mesh: |\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n")
    mesh = make_mesh(base(trio, routes(to("v1")), setting))
    sender = connect(mesh)
    r = sender.get(f"http://127.0.0.1:{outside.port}/out")
    assert r.status_code == 502
    assert r.headers["x-pymesh-flags"] == "NR"
    assert outside.count() == 0
    # the registry's own services still work
    assert served_by(sender.get("http://svc:8080/")) == "svc-v1"


# -- matching ---------------------------------------------------------------------------------------

Probe = tuple[str, str, Any, bool]  # method, url or path, headers, expected to hit the first rule


def P(path: str, hit: bool, headers: Any = None, method: str = "GET") -> Probe:
    return (method, path, headers, hit)


MATCHES: list[Any] = [
    pytest.param("[{uri: {exact: /exact}}]", [
        P("/exact", True), P("/exact?q=1", True), P("/exact/", False), P("/exactly", False), P("/EXACT", False),
    ], id="uri-exact-ignores-query"),
    pytest.param("[{uri: {prefix: /customer}}]", [
        P("/customer", True), P("/customerX", True), P("/customer/a?b=c", True), P("/custom", False),
        P("/Customer", False), P("/x/customer", False),
    ], id="uri-prefix-not-segment-aware"),
    pytest.param("[{uri: {prefix: '/search?q='}}]", [
        P("/search?q=1", True), P("/search?q=", True), P("/search", False), P("/search?r=1", False),
    ], id="uri-prefix-sees-query"),
    pytest.param(r"[{uri: {regex: '/items/\d+'}}]", [
        P("/items/42", True), P("/items/42?x=y", True), P("/items/abc", False), P("/items/42/x", False),
        P("/x/items/42", False),
    ], id="uri-regex-full-match-without-query"),
    pytest.param("[{uri: {exact: /Upper}, ignoreUriCase: true}]", [
        P("/upper", True), P("/UPPER?x=1", True), P("/Upper", True), P("/upperx", False),
    ], id="ignore-uri-case-exact"),
    pytest.param("[{uri: {prefix: /API}, ignoreUriCase: true}]", [
        P("/api/x", True), P("/Api", True), P("/APIs", True), P("/ap", False),
    ], id="ignore-uri-case-prefix"),
    pytest.param("[{uri: {regex: /abc}, ignoreUriCase: true}]", [
        P("/abc", True), P("/ABC", False),
    ], id="ignore-uri-case-not-for-regex"),
    pytest.param("[{scheme: {exact: http}}]", [P("/", True)], id="scheme-http"),
    pytest.param("[{scheme: {exact: https}}]", [P("/", False)], id="scheme-https"),
    pytest.param("[{method: {exact: POST}}]", [
        P("/", True, method="POST"), P("/", False), P("/", False, method="PUT"),
    ], id="method-exact"),
    pytest.param("[{method: {regex: 'PUT|DELETE'}}]", [
        P("/", True, method="PUT"), P("/", True, method="DELETE"), P("/", False, method="POST"),
    ], id="method-regex"),
    pytest.param("[{authority: {exact: 'svc:8080'}}]", [
        P("http://svc:8080/", True), P("http://svc.ns1:8080/", False), P("http://svc/", False),
    ], id="authority-exact"),
    pytest.param("[{authority: {prefix: svc.ns1}}]", [
        P("http://svc.ns1:8080/", True), P(f"http://{FQDN}/", True), P("http://svc:8080/", False),
    ], id="authority-prefix"),
    pytest.param(r"[{authority: {regex: 'svc(\.ns1)?(:8080)?'}}]", [
        P("http://svc/", True), P("http://svc.ns1:8080/", True), P(f"http://{FQDN}:8080/", False),
    ], id="authority-regex"),
    pytest.param("[{headers: {x-h: {exact: a}}}]", [
        P("/", True, {"x-h": "a"}), P("/", True, {"X-H": "a"}), P("/", False, {"x-h": "A"}),
        P("/", False, {"x-h": "ab"}), P("/", False),
    ], id="header-exact"),
    pytest.param("[{headers: {x-h: {exact: ''}}}]", [
        P("/", True, {"x-h": ""}), P("/", False, {"x-h": "a"}), P("/", False),
    ], id="header-exact-empty"),
    pytest.param("[{headers: {x-h: {prefix: ab}}}]", [
        P("/", True, {"x-h": "abc"}), P("/", True, {"x-h": "ab"}), P("/", False, {"x-h": "xab"}), P("/", False),
    ], id="header-prefix"),
    pytest.param("[{headers: {x-h: {regex: 'a.c'}}}]", [
        P("/", True, {"x-h": "abc"}), P("/", False, {"x-h": "xabcx"}), P("/", False, {"x-h": "abcd"}),
        P("/", False),
    ], id="header-regex-full-match"),
    pytest.param("[{headers: {x-h: {}}}]", [
        P("/", True, {"x-h": "anything"}), P("/", True, {"x-h": ""}), P("/", False),
    ], id="header-presence"),
    pytest.param("[{headers: {x-h: {exact: 'a,b'}}}]", [
        P("/", True, [("x-h", "a"), ("x-h", "b")]), P("/", False, {"x-h": "a"}),
    ], id="header-repeated-joined-with-comma"),
    pytest.param("[{withoutHeaders: {x-h: {exact: '1'}}}]", [
        P("/", True), P("/", True, {"x-h": "2"}), P("/", False, {"x-h": "1"}),
    ], id="without-headers-exact"),
    pytest.param("[{withoutHeaders: {x-h: {prefix: a}}}]", [
        P("/", True), P("/", True, {"x-h": "ba"}), P("/", False, {"x-h": "abc"}),
    ], id="without-headers-missing-is-empty-prefix"),
    pytest.param("[{withoutHeaders: {x-h: {exact: ''}}}]", [
        P("/", False), P("/", False, {"x-h": ""}), P("/", True, {"x-h": "x"}),
    ], id="without-headers-missing-is-empty-exact"),
    pytest.param("[{withoutHeaders: {x-h: {}}}]", [
        P("/", True), P("/", False, {"x-h": "x"}), P("/", False, {"x-h": ""}),
    ], id="without-headers-presence"),
    pytest.param("[{queryParams: {debug: {}}}]", [
        P("/?debug", True), P("/?debug=1", True), P("/?a=1&debug=", True), P("/?other=1", False), P("/", False),
    ], id="query-presence"),
    pytest.param("[{queryParams: {k: {exact: ''}}}]", [
        P("/?k", True), P("/?k=", True), P("/?k=1", False), P("/", False),
    ], id="query-exact-empty"),
    pytest.param("[{queryParams: {k: {exact: v}}}]", [
        P("/?k=v", True), P("/?a=b&k=v", True), P("/?k=vv", False), P("/?k=V", False), P("/?K=v", False),
    ], id="query-exact"),
    pytest.param(r"[{queryParams: {id: {regex: '\d+'}}}]", [
        P("/?id=123", True), P("/?id=a123", False), P("/?id=123a", False), P("/?id=1&id=x", True),
        P("/?id=x&id=1", False),
    ], id="query-regex-full-match-first-occurrence"),
    pytest.param("[{port: 8080}]", [
        P("http://svc:8080/", True), P("http://svc/", False), P("http://svc:9999/", False),
    ], id="port"),
    pytest.param("[{uri: {prefix: /and}, headers: {x-h: {exact: '1'}}, method: {exact: GET}}]", [
        P("/and", True, {"x-h": "1"}), P("/and", False), P("/x", False, {"x-h": "1"}),
        P("/and", False, {"x-h": "1"}, method="POST"),
    ], id="and-within-a-block"),
    pytest.param("[{uri: {prefix: /a}}, {headers: {x-h: {exact: '1'}}}, {queryParams: {q: {exact: '1'}}}]", [
        P("/a", True), P("/b", True, {"x-h": "1"}), P("/b?q=1", True), P("/b", False), P("/b?q=2", False),
    ], id="or-across-blocks"),
]


@pytest.mark.parametrize(("match", "probes"), MATCHES)
def test_http_match_request_fields(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, match: str, probes: list[Probe]
) -> None:
    mesh = make_mesh(base(trio, routes(to("v2", match=match), to("v1"))))
    sender = connect(mesh)
    for method, path, headers, hit in probes:
        r = sender.send(method, url(path), headers=headers)
        expected = "svc-v2" if hit else "svc-v1"
        assert served_by(r) == expected, (method, path, headers)
        seen = echo(r)
        assert seen["method"] == method
        assert seen["path"] == httpx.URL(url(path)).raw_path.decode()
    assert trio[1].count() == sum(1 for p in probes if p[3])


def test_first_matching_rule_wins(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, routes(
        to("v1", match="[{uri: {prefix: /a}}]"),
        to("v2", match="[{uri: {prefix: /a/b}}]"),  # never reached: /a/b also has the prefix /a
        to("v3", match="[{headers: {x-h: {exact: '1'}}}]"),
        to("v2"),
    )))
    sender = connect(mesh)
    assert served_by(sender.get(url("/a/b"))) == "svc-v1"
    assert served_by(sender.get(url("/a/b"), headers={"x-h": "1"})) == "svc-v1"
    assert served_by(sender.get(url("/b"), headers={"x-h": "1"})) == "svc-v3"
    assert served_by(sender.get(url("/b"))) == "svc-v2"


def test_https_scheme_match_in_a_dry_run(trio: Trio, make_mesh: MakeMesh) -> None:
    mesh = make_mesh(base(trio, routes(to("v2", match="[{scheme: {exact: https}}]"), to("v1"))))
    assert mesh.route("GET", "https://svc:8080/").subset == "v2"
    assert mesh.route("GET", "http://svc:8080/").subset == "v1"


@pytest.mark.parametrize(("labels", "expected"), [
    ({"app": "frontend", "version": "v1"}, "svc-v2"),
    ({"app": "frontend", "version": "v1", "extra": "x"}, "svc-v2"),  # sourceLabels is a subset test
    ({"app": "frontend"}, "svc-v1"),
    ({"app": "backend", "version": "v1"}, "svc-v1"),
])
def test_source_labels_against_the_mesh_workload(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, labels: dict[str, str], expected: str
) -> None:
    config = base(trio, routes(to("v2", match="[{sourceLabels: {app: frontend, version: v1}}]"), to("v1")))
    mesh = make_mesh(config, labels=labels)
    assert served_by(connect(mesh).get(url("/"))) == expected


@pytest.mark.parametrize(("namespace", "expected"), [("ns1", "svc-v2"), ("ns2", "svc-v1")])
def test_source_namespace_against_the_mesh_workload(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, namespace: str, expected: str
) -> None:
    config = base(trio, routes(to("v2", match="[{sourceNamespace: ns1}]"), to("v1")))
    mesh = make_mesh(config, namespace=namespace)
    assert served_by(connect(mesh).get(f"http://{FQDN}:8080/")) == expected


def test_source_labels_and_namespace_must_both_hold(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    config = base(trio, routes(to("v2", match="[{sourceLabels: {app: frontend}, sourceNamespace: ns1}]"), to("v1")))
    for namespace, labels, expected in [
        ("ns1", {"app": "frontend"}, "svc-v2"),
        ("ns2", {"app": "frontend"}, "svc-v1"),
        ("ns1", {"app": "other"}, "svc-v1"),
    ]:
        mesh = make_mesh(config, namespace=namespace, labels=labels)
        assert served_by(connect(mesh).get(f"http://{FQDN}:8080/")) == expected, (namespace, labels)


def test_virtual_service_bound_only_to_a_gateway_does_not_apply_to_the_mesh(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    gw_only = routes("{directResponse: {status: 418}}", name="edge", top="  gateways: [ingress]\n")
    mesh = make_mesh(base(trio, gw_only))
    sender = connect(mesh)
    seen = Counter(served_by(sender.get(url("/"))) for _ in range(12))
    assert set(seen) <= {"svc-v1", "svc-v2", "svc-v3"}  # the service's default route, not the 418
    assert mesh.route("GET", url("/")).virtual_service is None


def test_gateway_list_with_mesh_applies_and_per_match_gateways_override(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    config = base(trio, routes(
        to("v3", match="[{uri: {prefix: /edge}, gateways: [ingress]}]"),  # for the gateway only
        to("v2", match="[{uri: {prefix: /edge}, gateways: [mesh]}]"),
        to("v1"),
        top="  gateways: [ingress, mesh]\n",
    ))
    mesh = make_mesh(config)
    sender = connect(mesh)
    assert served_by(sender.get(url("/edge"))) == "svc-v2"
    assert served_by(sender.get(url("/other"))) == "svc-v1"


@pytest.mark.parametrize("source", ["sourceLabels: {app: someone-else}", "sourceNamespace: elsewhere"])
def test_match_naming_gateways_ignores_source_selectors(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, source: str
) -> None:
    # Istio's sourceMatchHTTP: a block that names gateways is decided by them alone
    config = base(trio, routes(to("v2", match=f"[{{gateways: [mesh], {source}}}]"), to("v1")))
    mesh = make_mesh(config, labels={"app": "caller"})
    assert served_by(connect(mesh).get(url("/"))) == "svc-v2"


def test_route_and_match_names(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, routes(
        to("v2", name="canary",
           match="[{name: by-header, headers: {x-canary: {exact: '1'}}}, {name: by-uri, uri: {prefix: /canary}}]"),
        to("v1", name="stable"),
    )))
    d = mesh.route("GET", url("/"), headers={"x-canary": "1"})
    assert (d.route_name, d.match_name, d.route_index, d.subset) == ("canary", "by-header", 0, "v2")
    d = mesh.route("GET", url("/canary/x"))
    assert (d.route_name, d.match_name, d.subset) == ("canary", "by-uri", "v2")
    d = mesh.route("GET", url("/"))
    assert (d.route_name, d.match_name, d.route_index, d.subset) == ("stable", "", 1, "v1")
    # and the live request takes the same route
    assert served_by(connect(mesh).get(url("/canary/x"))) == "svc-v2"


def test_virtual_service_host_with_no_matching_route_is_404_nr(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(base(trio, routes(to("v1", match="[{uri: {prefix: /only}}]"))))
    sender = connect(mesh)
    r = sender.get(url("/other"))
    assert r.status_code == 404
    assert r.headers["x-pymesh-flags"] == "NR"
    assert served_by(sender.get(url("/only/x"))) == "svc-v1"
    assert trio[0].count() == 1  # the 404 reached no upstream


def test_known_service_without_virtual_service_routes_to_it(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(base(trio))
    sender = connect(mesh)
    seen = Counter(served_by(sender.get(url(f"/n/{i}"))) for i in range(30))
    assert set(seen) <= {"svc-v1", "svc-v2", "svc-v3"}
    assert len(seen) >= 2  # load balanced over the service's endpoints
    d = mesh.route("GET", url("/"))
    assert d.virtual_service is None
    assert d.destination == (FQDN, "", 8080)
    assert len(d.endpoints) == 3


def test_virtual_service_in_another_namespace_naming_the_fqdn_applies(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    other = routes(to("v3", host=FQDN), name="from-elsewhere", namespace="team-b", hosts=f"[{FQDN}]")
    mesh = make_mesh(base(trio, other))
    r = connect(mesh).get(url("/"))
    assert served_by(r) == "svc-v3"
    assert echo(r)["headers"]["host"] == "svc:8080"
    assert mesh.route("GET", url("/")).virtual_service == "team-b/from-elsewhere"


def test_oldest_virtual_service_wins_a_duplicated_host(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    newer = routes(to("v3"), name="aaa-newer", extra_meta="creationTimestamp: '2024-06-01T00:00:00Z'")
    older = routes(to("v2"), name="zzz-older", extra_meta="creationTimestamp: '2024-01-01T00:00:00Z'")
    mesh = make_mesh(base(trio, newer, older))
    assert served_by(connect(mesh).get(url("/"))) == "svc-v2"
    assert mesh.route("GET", url("/")).virtual_service == "ns1/zzz-older"


def test_duplicated_host_without_timestamps_falls_back_to_name_order(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(base(trio, routes(to("v3"), name="b-second"), routes(to("v2"), name="a-first")))
    assert served_by(connect(mesh).get(url("/"))) == "svc-v2"


def test_delegate_virtual_service_routes_are_merged_into_the_root(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    root = routes(
        "{name: root, match: [{uri: {prefix: /d}}], delegate: {name: svc-delegate, namespace: ns1}}",
        to("v1", name="rest"),
    )
    delegate = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                "metadata: {name: svc-delegate, namespace: ns1}\nspec:\n  http:\n"
                f"  - {to('v2', name='a', match='[{uri: {prefix: /d/a}}]')}\n"
                f"  - {to('v3', name='b', match='[{uri: {prefix: /d/b}}, {headers: {x-h: {exact: one}}}]')}\n")
    mesh = make_mesh(base(trio, root, delegate))
    sender = connect(mesh)
    assert served_by(sender.get(url("/d/a/1"))) == "svc-v2"
    assert served_by(sender.get(url("/d/b"))) == "svc-v3"
    assert served_by(sender.get(url("/d/c"), headers={"x-h": "one"})) == "svc-v3"  # root prefix AND delegate header
    assert served_by(sender.get(url("/e"), headers={"x-h": "one"})) == "svc-v1"  # the root's /d must hold too
    assert served_by(sender.get(url("/d/c"))) == "svc-v1"  # no delegate route: on to the next root route
    d = mesh.route("GET", url("/d/a"))
    assert d.route_name == "root-a"
    assert d.subset == "v2"


def test_subset_not_defined_is_503_nc(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, routes(to("v9"))))
    r = connect(mesh).get(url("/"))
    assert r.status_code == 503
    assert r.headers["x-pymesh-flags"] == "NC"
    assert sum(u.count() for u in trio) == 0


def test_subset_without_endpoints_is_503_uh(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    config = docs(service_yaml("svc", "ns1", trio), subsets_dr("svc", "ns1", "v1", "v4"), routes(to("v4")))
    mesh = make_mesh(config)
    r = connect(mesh).get(url("/"))
    assert r.status_code == 503
    assert r.headers["x-pymesh-flags"] == "UH"
    assert r.text == "no healthy upstream"
    assert sum(u.count() for u in trio) == 0


def _two_port_service(main: Upstream, admin: Upstream) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: multi, namespace: ns1}}
spec:
  hosts: [multi]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}, {{number: 9090, name: admin, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: multi}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: multi-1, namespace: ns1}}
spec:
  address: 127.0.0.1
  ports: {{http: {main.port}, admin: {admin.port}}}
  labels: {{app: multi}}
"""


def test_destination_port(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    main, admin = servers("multi-main"), servers("multi-admin")
    mesh = make_mesh(docs(_two_port_service(main, admin), routes(
        "{match: [{uri: {prefix: /admin}}], route: [{destination: {host: multi, port: {number: 9090}}}]}",
        "{route: [{destination: {host: multi}}]}",
        name="multi", hosts="[multi]",
    )))
    sender = connect(mesh)
    r = sender.get("http://multi:8080/admin/x")
    assert served_by(r) == "multi-admin"
    assert echo(r)["headers"]["host"] == "multi:8080"
    assert served_by(sender.get("http://multi:8080/x")) == "multi-main"
    assert served_by(sender.get("http://multi:9090/x")) == "multi-admin"  # no port in the route: the request's
    d = mesh.route("GET", "http://multi:8080/admin")
    assert d.port == 9090
    assert d.cluster == "outbound|9090||multi.ns1.svc.cluster.local"


# -- weights ----------------------------------------------------------------------------------------

N = 400


@pytest.mark.parametrize("weights", [
    pytest.param((90, 10), id="90-10"),
    pytest.param((75, 25), id="75-25"),
    pytest.param((50, 50), id="50-50"),
    pytest.param((3, 1), id="relative-3-1"),
    pytest.param((50, 0, 50), id="zero-weight-never-chosen"),
])
def test_weighted_split(trio: Trio, make_mesh: MakeMesh, connect: Connect, weights: tuple[int, ...]) -> None:
    dests = ", ".join(f"{{destination: {{host: svc, subset: v{i + 1}}}, weight: {w}}}" for i, w in enumerate(weights))
    mesh = make_mesh(base(trio, routes(f"{{route: [{dests}]}}")))
    sender = connect(mesh)
    seen = Counter(served_by(r) for r in sender.many(N, url("/w")))
    total = sum(weights)
    for i, w in enumerate(weights):
        name = f"svc-v{i + 1}"
        if w == 0:
            assert seen[name] == 0
            assert trio[i].count() == 0
            continue
        low, high = binomial_bounds(N, w / total)
        assert low <= seen[name] <= high, (name, seen)
    assert sum(seen.values()) == N
    shares = {t[1]: t[3] for t in mesh.route("GET", url("/")).targets}
    assert shares == {f"v{i + 1}": pytest.approx(100 * w / total) for i, w in enumerate(weights) if w}


@pytest.mark.parametrize("weight", [10, 0])
def test_single_destination_ignores_its_weight(
    trio: Trio, make_mesh: MakeMesh, connect: Connect, weight: int
) -> None:
    mesh = make_mesh(base(trio, routes(f"{{route: [{{destination: {{host: svc, subset: v3}}, weight: {weight}}}]}}")))
    assert {served_by(r) for r in connect(mesh).many(20, url("/"))} == {"svc-v3"}


# -- failures ---------------------------------------------------------------------------------------


def _stopped_service(servers: StartUpstream) -> str:
    gone = servers("gone")
    text = service_yaml("gone", "ns1", [gone])
    gone.stop()
    return text


def test_connect_failure_is_503_uf(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(_stopped_service(servers))
    r = connect(mesh).get("http://gone:8080/")
    assert r.status_code == 503
    assert "UF" in r.headers["x-pymesh-flags"].split(",")  # "UF,URX" once the default retries are used up
    assert r.text.startswith("upstream connect error")


def test_connect_failure_raises_a_mesh_error_that_is_an_httpx_connect_error(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(_stopped_service(servers))
    with pytest.raises(pymesh.MeshError) as info:
        connect(mesh, raise_errors=True).get("http://gone:8080/")
    err = info.value
    assert isinstance(err, httpx.ConnectError)
    assert isinstance(err, UpstreamConnectError)
    assert err.status == 503
    assert "UF" in err.flags.split(",")
    assert err.request.url == httpx.URL("http://gone:8080/")


def test_no_route_raises_no_route_error(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    mesh = make_mesh(base(trio, routes(to("v1", match="[{uri: {prefix: /only}}]"))))
    with pytest.raises(pymesh.NoRouteError) as info:
        connect(mesh, raise_errors=True).get(url("/other"))
    assert isinstance(info.value, RouteNotFoundError)
    assert isinstance(info.value, httpx.RequestError)
    assert (info.value.status, info.value.flags) == (404, "NR")


def test_registry_only_raises_no_route_error(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    outside = servers("outside")
    mesh = make_mesh(mesh_config("  outboundTrafficPolicy: {mode: REGISTRY_ONLY}"))
    with pytest.raises(pymesh.NoRouteError) as info:
        connect(mesh, raise_errors=True).get(outside.url)
    err = info.value
    assert isinstance(err, RouteNotFoundError)
    assert isinstance(err, pymesh.MeshError)
    assert (err.status, err.flags) == (502, "NR")
    assert outside.count() == 0


def test_no_healthy_upstream_raises_a_connect_error(trio: Trio, make_mesh: MakeMesh, connect: Connect) -> None:
    config = docs(service_yaml("svc", "ns1", trio), subsets_dr("svc", "ns1", "v4"), routes(to("v4")))
    mesh = make_mesh(config)
    with pytest.raises(httpx.ConnectError) as info:
        connect(mesh, raise_errors=True).get(url("/"))
    assert isinstance(info.value, NoHealthyUpstreamError)
    assert isinstance(info.value, pymesh.MeshError)
    assert info.value.flags == "UH"


def test_raise_errors_leaves_an_upstreams_own_error_alone(
    trio: Trio, make_mesh: MakeMesh, connect: Connect
) -> None:
    trio[0].respond(Reply(503, body=b"busy"))
    mesh = make_mesh(base(trio, routes(to("v1"))))
    r = connect(mesh, raise_errors=True).get(url("/"))
    assert (r.status_code, r.text) == (503, "busy")
    assert "x-pymesh-flags" not in r.headers


# -- mesh.route() -------------------------------------------------------------------------------------


def test_route_decision_describes_the_route(trio: Trio, make_mesh: MakeMesh) -> None:
    rule = to("v2", name="main", match="[{name: m, uri: {prefix: /api}}]", timeout="3s",
              retries="{attempts: 2, perTryTimeout: 1s}", fault="{abort: {httpStatus: 418, percentage: {value: 5}}}",
              mirror="{host: svc, subset: v3}", mirrorPercentage="{value: 25}")
    mesh = make_mesh(base(trio, routes(rule, to("v1"))))
    d = mesh.route("GET", url("/api/x?y=1"), headers={"x-any": "1"})
    assert isinstance(d, pymesh.RouteDecision)
    assert d.action == "route"
    assert d.host == FQDN
    assert d.virtual_service == "ns1/svc-routes"
    assert (d.route_name, d.match_name, d.route_index) == ("main", "m", 0)
    assert d.destination == (FQDN, "v2", 8080)
    assert (d.destination_host, d.subset, d.port) == (FQDN, "v2", 8080)
    assert d.cluster == f"outbound|8080|v2|{FQDN}"
    assert d.path == "/api/x?y=1"
    assert [(e.address, dict(e.ports), e.labels["version"]) for e in d.endpoints] == [
        ("127.0.0.1", {"http": trio[1].port}, "v2")]
    assert d.timeout == 3.0
    assert d.retries.attempts == 2
    assert d.retries.per_try_timeout == 1.0
    assert d.fault.abort.http_status == 418
    assert [(m.host, m.subset, m.percentage) for m in d.mirrors] == [(FQDN, "v3", 25.0)]
    assert d.targets == ((FQDN, "v2", None, 100.0),)
    text = "\n".join(d.lines())
    assert "ns1/svc-routes" in text
    assert f"outbound|8080|v2|{FQDN}" in text
    assert sum(u.count() for u in trio) == 0  # a dry run does no I/O


def test_route_decision_for_the_fallback_rule(trio: Trio, make_mesh: MakeMesh) -> None:
    mesh = make_mesh(base(trio, routes(to("v2", match="[{uri: {prefix: /api}}]"), to("v1"))))
    d = mesh.route("POST", url("/other"))
    assert (d.route_index, d.subset, d.timeout, d.retries, d.fault, d.mirrors) == (1, "v1", None, None, None, ())


def test_route_raises_no_route_error_for_no_match(trio: Trio, make_mesh: MakeMesh) -> None:
    mesh = make_mesh(base(trio, routes(to("v1", match="[{uri: {exact: /only}}]"))))
    with pytest.raises(pymesh.NoRouteError):
        mesh.route("GET", url("/nope"))
    with pytest.raises(pymesh.NoRouteError):
        make_mesh(mesh_config("  outboundTrafficPolicy: {mode: REGISTRY_ONLY}")).route("GET", "http://unknown.test/")
