"""Istio 1.0/1.1 security objects translated into the current model (istio-semantics.md §5.1-5.3).

Every test loads real corpus files (or small documents where the corpus has no example) through
``pymesh.config.load.load`` and asserts on the concrete content of the translation.
"""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pymesh import Mesh, Workload
from pymesh.config.common import PolicyTargetReference, WorkloadSelector
from pymesh.config.legacy.expr import evaluate, evaluate_match
from pymesh.config.load import Text, load
from pymesh.config.resource import Resource
from pymesh.config.security import JWTRule, MutualTLS, PeerAuthentication
from pymesh.config.security_authz import AuthorizationPolicy, Condition, Operation, Rule, RuleFrom, RuleTo, Source
from pymesh.snapshot.legacy import (
    DRY_RUN,
    TRANSLATED_FROM,
    DenyAction,
    LegacyPolicies,
    ListAction,
    MixerCheck,
    denial,
    grpc_to_http,
    translate,
)
from pymesh.snapshot.policies import PolicyIndex
from tests.conftest import shared_dir

CORPUS = shared_dir() / "conformance"
LEGACY = CORPUS / "legacy"
TUTORIAL = CORPUS / "istio-tutorial"


def run(*files: Path | str, namespace: str = "default") -> LegacyPolicies:
    sources: list[Any] = [Text(textwrap.dedent(f)) if isinstance(f, str) else f for f in files]
    config = load(sources, namespace=namespace)
    return translate(config.resources, config.mesh_config)


def by_name(t: LegacyPolicies, kind: str) -> dict[str, Resource[Any]]:
    return {f"{r.namespace}/{r.name}": r for r in t.resources if r.kind == kind}


def svc(*names: str) -> tuple[PolicyTargetReference, ...]:
    return tuple(PolicyTargetReference(name=n, kind="Service") for n in names)


def checks(t: LegacyPolicies) -> dict[str, MixerCheck]:
    return {c.rule: c for c in t.mixer_checks}


GET = (RuleTo(operation=Operation(methods=("GET",))),)


# -- RBAC ------------------------------------------------------------------------------------------


def test_bookinfo_authorization_task() -> None:
    t = run(LEGACY / "istio-1.1.17__rbac-config-ON.yaml", LEGACY / "istio-1.0.0__namespace-policy.yaml",
            LEGACY / "istio-1.0.0__productpage-policy.yaml", LEGACY / "istio-1.0.0__details-reviews-policy.yaml",
            LEGACY / "istio-1.0.0__ratings-policy.yaml")
    policies = by_name(t, "AuthorizationPolicy")
    assert set(policies) == {
        "default/default.deny-by-default", "default/bind-productpage-viewer.rule-0",
        "default/bind-details-reviews.rule-0", "default/bind-ratings.rule-0",
        *(f"default/bind-service-viewer.rule-0-{i}" for i in range(4)),
    }
    base = policies["default/default.deny-by-default"]
    assert base.spec == AuthorizationPolicy()  # ALLOW without rules: denies everything not allowed elsewhere
    assert base.metadata.annotations[TRANSLATED_FROM] == "rbac.istio.io/v1alpha1 ClusterRbacConfig default"
    # user "*" is anyone, authenticated or not: no `from` at all
    assert policies["default/bind-productpage-viewer.rule-0"].spec == AuthorizationPolicy(
        target_refs=svc("productpage"), rules=(Rule(to=GET),))
    assert policies["default/bind-details-reviews.rule-0"].spec == AuthorizationPolicy(
        target_refs=svc("details", "reviews"),
        rules=(Rule(from_=(RuleFrom(source=Source(principals=("cluster.local/ns/default/sa/bookinfo-productpage",))),),
                    to=GET),))
    ratings = policies["default/bind-ratings.rule-0"]
    assert ratings.spec.rules[0].from_[0].source.principals == ("cluster.local/ns/default/sa/bookinfo-reviews",)
    assert ratings.metadata.annotations[TRANSLATED_FROM] == (
        "rbac.istio.io/v1alpha1 ServiceRoleBinding default/bind-ratings, "
        "rbac.istio.io/v1alpha1 ServiceRole default/ratings-viewer")
    assert ratings.source.file.endswith("istio-1.0.0__ratings-policy.yaml")
    # services "*" + destination.labels[app] in 4 values: one selector per value; subjects ORed as rules
    viewers = [policies[f"default/bind-service-viewer.rule-0-{i}"].spec for i in range(4)]
    assert [v.selector for v in viewers] == [
        WorkloadSelector(match_labels={"app": a}) for a in ("productpage", "details", "reviews", "ratings")]
    assert viewers[0].rules == (
        Rule(from_=(RuleFrom(source=Source(namespaces=("istio-system",))),), to=GET),
        Rule(from_=(RuleFrom(source=Source(namespaces=("default",))),), to=GET),
    )
    assert all(r.kind == "AuthorizationPolicy" and r.api_version == "security.istio.io/v1beta1" for r in t.resources)
    assert not any(DRY_RUN in r.metadata.annotations for r in t.resources)


def test_translated_rbac_selects_workloads_like_istio_1_1() -> None:
    t = run(LEGACY / "istio-1.1.17__rbac-config-ON.yaml", LEGACY / "istio-1.0.0__productpage-policy.yaml",
            LEGACY / "istio-1.0.0__ratings-policy.yaml")
    index = PolicyIndex(t.resources, "istio-system")

    def names(ns: str, name: str, labels: dict[str, str]) -> set[str]:
        return {r.name for r in index.for_workload(ns, name, labels).authorization}

    assert names("default", "productpage-v1", {"app": "productpage"}) == {
        "default.deny-by-default", "bind-productpage-viewer.rule-0"}
    assert names("default", "ratings-v1", {"app": "ratings"}) == {"default.deny-by-default", "bind-ratings.rule-0"}
    assert names("default", "details-v1", {"app": "details"}) == {"default.deny-by-default"}  # denied: no grant
    assert names("other", "details-v1", {"app": "details"}) == set()  # RBAC not included there


def test_rbac_config_1_0_kind_behaves_the_same() -> None:
    t = run(LEGACY / "tutorial-book-1.0.4__authorization-enable-rbac.yml",
            LEGACY / "tutorial-book-1.0.4__namespace-rbac-policy-jwt.yml", namespace="tutorial")
    policies = by_name(t, "AuthorizationPolicy")
    assert policies["tutorial/default.deny-by-default"].spec == AuthorizationPolicy()
    assert policies["tutorial/default.deny-by-default"].metadata.annotations[TRANSLATED_FROM] == (
        "rbac.istio.io/v1alpha1 RbacConfig tutorial/default")
    customer = policies["tutorial/bind-service-viewer.rule-0-0"].spec
    assert customer.selector == WorkloadSelector(match_labels={"app": "customer"})
    # user "*" plus a claim property: only the claim condition remains
    assert customer.rules == (Rule(to=GET, when=(
        Condition(key="request.auth.claims[preferred_username]", values=("demo",)),)),)


def test_tutorial_rbac_files() -> None:
    t = run(TUTORIAL / "authorization-enable-rbac.yml", TUTORIAL / "namespace-rbac-policy.yml",
            TUTORIAL / "old-namespace-rbac-policy-jwt.yml", namespace="tutorial")
    policies = by_name(t, "AuthorizationPolicy")
    assert policies["tutorial/bind-customer.rule-0"].spec == AuthorizationPolicy(rules=(Rule(
        to=GET, when=(Condition(key="request.auth.claims[role]", values=("customer",)),)),))
    assert [policies[f"tutorial/bind-service-viewer.rule-0-{i}"].spec.selector.match_labels["app"]
            for i in range(3)] == ["customer", "recommendation", "preference"]
    assert policies["tutorial/bind-service-viewer.rule-0-2"].spec.rules == (Rule(to=GET),)


def test_enforcement_mode_permissive_marks_everything_dry_run() -> None:
    t = run(LEGACY / "istio-1.1.17__rbac-config-on-permissive.yaml", LEGACY / "istio-1.0.0__ratings-policy.yaml")
    assert {r.name for r in t.resources} == {"default.deny-by-default", "bind-ratings.rule-0"}
    assert all(r.metadata.annotations[DRY_RUN] == "true" for r in t.resources)


def test_binding_mode_permissive_marks_only_its_policies() -> None:
    t = run(LEGACY / "istio-1.1.17__rbac-config-ON.yaml",
            LEGACY / "istio-1.1.17__details-reviews-policy-permissive.yaml")
    policies = by_name(t, "AuthorizationPolicy")
    assert DRY_RUN not in policies["default/default.deny-by-default"].metadata.annotations
    assert policies["default/bind-details-reviews.rule-0"].metadata.annotations[DRY_RUN] == "true"


def test_inclusion_by_service_limits_grants_to_included_services() -> None:
    t = run(LEGACY / "istio-1.1.17__rbac-config-on-mongodb.yaml", LEGACY / "istio-1.1.17__mongodb-policy.yaml",
            LEGACY / "istio-1.0.0__ratings-policy.yaml")
    policies = by_name(t, "AuthorizationPolicy")
    # ratings is not under RBAC: its binding must not switch deny-by-default on for it
    assert set(policies) == {"default/default.deny-by-default.services", "default/bind-mongodb-viewer.rule-0"}
    assert policies["default/default.deny-by-default.services"].spec == AuthorizationPolicy(target_refs=svc("mongodb"))
    assert policies["default/bind-mongodb-viewer.rule-0"].spec == AuthorizationPolicy(
        target_refs=svc("mongodb"),
        rules=(Rule(from_=(RuleFrom(source=Source(principals=("cluster.local/ns/default/sa/bookinfo-ratings-v2",))),),
                    to=(RuleTo(operation=Operation(ports=("27017",))),)),))


def test_rbac_off_translates_nothing_and_says_so() -> None:
    t = run(LEGACY / "istio-1.0.0__ratings-policy.yaml")
    assert t.resources == ()
    assert len(t.warnings) == 1
    assert "ServiceRoleBinding default/bind-ratings: RBAC is off" in t.warnings[0]
    assert t.warnings[0].startswith(str(LEGACY / "istio-1.0.0__ratings-policy.yaml"))


RBAC_ON = """\
apiVersion: rbac.istio.io/v1alpha1
kind: ClusterRbacConfig
metadata: {name: default}
spec: {mode: 'ON'}
---
"""


def test_mode_on_denies_mesh_wide_and_maps_every_field() -> None:
    t = run(RBAC_ON + textwrap.dedent("""\
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata: {name: r, namespace: ns1}
        spec:
          rules:
          - services: ["*.ns1.svc.cluster.local"]
            paths: ["/api/*"]
            notMethods: ["DELETE"]
            constraints:
            - {key: "request.headers[x-team]", values: ["a", "b"]}
            - {key: destination.ip, values: ["10.0.0.0/8"]}
          - services: ["reviews.ns1.svc.cluster.local"]
            methods: ["*"]
            constraints: [{key: destination.user, values: [bookinfo-reviews]}]
        ---
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata: {name: b, namespace: ns1}
        spec:
          roleRef: {kind: ServiceRole, name: r}
          subjects:
          - user: cluster.local/ns/ns2/sa/client
            properties: {source.ip: 10.1.0.0/16, request.auth.principal: "iss/sub"}
          - group: admins
          - properties:
              source.namespace: ns3
              request.headers[x-user]: alice
          - properties: {service: reviews}
        """))
    policies = by_name(t, "AuthorizationPolicy")
    assert set(policies) == {"istio-system/default.deny-by-default", "ns1/b.rule-0"}
    op = Operation(paths=("/api/*",), not_methods=("DELETE",))
    when = (Condition(key="request.headers[x-team]", values=("a", "b")),
            Condition(key="destination.ip", values=("10.0.0.0/8",)))
    assert policies["ns1/b.rule-0"].spec == AuthorizationPolicy(rules=(
        Rule(from_=(RuleFrom(source=Source(principals=("cluster.local/ns/ns2/sa/client",),
                                           request_principals=("iss/sub",), ip_blocks=("10.1.0.0/16",))),),
             to=(RuleTo(operation=op),), when=when),
        Rule(to=(RuleTo(operation=op),),
             when=(*when, Condition(key="request.auth.claims[groups]", values=("admins",)))),
        Rule(from_=(RuleFrom(source=Source(namespaces=("ns3",))),), to=(RuleTo(operation=op),),
             when=(*when, Condition(key="request.headers[x-user]", values=("alice",)))),
    ))
    text = "\n".join(t.warnings)
    assert "rules[1]: constraint destination.user" in text  # the second rule cannot be expressed: skipped
    assert "subjects[3]: unsupported property key 'service'" in text


def test_a_rule_with_a_constraint_pymesh_cannot_check_grants_nothing() -> None:
    # Ignoring the constraint would widen the grant (any version instead of v1); ServiceRoles only
    # allow, so the rule that cannot be evaluated is the one dropped.
    t = run(RBAC_ON + textwrap.dedent("""\
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata: {name: r, namespace: ns1}
        spec:
          rules:
          - services: ["*"]
            methods: ["GET"]
            constraints: [{key: version, values: [v1]}]
          - services: ["*"]
            methods: ["HEAD"]
        ---
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata: {name: b, namespace: ns1}
        spec:
          roleRef: {kind: ServiceRole, name: r}
          subjects: [{user: "*"}]
        """))
    policies = by_name(t, "AuthorizationPolicy")
    assert set(policies) == {"istio-system/default.deny-by-default", "ns1/b.rule-1"}
    assert policies["ns1/b.rule-1"].spec.rules[0].to[0].operation == Operation(methods=("HEAD",))
    assert "rules[0]: constraint key 'version' is not supported: the rule grants nothing" in "\n".join(t.warnings)


def test_exclusion_denies_everywhere_but_the_excluded() -> None:
    t = run("""\
        apiVersion: rbac.istio.io/v1alpha1
        kind: ClusterRbacConfig
        metadata: {name: default}
        spec:
          mode: ON_WITH_EXCLUSION
          exclusion: {namespaces: [legacy], services: [tools.apps.svc.cluster.local]}
        """)
    policies = by_name(t, "AuthorizationPolicy")
    assert policies["istio-system/default.deny-by-default"].spec == AuthorizationPolicy()
    assert policies["legacy/default.excluded"].spec == AuthorizationPolicy(rules=(Rule(),))
    assert policies["apps/default.excluded-services"].spec == AuthorizationPolicy(
        target_refs=svc("tools"), rules=(Rule(),))


def test_missing_role_is_a_warning() -> None:
    t = run(RBAC_ON + textwrap.dedent("""\
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata: {name: b, namespace: ns1}
        spec: {roleRef: {kind: ServiceRole, name: nope}, subjects: [{user: "*"}]}
        """))
    assert [r.name for r in t.resources] == ["default.deny-by-default"]
    assert "ServiceRole 'nope' not found in namespace ns1" in t.warnings[0]


# -- authentication --------------------------------------------------------------------------------


def peer(t: LegacyPolicies) -> dict[str, PeerAuthentication]:
    return {k: r.spec for k, r in by_name(t, "PeerAuthentication").items()}


def test_mesh_policy_is_mesh_wide_strict() -> None:
    t = run(LEGACY / "istio-1.1.17__global-mtls.yaml")
    [res] = t.resources
    assert (res.kind, res.namespace, res.name) == ("PeerAuthentication", "istio-system", "default")
    assert res.spec == PeerAuthentication(mtls=MutualTLS(mode="STRICT"))  # `mtls:` null is STRICT
    assert res.metadata.annotations[TRANSLATED_FROM] == "authentication.istio.io/v1alpha1 MeshPolicy default"
    [req] = t.origins
    assert (req.level, req.namespace, req.origins) == ("mesh", "istio-system", ())


@pytest.mark.parametrize(("path", "namespace", "mode"), [
    (TUTORIAL / "authentication-enable-tls.yml", "tutorial", "STRICT"),
    (LEGACY / "tutorial-1.1.x__disable-mtls.yml", "tutorial", "DISABLE"),
], ids=["mtls-empty-is-strict", "no-peers-is-disable"])
def test_namespace_policy_modes(path: Path, namespace: str, mode: str) -> None:
    t = run(path, namespace=namespace)
    assert peer(t) == {f"{namespace}/default": PeerAuthentication(mtls=MutualTLS(mode=mode))}  # type: ignore[arg-type]


def test_port_targets_become_port_level_mtls() -> None:
    t = run(LEGACY / "istio-1.1.17__authn-policy-permissive.yaml")
    assert peer(t) == {"default/permissive-authn-80.d": PeerAuthentication(
        selector=WorkloadSelector(match_labels={"app": "d"}),
        port_level_mtls={80: MutualTLS(mode="PERMISSIVE"), 9090: MutualTLS(mode="STRICT")},
    )}
    res = by_name(t, "PeerAuthentication")["default/permissive-authn-80.d"]
    assert res.metadata.annotations[TRANSLATED_FROM] == (
        "authentication.istio.io/v1alpha1 Policy default/permissive-authn-80, "
        "authentication.istio.io/v1alpha1 Policy default/strict-authn-9090")


def test_peer_is_optional_is_permissive() -> None:
    t = run("""\
        apiVersion: authentication.istio.io/v1alpha1
        kind: Policy
        metadata: {name: default, namespace: ns1}
        spec: {peers: [{mtls: {}}], peerIsOptional: true}
        """)
    assert peer(t)["ns1/default"] == PeerAuthentication(mtls=MutualTLS(mode="PERMISSIVE"))


def test_jwt_policy_with_trigger_rules() -> None:
    t = run(LEGACY / "istio-1.1.17__authn-policy-jwt.yaml")
    # no peers: the winning policy turns mTLS off for its targets (the whole policy wins in 1.x)
    assert peer(t) == {
        "default/enable-jwt.c": PeerAuthentication(selector=WorkloadSelector(match_labels={"app": "c"}),
                                                   mtls=MutualTLS(mode="DISABLE")),
        "default/enable-jwt.d": PeerAuthentication(selector=WorkloadSelector(match_labels={"app": "d"}),
                                                   port_level_mtls={80: MutualTLS(mode="DISABLE")}),
    }
    ra = by_name(t, "RequestAuthentication")["default/enable-jwt"].spec
    assert ra.target_refs == svc("c", "d")
    google, demo = ra.jwt_rules
    assert google.issuer.endswith("@developer.gserviceaccount.com")
    assert demo == JWTRule(issuer="testing@secure.istio.io",
                           jwks_uri="https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/"
                                    "jwks.json", forward_original_token=True)
    [req] = t.origins
    assert (req.level, req.principal_binding, req.optional, req.request_authentication) == (
        "service", "USE_ORIGIN", False, "default/enable-jwt")
    assert (req.status, req.body) == (401, "Origin authentication failed.")

    def issuers(path: str) -> list[str]:
        return [o.issuer for o in req.triggered(path)]

    assert issuers("/health_check") == []
    assert issuers("/jwt2?x=1") == ["testing@secure.istio.io"]
    assert issuers("/productpage") == [google.issuer]
    assert t.origin_requirement("default", "c-v1", {"app": "c"}, 8080) is req
    assert t.origin_requirement("default", "d", {}, 80) is req
    assert t.origin_requirement("default", "d", {}, 9090) is None  # port not targeted, no broader policy


def test_tutorial_jwt_policies() -> None:
    old = run(LEGACY / "tutorial-book-1.0.4__enduser-authentication-jwt.yml", namespace="tutorial")
    ra = by_name(old, "RequestAuthentication")["tutorial/customerjwt"]
    assert ra.spec.target_refs == svc("customer")
    assert ra.spec.jwt_rules[0].audiences == ("customer-tutorial",)
    assert ra.metadata.annotations[TRANSLATED_FROM] == "authentication.istio.io/v1alpha1 Policy tutorial/customerjwt"
    [req] = old.origins
    assert req.principal_binding == "USE_ORIGIN"
    assert req.triggered("/")
    assert not req.optional

    new = run(LEGACY / "tutorial-1.1.x__enduser-authentication-jwt.yml", namespace="tutorial")
    assert by_name(new, "RequestAuthentication")["tutorial/customerjwt"].spec.target_refs == svc(
        "customer", "preference", "recommendation")
    assert set(peer(new)) == {"tutorial/customerjwt.customer", "tutorial/customerjwt.preference",
                              "tutorial/customerjwt.recommendation"}


def test_most_specific_policy_wins_whole() -> None:
    t = run(TUTORIAL / "authentication-enable-tls.yml", LEGACY / "tutorial-1.1.x__enduser-authentication-jwt.yml",
            LEGACY / "istio-1.1.17__global-mtls.yaml", namespace="tutorial")
    service = t.origin_requirement("tutorial", "customer-v1", {"app": "customer"})
    namespace = t.origin_requirement("tutorial", "other", {})
    mesh = t.origin_requirement("elsewhere", "x", {})
    assert service is not None
    assert service.policy.endswith("tutorial/customerjwt")
    assert namespace is not None
    assert namespace.policy.endswith("tutorial/default")
    assert mesh is not None
    assert mesh.level == "mesh"


def test_origin_is_optional_and_jwt_locations() -> None:
    t = run("""\
        apiVersion: authentication.istio.io/v1alpha1
        kind: Policy
        metadata: {name: default, namespace: ns1}
        spec:
          origins: [{jwt: {issuer: iss, jwtHeaders: [x-jwt], jwtParams: [token]}}]
          originIsOptional: true
        """)
    ra = by_name(t, "RequestAuthentication")["ns1/default"].spec
    assert ra.target_refs == ()
    assert ra.selector is None
    assert [h.name for h in ra.jwt_rules[0].from_headers] == ["x-jwt"]
    assert ra.jwt_rules[0].from_params == ("token",)
    assert t.origins[0].optional
    assert t.origins[0].level == "namespace"


# -- Mixer -----------------------------------------------------------------------------------------


def test_denier_1_0_crd_kinds() -> None:
    t = run(LEGACY / "istio-1.0.0__mixer-rule-deny-serviceaccount.yaml")
    [check] = t.mixer_checks
    assert (check.rule, check.handler, check.instance, check.adapter) == (
        "default/denyproductpage", "denyproductpagehandler.denier.default",
        "denyproductpagerequest.checknothing.default", "denier")
    assert check.action == DenyAction(code=7, message="Not allowed")
    assert not check.mesh_wide
    assert check.applies_to("default")
    assert not check.applies_to("other")
    assert check.match is not None
    productpage = {"destination.labels": {"app": "details"},
                   "source.user": "cluster.local/ns/default/sa/bookinfo-productpage"}
    assert evaluate_match(check.match, productpage)
    assert not evaluate_match(check.match, {"destination.labels": {"app": "details"}})  # no identity: no match
    assert denial([(check.handler, 7, "Not allowed")]) == (
        403, "PERMISSION_DENIED:denyproductpagehandler.denier.default:Not allowed")


def test_fully_qualified_references_in_the_root_namespace_apply_mesh_wide() -> None:
    t = run(LEGACY / "istio-1.0.0__mixer-rule-ingress-denial.yaml")
    [check] = t.mixer_checks
    assert (check.handler, check.instance, check.mesh_wide) == (
        "handler.denier.istio-system", "denyrequest.checknothing.istio-system", True)
    assert t.mixer_checks_for("default") == (check,)
    gateway = {"source.labels": {"istio": "ingressgateway"}, "request.headers": {"x-user": "john"}}
    assert evaluate_match(check.match, gateway)
    assert not evaluate_match(check.match, {**gateway, "request.headers": {"x-user": "jane"}})


def test_denier_1_1_handler_kind() -> None:
    t = run(LEGACY / "istio-1.1.17__mixer-rule-deny-label.yaml")
    [check] = t.mixer_checks
    # Mixer 1.1 names a compiled-adapter handler "<name>.<namespace>" (runtime/config/ephemeral.go)
    assert (check.handler, check.instance) == ("denyreviewsv3handler.default", "denyreviewsv3request.instance.default")
    assert check.action == DenyAction(code=7, message="Not allowed")
    assert evaluate_match(check.match, {"destination.labels": {"app": "ratings"},
                                        "source.labels": {"app": "reviews", "version": "v3"}})
    assert not evaluate_match(check.match, {"destination.labels": {"app": "ratings"},
                                            "source.labels": {"app": "reviews", "version": "v2"}})


def test_whitelist_both_styles_give_the_same_check() -> None:
    crd = run(LEGACY / "istio-1.1.17__mixer-rule-deny-whitelist-crd.yaml").mixer_checks[0]
    generic = run(LEGACY / "istio-1.1.17__mixer-rule-deny-whitelist.yaml").mixer_checks[0]
    assert crd.handler == "whitelist.listchecker.default"
    assert generic.handler == "whitelist.default"
    assert crd.action == generic.action
    action = crd.action
    assert isinstance(action, ListAction)
    assert (action.overrides, action.entry_type, action.blacklist) == (("v1", "v2"), "STRINGS", False)
    attrs = {"source.labels": {"app": "reviews", "version": "v3"}}
    assert action.verdict(evaluate(action.value, attrs)) == (7, "v3 is not whitelisted")
    assert action.verdict("v2") == (0, "")
    assert denial([(crd.handler, 7, "v3 is not whitelisted")]) == (
        403, "PERMISSION_DENIED:whitelist.listchecker.default:v3 is not whitelisted")


def test_ip_whitelist() -> None:
    [check] = run(LEGACY / "istio-1.1.17__mixer-rule-deny-ip.yaml").mixer_checks
    action = check.action
    assert isinstance(action, ListAction)
    assert action.networks == (ipaddress.ip_network("10.57.0.0/16"),)
    assert action.verdict(evaluate(action.value, {"source.ip": "10.57.3.4"})) == (0, "")
    assert action.verdict(evaluate(action.value, {"source.ip": "10.1.2.3"})) == (7, "10.1.2.3 is not whitelisted")
    assert action.verdict(evaluate(action.value, {})) == (7, "0.0.0.0 is not whitelisted")  # the ip() fallback


def test_tutorial_acls() -> None:
    old = checks(run(LEGACY / "tutorial-book-1.0.4__acl-whitelist.yml", namespace="tutorial"))
    white = old["tutorial/checkfromcustomer"]
    assert white.handler == "preferencewhitelist.listchecker.tutorial"
    assert isinstance(white.action, ListAction)
    code, message = white.action.verdict(evaluate(white.action.value, {"source.labels": {"app": "customer"}}))
    # Istio 1.0 answered 404 NOT_FOUND here; pymesh follows 1.1
    assert denial([(white.handler, code, message)]) == (
        403, "PERMISSION_DENIED:preferencewhitelist.listchecker.tutorial:customer is not whitelisted")

    black = checks(run(LEGACY / "tutorial-book-1.0.4__acl-blacklist.yml", namespace="tutorial"))
    assert (black["tutorial/denycustomer"].handler, black["tutorial/denycustomer"].action) == (
        "denycustomerhandler.denier.tutorial", DenyAction(code=7, message="Not allowed"))

    new = checks(run(TUTORIAL / "acl-whitelist.yml", TUTORIAL / "acl-blacklist.yml",
                     TUTORIAL / "acl-deny-except-customer2preference2recommendation.yml", namespace="tutorial"))
    assert set(new) == {"tutorial/checkfromcustomer", "tutorial/checkfrompreference", "tutorial/denycustomer",
                        "tutorial/no-customer-to-recommendation", "tutorial/no-preference-to-customer",
                        "tutorial/no-recommendation-to-customer", "tutorial/no-recommendation-to-preference"}
    assert new["tutorial/checkfrompreference"].action.overrides == ("preference",)  # type: ignore[union-attr]
    assert new["tutorial/no-preference-to-customer"].action == DenyAction(
        code=7, message="Customer -> Preference -> Recommendation ONLY")
    assert new["tutorial/no-preference-to-customer"].handler == "do-not-pass-go.denier.tutorial"


def test_unresolvable_and_unsupported_handlers_are_warnings() -> None:
    t = run(TUTORIAL / "rate_limit_rule.yml", TUTORIAL / "recommendation_requestcount.yml", namespace="tutorial")
    assert t.mixer_checks == ()
    assert any("rule istio-system/quota: actions[0]: handler 'handler.memquota' not found" in w for w in t.warnings)
    assert any("recommendationrequestcounthandler.handler.istio-system is referenced by its bare name" in w
               for w in t.warnings)


MIXER = """\
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny, namespace: ns1}
spec: {compiledAdapter: denier}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: names, namespace: ns1}
spec:
  compiledAdapter: listchecker
  params: {overrides: ["Alice", "^b.b$"], entryType: %s, blacklist: true}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: prom, namespace: ns1}
spec: {compiledAdapter: prometheus, params: {}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: user, namespace: ns1}
spec: {compiledTemplate: listentry, params: {value: 'request.headers["x-user"] | ""'}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: ns1}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: ns1}
spec:
  actions:
  - {handler: deny, instances: [nothing]}
  - {handler: names, instances: [user, nothing]}
  - {handler: prom, instances: [nothing]}
  - {handler: ghost, instances: [nothing]}
"""


def test_generic_handlers_defaults_and_list_types() -> None:
    t = run(MIXER % "CASE_INSENSITIVE_STRINGS")
    deny, names = t.mixer_checks
    assert deny.match is None  # no match: always
    assert deny.action == DenyAction(code=9, message="")  # a 1.1 denier without status: FAILED_PRECONDITION
    assert grpc_to_http(9) == 400
    assert isinstance(names.action, ListAction)
    assert names.action.verdict("alice") == (7, "alice is blacklisted")
    assert names.action.verdict("bob") == (0, "")
    assert names.action.verdict(evaluate(names.action.value, {})) == (3, " is not a valid string or IP address")
    text = "\n".join(t.warnings)
    assert "instance nothing.instance.ns1 is of template 'checknothing', which handler names.ns1" in text
    assert "handler prom.ns1 uses adapter 'prometheus', which pymesh does not enforce" in text
    assert "handler 'ghost' not found" in text

    regex = run(MIXER % "REGEX").mixer_checks[1].action
    assert isinstance(regex, ListAction)
    assert regex.contains("xbobx") is False
    assert regex.contains("bob") is True
    assert regex.contains("xAlicex") is True


def test_denial_joins_failures_and_maps_codes() -> None:
    assert denial([("a.ns", 7, "no"), ("b.ns", 8, "full")]) == (403, "PERMISSION_DENIED:a.ns:no, b.ns:full")
    assert [grpc_to_http(c) for c in (0, 1, 5, 8, 14, 16, 99)] == [200, 499, 404, 429, 503, 401, 500]


# -- the whole pipeline ----------------------------------------------------------------------------


def test_translation_is_deterministic_and_pure() -> None:
    files = sorted(p for p in LEGACY.iterdir() if "virtual-service" not in p.name and "egress" not in p.name)
    first = run(*files)
    assert first == run(*files)
    assert first.resources
    assert first.origins
    assert first.mixer_checks


def test_snapshot_uses_the_translation() -> None:
    text = (LEGACY / "istio-1.1.17__rbac-config-ON.yaml").read_text() + "\n---\n" + (
        LEGACY / "istio-1.0.0__productpage-policy.yaml").read_text()
    mesh = Mesh.from_yaml(text, workload=Workload(name="productpage-v1", namespace="default",
                                                  labels={"app": "productpage"}))
    snapshot = mesh.snapshot
    assert {r.name for r in snapshot.local_policies.authorization} == {
        "default.deny-by-default", "bind-productpage-viewer.rule-0"}
    assert snapshot.legacy.resources[0].metadata.annotations[TRANSLATED_FROM].startswith("rbac.istio.io")


def test_service_patterns_and_the_root_namespace() -> None:
    t = run(RBAC_ON + textwrap.dedent("""\
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata: {name: r, namespace: ns1}
        spec:
          rules:
          - services: ["details.*", "reviews.ns1.svc.cluster.local", "ratings.other.svc.cluster.local", "product*"]
        ---
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata: {name: b, namespace: ns1}
        spec: {roleRef: {kind: ServiceRole, name: r}, subjects: [{user: "*"}]}
        ---
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata: {name: r, namespace: istio-system}
        spec: {rules: [{services: ["*"]}]}
        ---
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata: {name: b, namespace: istio-system}
        spec: {roleRef: {kind: ServiceRole, name: r}, subjects: [{user: "*"}]}
        """))
    policies = by_name(t, "AuthorizationPolicy")
    assert set(policies) == {"istio-system/default.deny-by-default", "ns1/b.rule-0"}
    assert policies["ns1/b.rule-0"].spec == AuthorizationPolicy(target_refs=svc("details", "reviews"), rules=(Rule(),))
    text = "\n".join(t.warnings)
    assert "services entry 'product*' cannot be expressed as services of namespace ns1" in text
    assert "ServiceRoleBinding istio-system/b: rules[0]: a grant in the root namespace that is not limited" in text


def test_trigger_rule_matchers() -> None:
    t = run("""\
        apiVersion: authentication.istio.io/v1alpha1
        kind: Policy
        metadata: {name: default, namespace: ns1}
        spec:
          origins:
          - jwt:
              issuer: iss
              triggerRules:
              - {includedPaths: [{prefix: /api/}, {regex: "/v[0-9]+/.*"}], excludedPaths: [{suffix: /health}]}
        """)
    [jwt] = t.origins[0].origins
    assert [jwt.triggered(p) for p in ("/api/x", "/v2/x", "/api/health", "/v2", "/other#frag")] == [
        True, True, False, False, False]


def test_root_namespace_label_grants_are_left_out() -> None:
    t = run(RBAC_ON + textwrap.dedent("""\
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata: {name: r, namespace: istio-system}
        spec:
          rules:
          - services: ["ingress.istio-system.svc.cluster.local"]
          - services: ["*"]
            constraints: [{key: "destination.labels[app]", values: [egress]}]
        ---
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata: {name: b, namespace: istio-system}
        spec: {roleRef: {kind: ServiceRole, name: r}, subjects: [{user: "*"}]}
        """))
    policies = by_name(t, "AuthorizationPolicy")
    # a Service target in the root namespace stays in the root namespace; a selector there would not
    assert set(policies) == {"istio-system/default.deny-by-default", "istio-system/b.rule-0"}
    assert policies["istio-system/b.rule-0"].spec.target_refs == svc("ingress")
    assert any("rules[1]: a grant in the root namespace" in w for w in t.warnings)
    index = PolicyIndex(t.resources, "istio-system")
    assert {r.name for r in index.for_workload("apps", "egress", {"app": "egress"}).authorization} == {
        "default.deny-by-default"}
