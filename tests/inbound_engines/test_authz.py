"""AuthorizationPolicy semantics beyond the table: order, CUSTOM, AUDIT, dry-run, every `when` key, fail closed."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from pymesh.config.load import Text, load
from pymesh.inbound.authn import Identity
from pymesh.inbound.authz import Authorizer
from pymesh.inbound.extauthz import ExtAuthz
from pymesh.snapshot.snapshot import build
from pymesh.testing.upstream import Received, Reply, Upstream
from pymesh.workload import Workload

from .helpers import authorizer, decide, policies, request


def _ap(name: str, body: str, ns: str = "foo", annotations: str = "") -> str:
    meta = f"{{name: {name}, namespace: {ns}{', annotations: ' + annotations if annotations else ''}}}"
    return f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {meta}\nspec:\n{body}\n---\n"


_MESH = """apiVersion: pymesh/v1
kind: MeshConfig
metadata: {name: mesh}
spec:
  trustDomain: cluster.local
  trustDomainAliases: [old.domain]
  extensionProviders:
  - name: authz
    envoyExtAuthzHttp: {service: 127.0.0.1, port: PORT, includeRequestHeadersInCheck: [x-user], failOpen: false}
  - name: tracing
    zipkin: {service: zipkin, port: 9411}
---
"""


def identity(iss: str = "https://idp", sub: str = "alice", **claims: Any) -> Identity:
    return Identity(iss, sub, {"iss": iss, "sub": sub, **claims}, tuple(claims.get("aud", ())),
                    claims.get("azp", ""))


# -- the evaluation order matrix ----------------------------------------------------------------

CUSTOM = ["none", "allow", "deny", "error"]


@pytest.mark.parametrize(("custom", "deny", "allow", "audit"),
                         list(itertools.product(CUSTOM, [False, True], ["absent", "match", "nomatch"], [False, True])))
def test_order_matrix(custom: str, deny: bool, allow: str, audit: bool) -> None:
    text = _MESH.replace("PORT", "1")
    if custom != "none":
        text += _ap("custom", "  action: CUSTOM\n  provider: {name: authz}\n  rules: [{}]")
    text += _ap("deny", "  action: DENY\n  rules: [{to: [{operation: {methods: [%s]}}]}]" % ("GET" if deny else "PUT"))
    if allow != "absent":
        text += _ap("allow", "  rules: [{to: [{operation: {paths: [%s]}}]}]" % ("/x" if allow == "match" else "/y"))
    text += _ap("audit", "  action: AUDIT\n  rules: [{to: [{operation: {paths: [%s]}}]}]" % ("/x" if audit else "/z"))
    az = authorizer(text)
    decision = az.check(request("/x"), "/x")
    assert decision.audit == (("foo/audit",) if audit else ())
    verdict = decision.allowed
    if verdict and decision.custom is not None:  # what a driver does next, sans-I/O
        assert decision.custom.provider is not None
        ext = ExtAuthz(decision.custom.provider)
        result = {"allow": ext.verdict(200, [], b""), "deny": ext.verdict(403, [], b"no"),
                  "error": ext.on_error()}[custom]
        verdict = result.allowed
    expected = not deny and allow != "nomatch" and custom not in ("deny", "error")
    assert verdict == expected


def test_default_deny_shapes() -> None:
    assert decide(authorizer(""), request()) == "A"  # no policy
    assert decide(authorizer(_ap("p", "  action: ALLOW")), request()) == "D"  # ALLOW without rules
    assert decide(authorizer(_ap("p", "  {}")), request()) == "D"
    assert decide(authorizer(_ap("p", "  rules: [{}]")), request()) == "A"
    assert decide(authorizer(_ap("p", "  action: DENY\n  rules: [{}]")), request()) == "D"
    assert decide(authorizer(_ap("p", "  action: AUDIT\n  rules: [{}]")), request()) == "A"


def test_rule_typo_is_a_load_error() -> None:
    from pymesh.errors import ConfigError

    with pytest.raises(ConfigError):
        load([Text(_ap("p", "  action: DENY\n  rule: [{}]"))])


def test_dry_run_never_changes_the_verdict() -> None:
    text = _ap("shadow", "  action: DENY\n  rules: [{}]", annotations='{istio.io/dry-run: "true"}')
    decision = authorizer(text).check(request(), "/")
    assert decision.allowed
    assert decision.shadow_denied is True


def test_selector_and_root_namespace() -> None:
    text = _ap("mesh", "  action: DENY\n  rules: [{to: [{operation: {paths: [/mesh]}}]}]", ns="istio-system")
    text += _ap("other-app", "  selector: {matchLabels: {app: other}}\n  action: DENY\n  rules: [{}]")
    text += _ap("other-ns", "  action: DENY\n  rules: [{}]", ns="bar")
    az = authorizer(text)
    assert decide(az, request("/mesh")) == "D"
    assert decide(az, request("/ok")) == "A"


# -- when keys ----------------------------------------------------------------------------------


def _when(key: str, values: str = "", not_values: str = "", action: str = "ALLOW") -> Authorizer:
    cond = f'{{key: "{key}"' + (f", values: {values}" if values else "") + (
        f", notValues: {not_values}" if not_values else "") + "}"
    return authorizer(_MESH.replace("PORT", "1") + _ap("w", f"  action: {action}\n  rules: [{{when: [{cond}]}}]"))


WHEN: list[tuple[str, str, str, dict[str, Any], Identity | None, str]] = [
    ("request.headers[X-Id]", "[a*]", "", {"headers": [("x-id", "abc")]}, None, "A"),
    ("request.headers[X-Id]", "[a*]", "[ab*]", {"headers": [("x-id", "abc")]}, None, "D"),
    ("request.headers[X-Id]", "", "[bad]", {}, None, "A"),
    ("source.ip", "[10.0.0.0/8]", "", {"source_ip": "10.9.9.9"}, None, "A"),
    ("source.ip", "[10.0.0.0/8]", "[10.9.0.0/16]", {"source_ip": "10.9.9.9"}, None, "D"),
    ("remote.ip", "[192.168.1.1]", "", {"source_ip": "192.168.1.1", "headers": [("x-forwarded-for", "1.2.3.4")]},
     None, "A"),
    ("remote.ip", "[1.2.3.4]", "", {"source_ip": "192.168.1.1", "headers": [("x-forwarded-for", "1.2.3.4")]},
     None, "D"),
    ("source.namespace", "[foo]", "", {"principal": "cluster.local/ns/foo/sa/x"}, None, "A"),
    ("source.namespace", "[foo]", "", {}, None, "D"),
    ("source.principal", "[cluster.local/ns/foo/sa/x]", "", {"principal": "old.domain/ns/foo/sa/x"}, None, "A"),
    ("source.principal", "[cluster.local/ns/foo/sa/x]", "", {"principal": "third.domain/ns/foo/sa/x"}, None, "D"),
    ("source.serviceAccount", "[x]", "", {"principal": "cluster.local/ns/foo/sa/x"}, None, "A"),
    ("source.serviceAccount", "[bar/x]", "", {"principal": "cluster.local/ns/foo/sa/x"}, None, "D"),
    ("source.trustDomain", "[cluster.*]", "", {"principal": "cluster.local/ns/foo/sa/x"}, None, "A"),
    ("request.auth.principal", "[https://idp/alice]", "", {}, identity(), "A"),
    ("request.auth.principal", "[https://idp/alice]", "", {}, None, "D"),
    ("request.auth.audiences", "[svc]", "", {}, identity(aud=["x", "svc"]), "A"),
    ("request.auth.audiences", "[svc]", "", {}, identity(aud=["x"]), "D"),
    ("request.auth.presenter", "[web]", "", {}, identity(azp="web"), "A"),
    ("request.auth.claims[role]", "[admin]", "", {}, identity(role="admin"), "A"),
    ("request.auth.claims[role]", "[admin]", "", {}, identity(role="user"), "D"),
    ("request.auth.claims[org][team]", "[core]", "", {}, identity(org={"team": "core"}), "A"),
    ("request.auth.claims[org][team]", "[core]", "", {}, identity(org={"team": ["x", "core"]}), "A"),
    ("request.auth.claims[org][team]", "[core]", "", {}, identity(org="core"), "D"),
    ("request.auth.claims[scope]", "[write]", "", {}, identity(scope="read write"), "A"),
    ("request.auth.claims[admin]", "[\"true\"]", "", {}, identity(admin=True), "A"),
    ("request.auth.claims[groups]", "", "[banned]", {}, identity(groups=["a", "banned"]), "D"),
    ("destination.ip", "[10.0.0.2]", "", {}, None, "A"),
    ("destination.port", "[\"8080\"]", "", {"port": 8080}, None, "A"),
    ("destination.port", "[\"8080\"]", "", {"port": 9090}, None, "D"),
    ("connection.sni", "[svc.example]", "", {"sni": "svc.example"}, None, "A"),
    ("connection.sni", "[svc.example]", "", {}, None, "D"),
]


@pytest.mark.parametrize(("key", "values", "not_values", "req", "ident", "expect"), WHEN)
def test_when_keys(key: str, values: str, not_values: str, req: Mapping[str, Any], ident: Identity | None,
                   expect: str) -> None:
    assert decide(_when(key, values, not_values), request(**req), identity=ident) == expect


def test_experimental_keys_fail_closed() -> None:
    allow = _when("experimental.envoy.filters.network.mysql_proxy[db.table]", "[\"[update]\"]")
    assert decide(allow, request()) == "D"
    assert any("fail closed" in w for w in allow.warnings)
    deny = _when("experimental.envoy.filters.network.mysql_proxy[db.table]", "[\"[update]\"]", action="DENY")
    assert decide(deny, request()) == "D"


def test_deny_claim_without_token_does_not_match() -> None:
    az = _when("request.auth.claims[role]", "[guest]", action="DENY")
    assert decide(az, request()) == "A"


def test_load_warnings() -> None:
    az = authorizer(_ap("p", "  action: DENY\n  rules: [{from: [{source: {namespaces: [bad]}}]}]"))
    assert any("plaintext" in w for w in az.warnings)


# -- CUSTOM over real HTTP ------------------------------------------------------------------------


def test_custom_provider_missing_or_several_deny() -> None:
    text = _MESH.replace("PORT", "1") + _ap("c", "  action: CUSTOM\n  provider: {name: nope}\n  rules: [{}]")
    az = authorizer(text)
    assert decide(az, request()) == "D"
    assert any("not in MeshConfig" in w for w in az.warnings)
    text = _MESH.replace("PORT", "1") + _ap("c", "  action: CUSTOM\n  provider: {name: tracing}\n  rules: [{}]")
    assert decide(authorizer(text), request()) == "D"
    both = _MESH.replace("PORT", "1") + _ap("c1", "  action: CUSTOM\n  provider: {name: authz}\n  rules: [{}]") + _ap(
        "c2", "  action: CUSTOM\n  provider: {name: tracing}\n  rules: [{}]")
    assert decide(authorizer(both), request()) == "D"


def test_ext_authz_over_http() -> None:
    seen: list[Received] = []

    def behaviour(r: Received) -> Reply:
        seen.append(r)
        if r.headers.get("x-user") == "ok":
            return Reply(200, (("x-authz", "yes"), ("x-other", "no")), b"")
        return Reply(401, (("x-reason", "who"),), b"nope")

    with Upstream("ext-authz").start() as upstream:
        upstream.respond(behaviour)
        text = _MESH.replace("PORT", str(upstream.port)).replace(
            "failOpen: false}", "failOpen: false, headersToUpstreamOnAllow: [x-authz], pathPrefix: /check}")
        text += _ap("c", "  action: CUSTOM\n  provider: {name: authz}\n  rules: [{to: [{operation: {paths: [/p*]}}]}]")
        az = authorizer(text)
        assert az.check(request("/other"), "/other").custom is None
        decision = az.check(request("/p"), "/p")
        assert decision.custom is not None
        assert decision.custom.provider is not None
        ext = ExtAuthz(decision.custom.provider)
        allowed = ext.check(request("/p", headers=[("x-user", "ok"), ("cookie", "secret")]), "/p", "q=1")
        assert allowed.allowed
        assert allowed.upstream_headers == (("x-authz", "yes"),)
        assert seen[-1].path == "/check/p?q=1"
        assert "cookie" not in seen[-1].headers
        denied = ext.check(request("/p", headers=[("x-user", "bad")]), "/p")
        assert not denied.allowed
        assert denied.denial is not None
        assert (denied.denial.status, denied.denial.body) == (401, b"nope")
        assert ("x-reason", "who") in denied.denial.headers
    down = ext.check(request("/p"), "/p")  # the authorizer is gone: fail closed
    assert not down.allowed
    assert down.denial is not None
    assert down.denial.status == 403


# -- legacy RBAC through the same engine ----------------------------------------------------------


def test_tutorial_rbac_service_viewer(conformance: Any) -> None:
    folder = conformance / "istio-tutorial"
    config = load([folder / "authorization-enable-rbac.yml", folder / "namespace-rbac-policy.yml"],
                  namespace="tutorial")
    for app, allowed in (("customer", "A"), ("preference", "A"), ("recommendation", "A"), ("other", "D")):
        snap = build(config, Workload(name=app, namespace="tutorial", labels={"app": app}, service_account=app))
        az = Authorizer(snap.local_policies.authorization, trust_domain=snap.trust_domain)
        assert decide(az, request(method="GET")) == allowed, app
        assert decide(az, request(method="POST")) == "D", app


def test_policies_helper_selects_by_label() -> None:
    authz, _, _ = policies(_ap("p", "  selector: {matchLabels: {app: svc}}\n  rules: [{}]"))
    assert [r.name for r in authz] == ["p"]


def test_ext_authz_async_and_fail_open() -> None:
    import asyncio

    with Upstream("ext-authz").start() as upstream:
        upstream.respond(Reply(403, (("x-why", "policy"),), b"denied by ext"))
        text = _MESH.replace("PORT", str(upstream.port)).replace("failOpen: false", "failOpen: true")
        text += _ap("c", "  action: CUSTOM\n  provider: {name: authz}\n  rules: [{}]")
        decision = authorizer(text).check(request(), "/")
        assert decision.custom is not None
        assert decision.custom.provider is not None
        ext = ExtAuthz(decision.custom.provider)
        result = asyncio.run(ext.check_async(request(headers=[("x-user", "a"), ("x-user", "b")]), "/"))
        assert not result.allowed
        assert result.denial is not None
        assert result.denial.body == b"denied by ext"
        assert upstream.received[-1].headers.get("x-user") in ("a", "b", "a, b", "a,b")
    assert ext.check(request(), "/").allowed  # failOpen: an unreachable authorizer lets the request through


def test_remote_ip_from_a_trusted_proxy() -> None:
    az = _when("remote.ip", "[1.2.3.4]")
    assert az.check(request(source_ip="10.0.0.9"), "/", remote_ip="1.2.3.4").allowed
    assert not az.check(request(source_ip="1.2.3.4"), "/", remote_ip="10.0.0.9").allowed
