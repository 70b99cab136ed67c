"""The compiled snapshot: registry, route table, cluster table and policy index.

Every test loads real Istio YAML through ``Mesh.from_yaml`` and inspects what the snapshot
built from it; the semantics are Istio's (shared/reference/istio-semantics.md §0, 1.1,
2.1, 2.2, 3.1, 4.1).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import pytest

from pymesh import Mesh, Workload
from pymesh.snapshot.clusters import Cluster, ClusterKey
from pymesh.snapshot.snapshot import Snapshot

SVC = ".svc.cluster.local"


def snap(
    text: str, *, namespace: str = "default", labels: Mapping[str, str] | None = None, name: str = ""
) -> Snapshot:
    workload = Workload(name=name, namespace=namespace, labels=dict(labels or {}))
    return Mesh.from_yaml(textwrap.dedent(text), workload=workload).snapshot


HTTP80 = "[{number: 80, name: http, protocol: HTTP}]"


def se(name: str, ns: str, hosts: str, extra: str = "", ports: str = HTTP80) -> str:
    """A STATIC ServiceEntry document; ``extra`` is further spec lines at spec indent (2 spaces)."""
    return (
        f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec:\n  hosts: {hosts}\n  resolution: STATIC\n  ports: {ports}\n{extra}---\n"
    )


def vs(name: str, ns: str, hosts: str, extra: str = "", ts: str = "", dest: str = "reviews") -> str:
    meta = f"{{name: {name}, namespace: {ns}" + (f", creationTimestamp: '{ts}'" if ts else "") + "}"
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {meta}\n"
        f"spec:\n  hosts: {hosts}\n{extra}  http:\n  - route: [{{destination: {{host: {dest}}}}}]\n---\n"
    )


def dr(name: str, ns: str, host: str, body: str = "", ts: str = "") -> str:
    meta = f"{{name: {name}, namespace: {ns}" + (f", creationTimestamp: '{ts}'" if ts else "") + "}"
    spec = textwrap.indent(textwrap.dedent(body).strip("\n"), "  ") + "\n" if body.strip() else ""
    return (
        f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {meta}\n"
        f"spec:\n  host: {host}\n{spec}---\n"
    )


# == Registry ==================================================================================


def test_short_host_expands_in_the_service_entry_namespace() -> None:
    s = snap(se("cart", "shop", "[cart]"))
    assert s.registry.get("cart.shop" + SVC) is not None
    assert s.registry.get("cart.default" + SVC) is None
    assert s.registry.get("cart") is None
    svc = s.registry.get("cart.shop" + SVC)
    assert svc is not None
    assert svc.namespace == "shop"
    assert [p.number for p in svc.ports] == [80]


def test_request_host_resolves_like_kubernetes_dns() -> None:
    s = snap(se("cart", "shop", "[cart]"))
    fq = "cart.shop" + SVC
    # A short name is the caller's namespace: a caller in default does not reach shop's cart.
    assert s.registry.resolve("cart", "default") is None
    found = s.registry.resolve("cart", "shop")
    assert found is not None
    assert found.host == fq
    for written in ("cart.shop", "cart.shop.svc", fq, "CART.Shop.svc.cluster.local."):
        got = s.registry.resolve(written, "default")
        assert got is not None, written
        assert got.host == fq


def test_dotted_host_in_a_service_entry_is_taken_literally() -> None:
    # Istio does not expand `name.ns`; only a name without a dot is short.
    s = snap(se("cart", "shop", "[cart.other]"))
    assert s.registry.get("cart.other") is not None
    assert s.registry.get("cart.other" + SVC) is None
    assert s.registry.get("cart.other.shop" + SVC) is None


def test_fqdn_and_external_hosts_are_kept_lowercased() -> None:
    s = snap(se("ext", "shop", "[API.Example.com, reviews.prod.svc.cluster.local]"))
    assert s.registry.get("api.example.com") is not None
    assert s.registry.get("reviews.prod" + SVC) is not None
    svc = s.registry.get("reviews.prod" + SVC)
    assert svc is not None
    assert svc.namespace == "shop"  # the ServiceEntry's namespace, not the host's


def test_wildcard_hosts_most_specific_first() -> None:
    text = (
        se("wide", "default", '["*.example.com"]')
        + se("narrow", "default", '["*.api.example.com"]')
        + se("exact", "default", "[exact.api.example.com]")
    )
    s = snap(text)

    def host_of(name: str) -> str | None:
        svc = s.registry.get(name)
        return svc.host if svc is not None else None

    assert host_of("exact.api.example.com") == "exact.api.example.com"
    assert host_of("v1.api.example.com") == "*.api.example.com"
    assert host_of("a.b.api.example.com") == "*.api.example.com"  # several labels deep
    assert host_of("www.example.com") == "*.example.com"
    assert host_of("a.b.example.com") == "*.example.com"
    assert host_of("example.com") is None  # `*.example.com` does not cover the bare domain
    assert host_of("api.example.com") == "*.example.com"
    assert host_of("example.org") is None
    assert len(s.registry) == 3


def test_wildcard_order_does_not_depend_on_load_order() -> None:
    text = se("narrow", "default", '["*.api.example.com"]') + se("wide", "default", '["*.example.com"]')
    svc = snap(text).registry.get("x.api.example.com")
    assert svc is not None
    assert svc.host == "*.api.example.com"


@pytest.mark.parametrize(
    ("export_to", "visible_in"),
    [
        ("", {"shop", "default", "other"}),
        ('["*"]', {"shop", "default", "other"}),
        ('["."]', {"shop"}),
        ('["other"]', {"other"}),
        ('[".", "other"]', {"shop", "other"}),
        ('["~"]', set()),
    ],
)
def test_service_entry_export_to(export_to: str, visible_in: set[str]) -> None:
    extra = f"  exportTo: {export_to}\n" if export_to else ""
    s = snap(se("cart", "shop", "[cart.shop.svc.cluster.local]", extra))
    seen = {ns for ns in ("shop", "default", "other") if s.registry.resolve("cart.shop" + SVC, ns) is not None}
    assert seen == visible_in
    svc = s.registry.get("cart.shop" + SVC)
    assert svc is not None
    assert {ns for ns in ("shop", "default", "other") if svc.visible_to(ns)} == visible_in


WORKLOAD_ENTRIES = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: shop}
spec:
  address: 10.0.0.1
  labels: {app: reviews, version: v1}
  ports: {http: 9081}
  serviceAccount: reviews
  locality: us-east/zone1
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: shop}
spec:
  address: 10.0.0.2
  labels: {app: reviews, version: v2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings, namespace: shop}
spec:
  address: 10.0.0.3
  labels: {app: ratings}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-elsewhere, namespace: other}
spec:
  address: 10.0.0.4
  labels: {app: reviews, version: v1}
---
"""


def test_workload_selector_picks_workload_entries_of_its_namespace() -> None:
    text = WORKLOAD_ENTRIES + se(
        "reviews", "shop", "[reviews]", "  location: MESH_INTERNAL\n  workloadSelector: {labels: {app: reviews}}\n"
    )
    svc = snap(text).registry.get("reviews.shop" + SVC)
    assert svc is not None
    assert sorted(e.address for e in svc.endpoints) == ["10.0.0.1", "10.0.0.2"]
    v1 = next(e for e in svc.endpoints if e.address == "10.0.0.1")
    assert v1.origin == "WorkloadEntry shop/reviews-v1"
    assert dict(v1.labels) == {"app": "reviews", "version": "v1"}
    assert v1.service_account == "reviews"
    assert v1.locality == "us-east/zone1"
    assert v1.weight == 3
    v2 = next(e for e in svc.endpoints if e.address == "10.0.0.2")
    assert v2.weight == 1  # unset weight counts as 1


def test_workload_selector_needs_every_label() -> None:
    text = WORKLOAD_ENTRIES + se(
        "reviews", "shop", "[reviews]",
        "  location: MESH_INTERNAL\n  workloadSelector: {labels: {app: reviews, version: v2}}\n",
    )
    svc = snap(text).registry.get("reviews.shop" + SVC)
    assert svc is not None
    assert [e.address for e in svc.endpoints] == ["10.0.0.2"]


def test_endpoint_port_mapping_by_port_name() -> None:
    ports = "[{number: 8080, name: http, protocol: HTTP, targetPort: 9090}, {number: 9000, name: grpc, protocol: GRPC}]"
    endpoints = (
        "  endpoints:\n"
        "  - {address: 10.0.0.1, ports: {http: 18080, grpc: 19000}}\n"
        "  - {address: 10.0.0.2, ports: {grpc: 19001}}\n"
        "  - {address: 10.0.0.3}\n"
    )
    svc = snap(se("reviews", "shop", "[reviews]", endpoints, ports=ports)).registry.get("reviews.shop" + SVC)
    assert svc is not None
    http, grpc = svc.port(8080), svc.port(9000)
    assert http is not None
    assert grpc is not None
    assert (http.name, http.protocol, http.target_port) == ("http", "HTTP", 9090)
    by_addr = {e.address: e for e in svc.endpoints}
    # The endpoint's own mapping, else the service's targetPort, else the service port number.
    assert by_addr["10.0.0.1"].port_for(http) == 18080
    assert by_addr["10.0.0.1"].port_for(grpc) == 19000
    assert by_addr["10.0.0.2"].port_for(http) == 9090
    assert by_addr["10.0.0.2"].port_for(grpc) == 19001
    assert by_addr["10.0.0.3"].port_for(http) == 9090
    assert by_addr["10.0.0.3"].port_for(grpc) == 9000
    assert all(e.origin == "ServiceEntry shop/reviews" for e in svc.endpoints)


def test_service_port_lookup() -> None:
    ports = "[{number: 8080, name: http, protocol: http}, {number: 9000, name: grpc, protocol: GRPC}]"
    one = snap(se("a", "shop", "[a]")).registry.get("a.shop" + SVC)
    two = snap(se("b", "shop", "[b]", ports=ports)).registry.get("b.shop" + SVC)
    assert one is not None
    assert two is not None
    single = one.port(None)
    assert single is not None
    assert single.number == 80  # with one port, a request that names none means it
    assert two.port(None) is None  # with two, it is ambiguous
    http = two.port(8080)
    assert http is not None
    assert http.protocol == "HTTP"  # protocol names are case-insensitive, stored upper-case
    assert two.port(1234) is None


def test_dns_service_without_endpoints_resolves_its_own_host() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext, namespace: shop}
        spec:
          hosts: [api.example.com]
          resolution: DNS
          ports: [{number: 443, name: https, protocol: HTTPS}]
    """
    svc = snap(text).registry.get("api.example.com")
    assert svc is not None
    assert svc.resolution == "DNS"
    assert [e.address for e in svc.endpoints] == ["api.example.com"]


def test_two_service_entries_for_one_host_merge_endpoints() -> None:
    text = se("a", "shop", "[cart]", "  endpoints: [{address: 10.0.0.1}]\n") + se(
        "b", "shop", "[cart]", "  endpoints: [{address: 10.0.0.2}]\n"
    )
    svc = snap(text).registry.get("cart.shop" + SVC)
    assert svc is not None
    assert [e.address for e in svc.endpoints] == ["10.0.0.1", "10.0.0.2"]


# == RouteTable ================================================================================


def owner(s: Snapshot, host: str) -> str | None:
    vh = s.routes.get(host)
    return None if vh is None else f"{vh.service.namespace}/{vh.service.name}"


def test_oldest_virtual_service_wins_a_host_by_creation_timestamp() -> None:
    text = vs("aaa", "default", "[reviews]", ts="2024-05-01T00:00:00Z") + vs(
        "zzz", "default", "[reviews]", ts="2023-01-01T00:00:00Z"
    )
    s = snap(text)
    assert owner(s, "reviews.default" + SVC) == "default/zzz"


def test_without_timestamps_the_name_decides() -> None:
    text = vs("zzz", "default", "[reviews]") + vs("aaa", "default", "[reviews]")
    assert owner(snap(text), "reviews.default" + SVC) == "default/aaa"


def test_equal_timestamps_fall_back_to_the_name() -> None:
    ts = "2024-01-01T00:00:00Z"
    text = vs("b", "default", "[reviews]", ts=ts) + vs("a", "default", "[reviews]", ts=ts)
    assert owner(snap(text), "reviews.default" + SVC) == "default/a"


def test_duplicate_host_written_differently_is_still_the_same_host() -> None:
    text = vs("first", "default", "[reviews]", ts="2023-01-01T00:00:00Z") + vs(
        "second", "default", "[reviews.default.svc.cluster.local, ratings]", ts="2024-01-01T00:00:00Z"
    )
    s = snap(text)
    assert owner(s, "reviews.default" + SVC) == "default/first"
    assert owner(s, "ratings.default" + SVC) == "default/second"  # its other host still routes
    assert sorted(s.routes.hosts()) == ["ratings.default" + SVC, "reviews.default" + SVC]


def test_gateway_only_virtual_service_is_not_on_the_mesh_table() -> None:
    gw_only = vs("ingress-only", "default", "[reviews]", "  gateways: [istio-system/ingress]\n")
    both = vs("both", "default", "[ratings]", "  gateways: [mesh, ingress]\n")
    s = snap(gw_only + both)
    assert s.routes.get("reviews.default" + SVC) is None
    assert owner(s, "ratings.default" + SVC) == "default/both"
    assert [r.name for r in s.routes.for_gateway("istio-system/ingress")] == ["ingress-only"]
    assert [r.name for r in s.routes.for_gateway("default/ingress")] == ["both"]  # short name: the VS namespace
    assert s.routes.for_gateway("default/nothing") == ()


def test_gateway_references_are_normalised() -> None:
    text = (
        vs("short", "web", "[a.example.com]", "  gateways: [gw]\n", ts="2020-01-01T00:00:00Z")
        + vs("legacy", "web", "[b.example.com]", "  gateways: [gw.web.svc.cluster.local]\n", ts="2021-01-01T00:00:00Z")
        + vs("full", "other", "[c.example.com]", "  gateways: [web/gw]\n", ts="2022-01-01T00:00:00Z")
    )
    s = snap(text)
    assert [r.name for r in s.routes.for_gateway("web/gw")] == ["short", "legacy", "full"]  # oldest first
    assert len(s.routes) == 0


def test_delegates_are_indexed_by_namespace_and_name() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: root, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /api}}]
            delegate: {name: reviews-api, namespace: team}
          - delegate: {name: reviews-rest}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews-api, namespace: team}
        spec:
          http:
          - route: [{destination: {host: reviews.default.svc.cluster.local}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews-rest, namespace: default}
        spec:
          http:
          - route: [{destination: {host: reviews}}]
    """
    s = snap(text)
    api = s.routes.delegate("reviews-api", "team")
    assert api is not None
    assert api.namespace == "team"
    rest = s.routes.delegate("reviews-rest", "default")
    assert rest is not None
    assert s.routes.delegate("reviews-api", "default") is None
    assert s.routes.delegate("root", "default") is None  # a VS with hosts is not a delegate
    assert s.routes.hosts() == ["reviews.default" + SVC]


@pytest.mark.parametrize(
    ("export_to", "visible_in"),
    [("", {"shop", "default"}), ('["*"]', {"shop", "default"}), ('["."]', {"shop"}), ('["default"]', {"default"})],
)
def test_virtual_service_export_to(export_to: str, visible_in: set[str]) -> None:
    extra = f"  exportTo: {export_to}\n" if export_to else ""
    text = vs("reviews", "shop", "[reviews]", extra)
    seen = {ns for ns in ("shop", "default") if snap(text, namespace=ns).routes.get("reviews.shop" + SVC)}
    assert seen == visible_in


def test_route_table_wildcards_most_specific_first() -> None:
    text = (
        vs("wide", "default", '["*.example.com"]', dest="a.example.com")
        + vs("narrow", "default", '["*.api.example.com"]', dest="a.example.com")
        + vs("exact", "default", "[v1.api.example.com]", dest="a.example.com")
    )
    s = snap(text)
    assert owner(s, "v1.api.example.com") == "default/exact"
    assert owner(s, "v2.api.example.com") == "default/narrow"
    assert owner(s, "www.example.com") == "default/wide"
    assert owner(s, "example.com") is None
    assert s.routes.hosts() == ["v1.api.example.com", "*.api.example.com", "*.example.com"]


def test_route_table_resolves_request_hosts_from_the_callers_namespace() -> None:
    s = snap(vs("reviews", "shop", "[reviews]"), namespace="default")
    fq = "reviews.shop" + SVC
    assert s.routes.resolve("reviews", "default") is None
    for written in ("reviews.shop", "reviews.shop.svc", fq, "Reviews.Shop.svc.cluster.local"):
        vh = s.routes.resolve(written, "default")
        assert vh is not None, written
        assert vh.host == fq
    vh = s.routes.resolve("reviews", "shop")
    assert vh is not None
    assert vh.service.name == "reviews"


# == ClusterTable ==============================================================================

REVIEWS_SE = se(
    "reviews", "shop", "[reviews]",
    "  endpoints:\n"
    "  - {address: 10.0.0.1, labels: {app: reviews, version: v1}}\n"
    "  - {address: 10.0.0.2, labels: {app: reviews, version: v2}}\n"
    "  - {address: 10.0.0.3, labels: {app: reviews, version: v1, track: canary}}\n",
    ports="[{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: admin, protocol: HTTP}]",
)
REVIEWS = "reviews.shop" + SVC
LB = "trafficPolicy: {loadBalancer: {simple: %s}}"


def lb(cluster: Cluster) -> str | None:
    balancer = cluster.policy.load_balancer
    return None if balancer is None else str(balancer.simple)


def rule_name(s: Snapshot, host: str = REVIEWS) -> str | None:
    rule = s.clusters.destination_rule(host, "shop")
    return None if rule is None else f"{rule.resource.namespace}/{rule.resource.name}"


def test_destination_rule_lookup_client_then_service_then_root_namespace() -> None:
    client = dr("client-dr", "client", REVIEWS, LB % "RANDOM")
    service = dr("service-dr", "shop", "reviews", LB % "LEAST_REQUEST")
    root = dr("root-dr", "istio-system", REVIEWS, LB % "ROUND_ROBIN")
    base = REVIEWS_SE
    assert rule_name(snap(base + client + service + root, namespace="client")) == "client/client-dr"
    assert rule_name(snap(base + service + root, namespace="client")) == "shop/service-dr"
    assert rule_name(snap(base + root, namespace="client")) == "istio-system/root-dr"
    assert rule_name(snap(base, namespace="client")) is None
    # The service's namespace is the one of the ServiceEntry that defines the host.
    s = snap(base + service + root, namespace="client")
    assert lb(s.clusters.get(REVIEWS, port=8080)) == "LEAST_REQUEST"


def test_private_destination_rules_are_seen_only_from_their_namespace() -> None:
    service = dr("service-dr", "shop", "reviews", 'exportTo: ["."]\n' + LB % "LEAST_REQUEST")
    root = dr("root-dr", "istio-system", REVIEWS, LB % "ROUND_ROBIN")
    assert rule_name(snap(REVIEWS_SE + service + root, namespace="client")) == "istio-system/root-dr"
    assert rule_name(snap(REVIEWS_SE + service + root, namespace="shop")) == "shop/service-dr"
    # A client's own namespace sees its rules whatever their exportTo says.
    mine = dr("mine", "client", REVIEWS, 'exportTo: ["other"]\n' + LB % "RANDOM")
    assert rule_name(snap(REVIEWS_SE + mine + root, namespace="client")) == "client/mine"


def test_first_destination_rule_found_is_used_whole() -> None:
    client = dr("client-dr", "client", REVIEWS, "subsets: [{name: v1, labels: {version: v1}}]")
    root = dr(
        "root-dr", "istio-system", REVIEWS,
        LB % "RANDOM" + "\nsubsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]",
    )
    s = snap(REVIEWS_SE + client + root, namespace="client")
    assert rule_name(s) == "client/client-dr"
    assert lb(s.clusters.get(REVIEWS, port=8080)) is None  # no inheritance from the root rule
    assert s.clusters.get(REVIEWS, "v1", 8080).subset_defined
    assert not s.clusters.get(REVIEWS, "v2", 8080).subset_defined


def test_most_specific_destination_rule_host_wins() -> None:
    text = (
        REVIEWS_SE
        + se("ratings", "shop", "[ratings]")
        + dr("wild", "shop", '"*.shop.svc.cluster.local"', LB % "RANDOM")
        + dr("exact", "shop", "reviews", LB % "LEAST_REQUEST")
        + dr("everything", "shop", '"*.svc.cluster.local"', LB % "ROUND_ROBIN")
    )
    s = snap(text, namespace="shop")
    assert rule_name(s) == "shop/exact"
    assert rule_name(s, "ratings.shop" + SVC) == "shop/wild"
    assert rule_name(s, "ratings.other" + SVC) == "shop/everything"
    assert lb(s.clusters.get("ratings.shop" + SVC)) == "RANDOM"


def test_same_namespace_destination_rules_merge() -> None:
    older = dr(
        "older", "shop", "reviews",
        LB % "ROUND_ROBIN" + "\nsubsets: [{name: v1, labels: {version: v1}}]",
        ts="2023-01-01T00:00:00Z",
    )
    newer = dr(
        "newer", "shop", REVIEWS,
        LB % "RANDOM" + "\nsubsets: [{name: v2, labels: {version: v2}}, {name: v1, labels: {track: canary}}]",
        ts="2024-01-01T00:00:00Z",
    )
    s = snap(REVIEWS_SE + newer + older, namespace="shop")  # load order does not matter; age does
    rule = s.clusters.destination_rule(REVIEWS, "shop")
    assert rule is not None
    assert sorted(rule.subsets) == ["v1", "v2"]
    assert rule.resource.name == "older"
    assert lb(s.clusters.get(REVIEWS, port=8080)) == "ROUND_ROBIN"  # the first rule's trafficPolicy
    v1 = s.clusters.get(REVIEWS, "v1", 8080)
    assert dict(v1.subset_labels) == {"version": "v1"}  # a duplicate subset name keeps the first
    assert lb(v1) == "ROUND_ROBIN"
    v2 = s.clusters.get(REVIEWS, "v2", 8080)
    assert v2.subset_defined
    assert [e.address for e in v2.endpoints] == ["10.0.0.2"]


def test_merge_takes_the_second_traffic_policy_when_the_first_has_none() -> None:
    first = dr("first", "shop", "reviews", "subsets: [{name: v1, labels: {version: v1}}]", ts="2023-01-01T00:00:00Z")
    second = dr("second", "shop", "reviews", LB % "RANDOM", ts="2024-01-01T00:00:00Z")
    s = snap(REVIEWS_SE + first + second, namespace="shop")
    assert lb(s.clusters.get(REVIEWS, port=8080)) == "RANDOM"
    assert s.clusters.get(REVIEWS, "v1", 8080).subset_defined


TOP = """\
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  connectionPool: {tcp: {maxConnections: 100}}
  outlierDetection: {consecutive5xxErrors: 7}
  tls: {mode: ISTIO_MUTUAL}
  portLevelSettings:
  - port: {number: 8080}
    connectionPool: {tcp: {maxConnections: 5}}
"""


def test_port_level_settings_replace_the_four_components_wholesale() -> None:
    s = snap(REVIEWS_SE + dr("r", "shop", "reviews", TOP), namespace="shop")
    on_port = s.clusters.get(REVIEWS, port=8080).policy
    assert on_port.connection_pool.tcp.max_connections == 5
    # Components the port entry leaves out fall back to defaults, not to the top level.
    assert on_port.load_balancer is None
    assert on_port.outlier_detection is None
    assert on_port.tls is None
    other = s.clusters.get(REVIEWS, port=9090).policy
    assert other.load_balancer.simple == "RANDOM"
    assert other.connection_pool.tcp.max_connections == 100
    assert other.outlier_detection.consecutive_5xx_errors == 7
    assert other.tls.mode == "ISTIO_MUTUAL"


def test_subset_policy_overrides_per_component() -> None:
    body = TOP + textwrap.dedent("""\
        subsets:
        - name: v1
          labels: {version: v1}
          trafficPolicy:
            loadBalancer: {simple: LEAST_REQUEST}
    """)
    s = snap(REVIEWS_SE + dr("r", "shop", "reviews", body), namespace="shop")
    admin = s.clusters.get(REVIEWS, "v1", 9090).policy
    assert admin.load_balancer.simple == "LEAST_REQUEST"  # the subset's component
    assert admin.connection_pool.tcp.max_connections == 100  # the rule's, untouched
    assert admin.outlier_detection.consecutive_5xx_errors == 7
    assert admin.tls.mode == "ISTIO_MUTUAL"
    http = s.clusters.get(REVIEWS, "v1", 8080).policy
    assert http.load_balancer.simple == "LEAST_REQUEST"  # the subset over the rule's port entry
    assert http.connection_pool.tcp.max_connections == 5
    assert http.outlier_detection is None
    assert http.tls is None


def test_subset_port_level_replaces_everything() -> None:
    body = TOP + textwrap.dedent("""\
        subsets:
        - name: v1
          labels: {version: v1}
          trafficPolicy:
            loadBalancer: {simple: LEAST_REQUEST}
            portLevelSettings:
            - port: {number: 8080}
              tls: {mode: SIMPLE}
    """)
    s = snap(REVIEWS_SE + dr("r", "shop", "reviews", body), namespace="shop")
    http = s.clusters.get(REVIEWS, "v1", 8080).policy
    assert http.tls.mode == "SIMPLE"
    assert http.load_balancer is None  # not the subset's top level, not the rule's
    assert http.connection_pool is None
    assert http.outlier_detection is None
    admin = s.clusters.get(REVIEWS, "v1", 9090).policy  # no port entry for 9090 in the subset
    assert admin.load_balancer.simple == "LEAST_REQUEST"
    assert admin.tls.mode == "ISTIO_MUTUAL"


def test_unknown_subset_is_not_defined() -> None:
    body = "subsets: [{name: v1, labels: {version: v1}}]"
    s = snap(REVIEWS_SE + dr("r", "shop", "reviews", body), namespace="shop")
    assert s.clusters.get(REVIEWS, "v1", 8080).subset_defined
    assert not s.clusters.get(REVIEWS, "v9", 8080).subset_defined
    assert s.clusters.get(REVIEWS, "", 8080).subset_defined  # no subset asked: always defined
    # Without any DestinationRule every named subset is unknown.
    bare = snap(REVIEWS_SE, namespace="shop")
    assert not bare.clusters.get(REVIEWS, "v1", 8080).subset_defined
    assert bare.clusters.get(REVIEWS, port=8080).subset_defined


def test_cluster_endpoints_are_filtered_by_subset_labels() -> None:
    body = """\
        subsets:
        - {name: v1, labels: {version: v1}}
        - {name: v2, labels: {version: v2}}
        - {name: canary, labels: {version: v1, track: canary}}
        - {name: all}
    """
    s = snap(REVIEWS_SE + dr("r", "shop", "reviews", body), namespace="shop")

    def addrs(subset: str) -> list[str]:
        return [e.address for e in s.clusters.get(REVIEWS, subset, 8080).endpoints]

    assert addrs("v1") == ["10.0.0.1", "10.0.0.3"]  # endpoint labels need only be a superset
    assert addrs("v2") == ["10.0.0.2"]
    assert addrs("canary") == ["10.0.0.3"]
    assert addrs("all") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # no labels: every endpoint
    assert addrs("") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert dict(s.clusters.get(REVIEWS, "canary", 8080).subset_labels) == {"version": "v1", "track": "canary"}


def test_cluster_key_and_identity() -> None:
    body = "subsets: [{name: v1, labels: {version: v1}}]"
    s = snap(se("one", "shop", "[one]") + REVIEWS_SE + dr("r", "shop", "reviews", body), namespace="shop")
    c = s.clusters.get(REVIEWS, "v1", 8080)
    assert c.key == ClusterKey(REVIEWS, "v1", 8080)
    assert str(c.key) == f"outbound|8080|v1|{REVIEWS}"
    assert s.clusters.get(REVIEWS, "v1", 8080) is c  # memoised
    assert c.destination_rule is not None
    assert c.destination_rule.name == "r"
    assert c.service is not None
    assert c.service.host == REVIEWS
    single = s.clusters.get("one.shop" + SVC)
    assert single.key.port == 80  # a service with one port: the request need not say it
    assert s.clusters.get(REVIEWS).key.port == 0  # two ports and none given


def test_workload_selector_destination_rule_applies_only_to_matching_clients() -> None:
    rule = dr("for-v1", "client", REVIEWS, 'workloadSelector: {matchLabels: {app: web}}\nexportTo: ["."]\n'
              + LB % "RANDOM")
    fallback = dr("root", "istio-system", REVIEWS, LB % "ROUND_ROBIN")
    text = REVIEWS_SE + rule + fallback
    assert rule_name(snap(text, namespace="client", labels={"app": "web"})) == "client/for-v1"
    assert rule_name(snap(text, namespace="client", labels={"app": "api"})) == "istio-system/root"
    assert rule_name(snap(text, namespace="other", labels={"app": "web"})) == "istio-system/root"


def test_cluster_for_a_host_outside_the_registry() -> None:
    text = dr("ext", "default", "api.example.com", LB % "RANDOM")
    c = snap(text).clusters.get("api.example.com", port=443)
    assert c.service is None
    assert c.endpoints == ()
    assert lb(c) == "RANDOM"


# == PolicyIndex ===============================================================================

POLICIES = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: shop-wide, namespace: shop}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-only, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-v2, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-service, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: ratings}]
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-wide, namespace: other}
spec: {rules: [{}]}
---
"""


def authz(s: Snapshot, ns: str, name: str = "", **labels: str) -> list[str]:
    picked = s.policies.for_workload(ns, name, labels).authorization
    return sorted(f"{r.namespace}/{r.name}" for r in picked)


def test_root_namespace_policy_without_selector_is_mesh_wide() -> None:
    s = snap(POLICIES)
    for ns in ("shop", "other", "default", "istio-system"):
        assert "istio-system/mesh-wide" in authz(s, ns, app="anything")


def test_namespace_wide_and_selector_policies() -> None:
    s = snap(POLICIES)
    assert authz(s, "shop", app="reviews", version="v1") == [
        "istio-system/mesh-wide", "shop/reviews-only", "shop/shop-wide",
    ]
    assert authz(s, "shop", app="reviews", version="v2") == [
        "istio-system/mesh-wide", "shop/reviews-only", "shop/reviews-v2", "shop/shop-wide",
    ]
    assert authz(s, "shop", app="cart") == ["istio-system/mesh-wide", "shop/shop-wide"]
    # A selector matches only in its own namespace.
    assert authz(s, "other", app="reviews", version="v2") == ["istio-system/mesh-wide", "other/other-wide"]
    assert authz(s, "default") == ["istio-system/mesh-wide"]


def test_target_refs_select_workloads_of_the_named_service() -> None:
    s = snap(POLICIES)
    assert "shop/by-service" in authz(s, "shop", app="ratings")
    assert "shop/by-service" in authz(s, "shop", "ratings", app="x")  # the workload name counts too
    assert "shop/by-service" not in authz(s, "shop", "reviews", app="reviews")
    assert "shop/by-service" not in authz(s, "other", app="ratings")


def test_root_namespace_selector_matches_in_every_namespace() -> None:
    # AuthorizationPolicy and RequestAuthentication API: "If the policy is in the root namespace,
    # the selector will additionally match with workloads in all namespaces."
    text = """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: all-reviews, namespace: istio-system}
        spec:
          selector: {matchLabels: {app: reviews}}
          rules: [{}]
        ---
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt-reviews, namespace: istio-system}
        spec:
          selector: {matchLabels: {app: reviews}}
          jwtRules: [{issuer: "https://issuer.example.com"}]
    """
    s = snap(text)
    for ns in ("shop", "istio-system"):
        picked = s.policies.for_workload(ns, "", {"app": "reviews"})
        assert [r.name for r in picked.authorization] == ["all-reviews"]
        assert [r.name for r in picked.request_authentication] == ["jwt-reviews"]
    none = s.policies.for_workload("shop", "", {"app": "ratings"})
    assert none.authorization == ()
    assert none.request_authentication == ()


PEER = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: istio-system}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: shop, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
"""


def test_peer_authentication_most_specific_first() -> None:
    s = snap(PEER)
    names = [r.name for r in s.policies.for_workload("shop", "", {"app": "reviews"}).peer_authentication]
    assert names == ["reviews", "shop", "mesh"]
    assert [r.name for r in s.policies.for_workload("other", "", {"app": "x"}).peer_authentication] == ["mesh"]


def test_root_namespace_peer_authentication_with_selector_is_ignored() -> None:
    # policy_applier.go ComposePeerAuthentication only takes selector policies outside the root namespace.
    s = snap(PEER)
    for ns in ("istio-system", "other"):
        names = [r.name for r in s.policies.for_workload(ns, "", {"app": "reviews"}).peer_authentication]
        assert "root-selector" not in names


def test_snapshot_local_policies_are_those_of_its_own_workload() -> None:
    s = snap(POLICIES, namespace="shop", labels={"app": "reviews", "version": "v2"}, name="reviews")
    got = sorted(r.name for r in s.local_policies.authorization)
    assert got == ["mesh-wide", "reviews-only", "reviews-v2", "shop-wide"]
    assert len(s.policies.all) == 6
