"""Cross-document analysis (``pymesh.config.analyze``): warnings on load, errors with ``strict=True``.

Every finding is checked with the resource it is reported on and its field path, and each
kind of finding is checked twice: as a warning from a normal load, and as an error (same
path) from a strict load.
"""

from __future__ import annotations

import textwrap

import pytest

from pymesh import ConfigError, Mesh
from pymesh.config.load import Config, Text, load
from pymesh.errors import Issue

SE_REVIEWS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-se, namespace: default}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
"""


def loaded(text: str, *, strict: bool = False) -> Config:
    return load([Text(textwrap.dedent(text), "t.yaml")], strict=strict)


def findings(config: Config, contains: str = "") -> list[tuple[str, str, str]]:
    """(resource name, path, message) of the warnings whose message contains ``contains``."""
    return [
        (i.name, i.path, i.message)
        for i in config.warnings
        if i.severity == "warning" and contains in i.message
    ]


def paths(issues: tuple[Issue, ...] | list[Issue], contains: str) -> list[tuple[str, str]]:
    return [(i.name, i.path) for i in issues if contains in i.message]


def assert_strict(text: str, contains: str, expected: list[tuple[str, str]]) -> None:
    """The same findings are errors, at the same paths, with ``strict=True``."""
    with pytest.raises(ConfigError) as info:
        loaded(text, strict=True)
    assert paths(info.value.errors, contains) == expected
    assert not paths([i for i in info.value.issues if i.severity == "warning"], contains)


# -- subsets -----------------------------------------------------------------------------------

SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-elsewhere, namespace: other}
spec:
  host: ratings.default.svc.cluster.local
  subsets: [{name: v3, labels: {version: v3}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wild, namespace: default}
spec:
  host: "*.example.com"
  subsets: [{name: blue, labels: {color: blue}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 50
    mirror: {host: reviews, subset: shadow}
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: ratings, subset: v3}}]
    mirrors: [{destination: {host: reviews, subset: mirror-two}}]
  - route: [{destination: {host: api.example.com, subset: blue}}]
  tcp:
  - route: [{destination: {host: reviews, subset: tcp-only}}]
"""

MISSING_SUBSET = "is not defined by any DestinationRule"


def test_missing_subset_warnings_and_paths() -> None:
    config = loaded(SE_REVIEWS + SUBSETS)
    got = findings(config, MISSING_SUBSET)
    assert [(name, path) for name, path, _ in got] == [
        ("vs", "spec.http[0].route[1].destination.subset"),
        ("vs", "spec.http[0].mirror.subset"),
        ("vs", "spec.http[1].mirrors[0].destination.subset"),
        ("vs", "spec.tcp[0].route[0].destination.subset"),
    ]
    assert got[0][2].startswith("subset 'v2' of host 'reviews' is not defined by any DestinationRule")
    assert "503" in got[0][2]
    # v1 is defined; v3 is defined for ratings' FQDN by a rule in another namespace; blue by a wildcard host.
    assert not any("'v1'" in m or "'v3'" in m or "'blue'" in m for _, _, m in got)


def test_missing_subset_strict() -> None:
    assert_strict(SE_REVIEWS + SUBSETS, MISSING_SUBSET, [
        ("vs", "spec.http[0].route[1].destination.subset"),
        ("vs", "spec.http[0].mirror.subset"),
        ("vs", "spec.http[1].mirrors[0].destination.subset"),
        ("vs", "spec.tcp[0].route[0].destination.subset"),
    ])


EXTERNAL = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: outbound, namespace: default}
spec:
  hosts: [api.example.com, other.example.org]
  http:
  - match: [{uri: {prefix: /known}}]
    route: [{destination: {host: api.example.com}}]
  - route: [{destination: {host: other.example.org}}]
"""

NOT_IN_REGISTRY = "is not defined by any ServiceEntry"


def test_external_host_without_service_entry() -> None:
    got = findings(loaded(SE_REVIEWS + EXTERNAL), NOT_IN_REGISTRY)
    assert [(n, p) for n, p, _ in got] == [("outbound", "spec.http[1].route[0].destination.host")]
    assert "REGISTRY_ONLY" in got[0][2]
    assert_strict(SE_REVIEWS + EXTERNAL, NOT_IN_REGISTRY, [("outbound", "spec.http[1].route[0].destination.host")])


def test_cluster_local_hosts_and_wildcard_entries_need_no_warning() -> None:
    wildcard = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ["*.example.org"]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
"""
    internal = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: internal}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"""
    assert findings(loaded(SE_REVIEWS + wildcard + EXTERNAL + internal), NOT_IN_REGISTRY) == []


# -- unreachable rules -------------------------------------------------------------------------

UNREACHABLE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"""

NEVER_USED = "rule is never used"


def test_unreachable_rules_after_a_catch_all() -> None:
    got = findings(loaded(UNREACHABLE), NEVER_USED)
    assert [(n, p) for n, p, _ in got] == [("reviews", "spec.http[2]"), ("reviews", "spec.http[3]")]
    assert all("http[1] has no match and catches every request" in m for _, _, m in got)
    assert_strict(UNREACHABLE, NEVER_USED, [("reviews", "spec.http[2]"), ("reviews", "spec.http[3]")])


def test_no_unreachable_warning_when_the_catch_all_is_last() -> None:
    text = UNREACHABLE.rsplit("  - match: [{uri", 1)[0]
    assert findings(loaded(text), NEVER_USED) == []


def test_unreachable_warning_points_at_the_line() -> None:
    issue = next(i for i in loaded(UNREACHABLE).warnings if NEVER_USED in i.message)
    assert (issue.file, issue.line, issue.kind, issue.namespace) == ("t.yaml", 10, "VirtualService", "default")


# -- duplicate hosts ---------------------------------------------------------------------------

DUPLICATES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: young, creationTimestamp: "2024-06-01T00:00:00Z"}
spec:
  hosts: [ratings, reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: old, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gateway-only}
spec:
  hosts: [reviews]
  gateways: [ingress]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""

ALSO_CLAIMED = "is also claimed by VirtualService"


def test_duplicate_host_across_virtual_services() -> None:
    got = findings(loaded(DUPLICATES), ALSO_CLAIMED)
    # The younger one is warned, at the host it shares; the gateway-only one does not conflict.
    assert [(n, p) for n, p, _ in got] == [("young", "spec.hosts[1]")]
    assert "VirtualService default/old" in got[0][2]
    assert "the older one wins" in got[0][2]
    assert_strict(DUPLICATES, ALSO_CLAIMED, [("young", "spec.hosts[1]")])


# -- DestinationRule merges --------------------------------------------------------------------

MERGES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: first}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: second}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: elsewhere, namespace: other}
spec:
  host: reviews.default.svc.cluster.local
"""

MERGED = "subsets are merged"


def test_destination_rule_merge() -> None:
    got = findings(loaded(MERGES), MERGED)
    assert [(n, p) for n, p, _ in got] == [("second", "spec.host")]
    assert got[0][2].startswith("DestinationRule default/first (t.yaml:1 (document 0)) is for the same host")
    assert "the first one's trafficPolicy wins" in got[0][2]
    assert_strict(MERGES, MERGED, [("second", "spec.host")])


# -- gateways ----------------------------------------------------------------------------------

GATEWAYS = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: known, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: local}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web.example.com]
  gateways: [mesh, istio-system/known, local, missing, istio-system/local]
  http: [{route: [{destination: {host: web.default.svc.cluster.local}}]}]
"""

UNKNOWN_GATEWAY = "is not defined by any loaded Gateway"


def test_unknown_gateway() -> None:
    got = findings(loaded(GATEWAYS), UNKNOWN_GATEWAY)
    assert [(n, p) for n, p, _ in got] == [("web", "spec.gateways[3]"), ("web", "spec.gateways[4]")]
    assert got[0][2] == "gateway 'missing' is not defined by any loaded Gateway"
    assert got[1][2] == "gateway 'istio-system/local' is not defined by any loaded Gateway"
    assert_strict(GATEWAYS, UNKNOWN_GATEWAY, [("web", "spec.gateways[3]"), ("web", "spec.gateways[4]")])


# -- PeerAuthentication ------------------------------------------------------------------------

PEERS = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-b, namespace: istio-system, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-a, namespace: istio-system, creationTimestamp: "2023-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-1, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-2, namespace: shop}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: workload-1, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: workload-2, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: PERMISSIVE}
"""

def test_peer_authentication_conflicts() -> None:
    got = findings(loaded(PEERS), "the older one is used")
    assert [(n, p) for n, p, _ in got] == [("mesh-b", "metadata.name"), ("ns-2", "metadata.name")]
    assert got[0][2] == "another mesh-wide PeerAuthentication istio-system/mesh-a exists; the older one is used"
    assert got[1][2] == "another namespace-wide PeerAuthentication shop/ns-1 exists; the older one is used"
    assert_strict(PEERS, "the older one is used", [("mesh-b", "metadata.name"), ("ns-2", "metadata.name")])


# -- CUSTOM authorization ----------------------------------------------------------------------

CUSTOM = """\
apiVersion: pymesh/v1
kind: MeshConfig
metadata: {name: mesh}
spec:
  extensionProviders:
  - name: opa
    envoyExtAuthzHttp: {service: opa.default.svc.cluster.local, port: 8181}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: known}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: unknown}
spec:
  action: CUSTOM
  provider: {name: oauth2-proxy}
  rules: [{to: [{operation: {paths: [/admin]}}]}]
"""

PROVIDER = "is not in MeshConfig extensionProviders"


def test_custom_provider_missing() -> None:
    got = findings(loaded(CUSTOM), PROVIDER)
    assert [(n, p) for n, p, _ in got] == [("unknown", "spec.provider.name")]
    assert got[0][2].startswith("extension provider 'oauth2-proxy' is not in MeshConfig extensionProviders")
    assert "denied" in got[0][2]
    assert_strict(CUSTOM, PROVIDER, [("unknown", "spec.provider.name")])


def test_custom_provider_from_the_istio_configmap() -> None:
    text = CUSTOM.replace(
        "apiVersion: pymesh/v1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  extensionProviders:\n"
        "  - name: opa\n    envoyExtAuthzHttp: {service: opa.default.svc.cluster.local, port: 8181}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n"
        "    extensionProviders:\n    - name: opa\n"
        "      envoyExtAuthzHttp: {service: opa.default.svc.cluster.local, port: 8181}\n",
    )
    assert [n for n, _, _ in findings(loaded(text), PROVIDER)] == ["unknown"]


# -- legacy RBAC -------------------------------------------------------------------------------

RBAC = """\
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: viewer, namespace: shop}
spec:
  rules: [{services: ["*"], methods: [GET]}]
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: good, namespace: shop}
spec:
  subjects: [{user: "*"}]
  roleRef: {kind: ServiceRole, name: viewer}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: wrong-namespace, namespace: other}
spec:
  subjects: [{user: "*"}]
  roleRef: {kind: ServiceRole, name: viewer}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: by-role-field, namespace: shop}
spec:
  subjects: [{user: "*"}]
  role: /editor
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: by-role-field-ok, namespace: shop}
spec:
  subjects: [{user: "*"}]
  role: /viewer
"""

NO_ROLE = "is not defined in namespace"


def test_service_role_missing() -> None:
    got = findings(loaded(RBAC), NO_ROLE)
    assert [(n, p) for n, p, _ in got] == [("wrong-namespace", "spec.roleRef"), ("by-role-field", "spec.role")]
    assert got[0][2] == "ServiceRole 'viewer' is not defined in namespace 'other'"
    assert got[1][2] == "ServiceRole '/editor' is not defined in namespace 'shop'"
    assert_strict(RBAC, NO_ROLE, [("wrong-namespace", "spec.roleRef"), ("by-role-field", "spec.role")])


# -- delegates ---------------------------------------------------------------------------------

DELEGATES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [reviews]
  http: [{delegate: {name: used, namespace: team}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: used, namespace: team}
spec:
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orphan, namespace: team}
spec:
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"""


def test_orphan_delegate_is_an_error_even_without_strict() -> None:
    for strict in (False, True):
        with pytest.raises(ConfigError) as info:
            loaded(DELEGATES, strict=strict)
        assert paths(info.value.errors, "must have at least one host") == [("orphan", "spec.hosts")]
    referenced = DELEGATES.rsplit("---\n", 1)[0]
    assert paths(loaded(referenced).warnings, "at least one host") == []


# -- on load: warnings, never errors -----------------------------------------------------------


ALL_WARNINGS = "---\n".join([SE_REVIEWS.removesuffix("---\n"), SUBSETS, EXTERNAL, UNREACHABLE.replace(
    "name: reviews}", "name: unreachable}").replace("[reviews]", "[unreachable]"), MERGES, GATEWAYS, PEERS,
    CUSTOM, RBAC])


def test_every_finding_is_a_warning_on_load_and_the_mesh_serves() -> None:
    mesh = Mesh.from_yaml(ALL_WARNINGS)
    messages = [w.message for w in mesh.warnings if w.severity == "warning"]
    for needle in (MISSING_SUBSET, NOT_IN_REGISTRY, NEVER_USED, MERGED, UNKNOWN_GATEWAY,
                   "the older one is used", PROVIDER, NO_ROLE):
        assert any(needle in m for m in messages), needle
    assert mesh.snapshot.routes.get("reviews.default.svc.cluster.local") is not None


def test_strict_load_reports_every_finding_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        loaded(ALL_WARNINGS, strict=True)
    errors = [e.message for e in info.value.errors]
    for needle in (MISSING_SUBSET, NOT_IN_REGISTRY, NEVER_USED, MERGED, UNKNOWN_GATEWAY,
                   "the older one is used", PROVIDER, NO_ROLE):
        assert any(needle in m for m in errors), needle
    # Load warnings (a removed API) stay warnings under strict.
    assert any("was removed from Istio" in i.message and i.severity == "warning" for i in info.value.issues)


def test_clean_config_has_no_findings() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /v2}}]
            route: [{destination: {host: reviews, subset: v2}}]
          - route: [{destination: {host: reviews, subset: v1}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
    """
    assert loaded(text).warnings == ()
    assert loaded(text, strict=True).warnings == ()
