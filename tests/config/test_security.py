"""security.istio.io models: decoding, Istio's validation rules, and the conformance corpus."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.config.decode import INVALID, Report, decode
from pymesh.config.load import Text
from pymesh.config.load import load as load_config
from pymesh.config.security import (
    KINDS,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
)

CORPUS = Path("/work/shared/conformance")
SPECS: dict[str, type[Any]] = {k.kind: k.spec for k in KINDS}


def load(tp: type[Any], text: str, namespace: str = "") -> tuple[Any, Report]:
    r = Report("t.yaml", 0)
    r.namespace = namespace
    node = yaml.compose(textwrap.dedent(text))
    assert node is not None
    spec = decode(tp, node, r, ("spec",))
    return spec, r


def errors(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "error"]


def warnings(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "warning"]


# -- KINDS -------------------------------------------------------------------------------------------


def test_kinds() -> None:
    assert {(k.group, k.kind, k.versions) for k in KINDS} == {
        ("security.istio.io", "PeerAuthentication", ("v1", "v1beta1")),
        ("security.istio.io", "RequestAuthentication", ("v1", "v1beta1")),
        ("security.istio.io", "AuthorizationPolicy", ("v1", "v1beta1")),
    }
    assert SPECS["AuthorizationPolicy"] is AuthorizationPolicy


# -- valid input, decoded values -----------------------------------------------------------------------


def test_peer_authentication_values() -> None:
    spec, r = load(PeerAuthentication, """
        selector: {matchLabels: {app: reviews}}
        mtls: {mode: STRICT}
        portLevelMtls:
          8080: {mode: DISABLE}
          "9090": {}
    """)
    assert not r.issues
    assert spec.selector.match_labels == {"app": "reviews"}
    assert spec.mode == "STRICT"
    assert {p: m.mode for p, m in spec.port_level_mtls.items()} == {8080: "DISABLE", 9090: "UNSET"}


def test_peer_authentication_defaults() -> None:
    spec, r = load(PeerAuthentication, "{}")
    assert not r.issues
    assert spec.selector is None
    assert spec.mtls is None
    assert spec.mode == "UNSET"
    assert spec.port_level_mtls == {}


def test_request_authentication_values() -> None:
    spec, r = load(RequestAuthentication, """
        selector: {matchLabels: {app: httpbin}}
        jwtRules:
        - issuer: testing@secure.istio.io
          audiences: [a, b]
          jwks_uri: https://example.com:8443/jwks.json
          fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
          fromParams: [token]
          fromCookies: [session]
          outputPayloadToHeader: x-payload
          forwardOriginalToken: true
          outputClaimToHeaders: [{header: x-sub, claim: sub}]
          timeout: 1.5s
          spaceDelimitedClaims: [roles]
          presence: REQUIRED
        - jwksUri: https://keys.local/jwks
    """)
    assert not r.issues
    first, second = spec.jwt_rules
    assert first.issuer == "testing@secure.istio.io"
    assert first.audiences == ("a", "b")
    assert first.jwks_uri == "https://example.com:8443/jwks.json"
    assert first.from_headers[0].name == "x-jwt"
    assert first.from_headers[0].prefix == "Bearer "
    assert first.from_params == ("token",)
    assert first.from_cookies == ("session",)
    assert first.output_claim_to_headers[0].header == "x-sub"
    assert first.output_claim_to_headers[0].claim == "sub"
    assert first.forward_original_token is True
    assert first.timeout == pytest.approx(1.5)
    assert first.timeout_seconds == pytest.approx(1.5)
    assert first.space_delimited_claims == ("roles",)
    assert first.presence == "REQUIRED"
    assert second.issuer == ""
    assert second.presence == "OPTIONAL"
    assert second.timeout is None
    assert second.timeout_seconds == 5.0
    assert second.forward_original_token is False


def test_inline_jwks_public_keys_load_quietly() -> None:
    jwks = (CORPUS / "jwt" / "jwks.json").read_text()
    spec, r = load(RequestAuthentication, f"jwtRules: [{{issuer: x, jwks: {json.dumps(jwks)}}}]")
    assert not r.issues
    assert json.loads(spec.jwt_rules[0].jwks)["keys"][0]["kty"] == "RSA"


def test_inline_jwks_with_private_key_warns() -> None:
    jwks = json.dumps({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, {"kty": "EC", "crv": "P-256", "x": "a",
                                                                        "y": "b", "d": "secret"}]})
    spec, r = load(RequestAuthentication, f"jwtRules: [{{issuer: x, jwks: {json.dumps(jwks)}}}]")
    assert spec is not INVALID
    assert not errors(r)
    assert warnings(r) == [("spec.jwtRules[0].jwks",
                            "jwks key at index 1 contains private key material; only public keys are used "
                            "for verification")]


def test_authorization_policy_values() -> None:
    spec, r = load(AuthorizationPolicy, """
        selector: {matchLabels: {app: customer}}
        rules:
        - from:
          - source: {principals: ["cluster.local/ns/tutorial/sa/customer"], serviceAccounts: []}
          - source: {serviceAccounts: ["tutorial/preference", "customer"], trustDomains: ["*.local"]}
          to:
          - operation: {methods: [GET], ports: ["8080"], paths: ["/api/{*}/items/{**}"]}
          when:
          - key: request.auth.claims[groups][admin]
            notValues: ["no"]
    """)
    assert not r.issues
    assert spec.action == "ALLOW"
    assert spec.provider is None
    (rule,) = spec.rules
    assert [s.principals for s in rule.sources] == [("cluster.local/ns/tutorial/sa/customer",), ()]
    assert rule.sources[1].service_accounts == ("tutorial/preference", "customer")
    assert rule.operations[0].ports == ("8080",)
    assert rule.when[0].key == "request.auth.claims[groups][admin]"
    assert rule.when[0].not_values == ("no",)
    assert rule.when[0].values == ()


def test_authorization_policy_empty_spec_is_allow_nothing() -> None:
    spec, r = load(AuthorizationPolicy, "{}")
    assert not r.issues
    assert spec.action == "ALLOW"
    assert spec.rules == ()


def test_custom_policy_with_provider() -> None:
    spec, r = load(AuthorizationPolicy, """
        action: CUSTOM
        provider: {name: ext-authz}
        rules:
        - to: [{operation: {paths: ["/admin/*"]}}]
          when: [{key: "request.headers[x-user]", values: ["*"]}]
    """)
    assert not r.issues
    assert spec.provider.name == "ext-authz"


def test_deny_all_with_empty_rule() -> None:
    spec, r = load(AuthorizationPolicy, "action: DENY\nrules: [{}]")
    assert not r.issues
    assert spec.rules[0].from_ == ()


def test_deny_with_only_http_fields_is_a_warning() -> None:
    spec, r = load(AuthorizationPolicy, """
        action: DENY
        rules:
        - to: [{operation: {methods: [POST]}}]
        - to: [{operation: {methods: [POST], ports: ["8080"]}}]
        - from: [{source: {requestPrincipals: ["*"]}}]
    """)
    assert spec is not INVALID
    assert not errors(r)
    assert [p for p, _ in warnings(r)] == ["spec.rules[0]", "spec.rules[2]"]
    assert "deny all traffic to TCP ports" in warnings(r)[0][1]


def test_values_that_can_never_match_as_written_are_warned_about() -> None:
    # A DENY using one of these fails open; Istio loads them too, so they are warnings.
    spec, r = load(AuthorizationPolicy, """
        action: DENY
        rules:
        - from: [{source: {principals: ["spiffe://cluster.local/ns/a/sa/b", "cluster.local/ns/a/sa/c"]}}]
          to: [{operation: {paths: ["/a*b", "/api/*", "*.json", "*", "/x/{*}/y", "/v*/"]}}]
    """)
    assert spec is not INVALID
    assert not errors(r)
    found = [(path, message) for path, message in warnings(r) if path != "spec.rules[0]"]  # the TCP-ports note
    assert [path for path, _ in found] == [
        "spec.rules[0].from[0].source.principals[0]",
        "spec.rules[0].to[0].operation.paths[0]",
        "spec.rules[0].to[0].operation.paths[5]",
    ]
    assert "written without 'spiffe://', e.g. 'cluster.local/ns/a/sa/b'" in found[0][1]
    assert "only matches a literal '*'" in found[1][1]


def test_selector_without_labels_warns() -> None:
    _, r = load(AuthorizationPolicy, "selector: {}")
    assert not errors(r)
    assert warnings(r) == [("spec.selector", "workload selector specified without labels")]


def test_target_ref_to_gateway() -> None:
    spec, r = load(AuthorizationPolicy, """
        targetRefs:
        - {group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}
        - {group: networking.istio.io, kind: ServiceEntry, name: ext}
        - {group: core, kind: Service, name: svc}
    """)
    assert not r.issues
    assert [t.kind for t in spec.target_refs] == ["Gateway", "ServiceEntry", "Service"]


# -- invalid input: exact path and a distinctive part of the message ----------------------------------

INVALID_CASES = [
    # PeerAuthentication
    pytest.param(PeerAuthentication, "mtls: {mode: strict}", "spec.mtls.mode", "did you mean 'STRICT'",
                 id="pa-mode-case"),
    pytest.param(PeerAuthentication, "selector: {matchLabels: {a: b}}\nportLevelMtls: {'-1': {mode: STRICT}}",
                 "spec.portLevelMtls", "not a port number", id="pa-port-negative"),
    pytest.param(PeerAuthentication, "selector: {matchLabels: {a: b}}\nportLevelMtls: {'65536': {}}",
                 "spec.portLevelMtls", "between 1-65535", id="pa-port-high"),
    pytest.param(PeerAuthentication, "selector: {}\nportLevelMtls: {'80': {mode: STRICT}}",
                 "spec.portLevelMtls", "requires selector", id="pa-port-level-empty-selector"),
    pytest.param(PeerAuthentication, "selector: {matchLabels: {'a*': b}}", "spec.selector.matchLabels",
                 "invalid label key", id="pa-selector-wildcard"),
    pytest.param(PeerAuthentication, "mtls: {mode: STRICT, extra: 1}", "spec.mtls.extra", "unknown field",
                 id="pa-unknown-field"),
    # RequestAuthentication
    pytest.param(RequestAuthentication, "jwtRules: [{audiences: [a]}]", "spec.jwtRules[0].issuer",
                 "issuer or jwksUri must be non-empty", id="ra-no-issuer-or-uri"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: '', jwksUri: 'https://a/k'}]",
                 "spec.jwtRules[0].issuer", "non-empty string", id="ra-empty-issuer"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, jwksUri: 'ftp://a/k'}]",
                 "spec.jwtRules[0].jwksUri", "scheme http:// or https://", id="ra-uri-scheme"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, jwksUri: 'https://a:port/k'}]",
                 "spec.jwtRules[0].jwksUri", "not a valid URL", id="ra-uri-port"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, jwks: '{not json'}]",
                 "spec.jwtRules[0].jwks", "not valid JSON", id="ra-jwks-json"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, jwks: '{\"kty\": \"RSA\"}'}]",
                 "spec.jwtRules[0].jwks", '"keys" list', id="ra-jwks-no-keys"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, jwks: '{\"keys\": [{\"n\": \"x\"}]}'}]",
                 "spec.jwtRules[0].jwks", "unsupported kty", id="ra-jwks-no-kty"),
    pytest.param(RequestAuthentication,
                 "jwtRules: [{issuer: a, jwks: '{\"keys\": [{\"kty\": \"EC\", \"x\": \"1\"}]}'}]",
                 "spec.jwtRules[0].jwks", "EC key at index 0 lacks crv, y", id="ra-jwks-ec-incomplete"),
    pytest.param(RequestAuthentication,
                 "jwtRules: [{issuer: a, jwksUri: 'https://a/k', jwks: '{\"keys\": []}'}]",
                 "spec.jwtRules[0].jwks", "only one of jwks or jwksUri", id="ra-jwks-and-uri"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, timeout: 0.5ms}]", "spec.jwtRules[0].timeout",
                 "at least 1ms", id="ra-timeout-short"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: 'x y', claim: c}]}]",
                 "spec.jwtRules[0].outputClaimToHeaders[0].header", "not a valid header name", id="ra-header-space"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: h}]}]",
                 "spec.jwtRules[0].outputClaimToHeaders[0].claim", "missing required field", id="ra-claim-missing"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, presence: required}]", "spec.jwtRules[0].presence",
                 "did you mean 'REQUIRED'", id="ra-presence-case"),
    pytest.param(RequestAuthentication, "targetRef: {kind: Deployment, group: apps, name: x}", "spec.targetRef.kind",
                 "targetRef must be to a Service", id="ra-target-kind-not-allowed"),
    pytest.param(RequestAuthentication, "targetRef: {kind: Service, group: 'Bad.Group', name: x}",
                 "spec.targetRef.group", "not a DNS subdomain", id="ra-target-group-case"),
    pytest.param(RequestAuthentication, "selector: {matchLabels: {a: b}}\ntargetRefs: [{kind: Service, name: x}]",
                 "spec.targetRefs", "only one of targetRefs or selector", id="ra-selector-and-target-refs"),
    pytest.param(RequestAuthentication, "jwtRules: [{issuer: a, fromHeaders: [{name: x, prefx: y}]}]",
                 "spec.jwtRules[0].fromHeaders[0].prefx", "did you mean 'prefix'", id="ra-unknown-field"),
    # AuthorizationPolicy
    pytest.param(AuthorizationPolicy, "action: deny", "spec.action", "did you mean 'DENY'", id="ap-action-case"),
    pytest.param(AuthorizationPolicy, "action: DENY", "spec.rules", "DENY action without `rules`",
                 id="ap-deny-no-rules"),
    pytest.param(AuthorizationPolicy, "action: CUSTOM\nrules: [{}]", "spec.provider",
                 "`provider.name` must not be empty", id="ap-custom-no-provider"),
    pytest.param(AuthorizationPolicy, "action: CUSTOM\nprovider: {}\nrules: [{}]", "spec.provider",
                 "`provider.name` must not be empty", id="ap-custom-empty-provider"),
    pytest.param(AuthorizationPolicy, "action: CUSTOM\nprovider: {name: x}", "spec.rules",
                 "CUSTOM action without `rules`", id="ap-custom-no-rules"),
    pytest.param(AuthorizationPolicy, "action: AUDIT\nprovider: {name: x}\nrules: [{}]", "spec.provider",
                 "non CUSTOM action, found AUDIT", id="ap-provider-not-custom"),
    pytest.param(AuthorizationPolicy, "provider: {name: x}\nrules: [{}]", "spec.provider",
                 "non CUSTOM action, found ALLOW", id="ap-provider-default-action"),
    pytest.param(AuthorizationPolicy,
                 "action: CUSTOM\nprovider: {name: x}\nrules: [{from: [{source: {principals: [a]}}]}]",
                 "spec.rules[0].from[0].source.principals", "not supported with CUSTOM", id="ap-custom-principals"),
    pytest.param(AuthorizationPolicy,
                 "action: CUSTOM\nprovider: {name: x}\nrules: [{from: [{source: {notNamespaces: [a]}}]}]",
                 "spec.rules[0].from[0].source.notNamespaces", "not supported with CUSTOM", id="ap-custom-namespaces"),
    pytest.param(AuthorizationPolicy,
                 "action: CUSTOM\nprovider: {name: x}\nrules: [{from: [{source: {requestPrincipals: ['*']}}]}]",
                 "spec.rules[0].from[0].source.requestPrincipals", "not supported with CUSTOM",
                 id="ap-custom-request-principals"),
    pytest.param(AuthorizationPolicy,
                 "action: CUSTOM\nprovider: {name: x}\nrules: [{when: [{key: 'request.auth.claims[a]', values: [b]}]}]",
                 "spec.rules[0].when[0].key", "not supported with CUSTOM", id="ap-custom-request-auth"),
    pytest.param(AuthorizationPolicy, "rules: [{from: []}]", "spec.rules[0].from", "`from` must not be empty",
                 id="ap-from-empty-list"),
    pytest.param(AuthorizationPolicy, "rules: [{to: []}]", "spec.rules[0].to", "`to` must not be empty",
                 id="ap-to-empty-list"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{}]}]", "spec.rules[0].from[0].source",
                 "`from.source` must not be nil", id="ap-from-no-source"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {principals: []}}]}]", "spec.rules[0].from[0].source",
                 "`from.source` must not be empty", id="ap-source-empty"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: null}]}]", "spec.rules[0].to[0].operation",
                 "`to.operation` must not be nil", id="ap-to-null-operation"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {}}]}]", "spec.rules[0].to[0].operation",
                 "`to.operation` must not be empty", id="ap-operation-empty"),
    pytest.param(AuthorizationPolicy, "rules: [null]", "spec.rules[0]", "list item is null", id="ap-null-rule"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {principals: ['']}}]}]",
                 "spec.rules[0].from[0].source.principals[0]", "empty value not allowed", id="ap-empty-principal"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {ipBlocks: ['1.2.3.4/33']}}]}]",
                 "spec.rules[0].from[0].source.ipBlocks[0]", "bad CIDR range", id="ap-bad-cidr"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {notRemoteIpBlocks: ['1.2.3']}}]}]",
                 "spec.rules[0].from[0].source.notRemoteIpBlocks[0]", "bad IP address", id="ap-bad-ip"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {serviceAccounts: ['ns/*']}}]}]",
                 "spec.rules[0].from[0].source.serviceAccounts[0]", "wildcard not allowed", id="ap-sa-wildcard"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {serviceAccounts: ['a/b/c']}}]}]",
                 "spec.rules[0].from[0].source.serviceAccounts[0]", "'namespace/serviceAccount'", id="ap-sa-slashes"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {notServiceAccounts: ['/sa']}}]}]",
                 "spec.rules[0].from[0].source.notServiceAccounts[0]", "'namespace/serviceAccount'",
                 id="ap-sa-empty-ns"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {serviceAccounts: "
                 + json.dumps([f"sa{i}" for i in range(17)]) + "}}]}]",
                 "spec.rules[0].from[0].source.serviceAccounts", "more than 16", id="ap-sa-too-many"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {serviceAccounts: [sa], notPrincipals: [p]}}]}]",
                 "spec.rules[0].from[0].source.serviceAccounts", "cannot set serviceAccounts with namespaces",
                 id="ap-sa-with-not-principals"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {trustDomains: ['a*b']}}]}]",
                 "spec.rules[0].from[0].source.trustDomains[0]", "only allowed at the start or end",
                 id="ap-trust-domain-middle-wildcard"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {notTrustDomains: ['*a*']}}]}]",
                 "spec.rules[0].from[0].source.notTrustDomains[0]", "at most one wildcard", id="ap-trust-domain-two"),
    pytest.param(AuthorizationPolicy, "rules: [{from: [{source: {trustDomains: ['td/ns']}}]}]",
                 "spec.rules[0].from[0].source.trustDomains[0]", "must not contain '/'", id="ap-trust-domain-slash"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {ports: ['65536']}}]}]",
                 "spec.rules[0].to[0].operation.ports[0]", "bad port", id="ap-port-high"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {notPorts: ['http']}}]}]",
                 "spec.rules[0].to[0].operation.notPorts[0]", "bad port", id="ap-port-name"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {ports: [80]}}]}]",
                 "spec.rules[0].to[0].operation.ports[0]", "expected a string", id="ap-port-not-string"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {methods: ['']}}]}]",
                 "spec.rules[0].to[0].operation.methods[0]", "empty value not allowed", id="ap-empty-method"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {paths: ['/{**}/{*}']}}]}]",
                 "spec.rules[0].to[0].operation.paths[0]", "{**} must be the last operator", id="ap-path-any-not-last"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {notPaths: ['/{name}/x']}}]}]",
                 "spec.rules[0].to[0].operation.notPaths[0]", "beyond a supported path template",
                 id="ap-path-named-var"),
    pytest.param(AuthorizationPolicy, "rules: [{to: [{operation: {paths: ['/{*}/a*']}}]}]",
                 "spec.rules[0].to[0].operation.paths[0]", "not a valid literal", id="ap-path-glob-in-template"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: 'destination.labels[app]', values: [a]}]}]",
                 "spec.rules[0].when[0].key", "replaced by the workload selector", id="ap-when-dest-labels"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: destination.namespace, values: [a]}]}]",
                 "spec.rules[0].when[0].key", "replaced by the metadata.namespace", id="ap-when-dest-namespace"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: destination.user, values: [a]}]}]",
                 "spec.rules[0].when[0].key", "only supported in v1alpha1", id="ap-when-dest-user"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: source.ipaddr, values: [a]}]}]",
                 "spec.rules[0].when[0].key", "unknown attribute", id="ap-when-unknown"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: 'request.headers[]', values: [a]}]}]",
                 "spec.rules[0].when[0].key", "should have format a[b]", id="ap-when-header-no-name"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: request.auth.claims, values: [a]}]}]",
                 "spec.rules[0].when[0].key", "should have format a[b]", id="ap-when-claims-no-name"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: '', values: [a]}]}]",
                 "spec.rules[0].when[0].key", "`key` must not be empty", id="ap-when-empty-key"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{values: [a]}]}]",
                 "spec.rules[0].when[0].key", "missing required field 'key'", id="ap-when-no-key"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: source.principal}]}]",
                 "spec.rules[0].when[0]", "at least one of `values` or `notValues`", id="ap-when-no-values"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: source.ip, notValues: ['10.0.0.0/8', 'x']}]}]",
                 "spec.rules[0].when[0].notValues[1]", "bad IP address", id="ap-when-bad-ip"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: destination.port, values: ['99999']}]}]",
                 "spec.rules[0].when[0].values[0]", "bad port", id="ap-when-bad-port"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: source.serviceAccount, values: ['a/b/c']}]}]",
                 "spec.rules[0].when[0].values[0]", "'namespace/serviceAccount'", id="ap-when-bad-sa"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: source.trustDomain, values: ['a*b']}]}]",
                 "spec.rules[0].when[0].values[0]", "only allowed at the start or end", id="ap-when-bad-td"),
    pytest.param(AuthorizationPolicy, "rules: [{when: [{key: connection.sni, values: ['']}]}]",
                 "spec.rules[0].when[0].values[0]", "empty value not allowed", id="ap-when-empty-value"),
    pytest.param(AuthorizationPolicy, "targetRef: {kind: Service, name: a}\ntargetRefs: [{kind: Service, name: b}]",
                 "spec.targetRef", "only one of targetRefs or selector", id="ap-target-ref-and-refs"),
    pytest.param(AuthorizationPolicy, "targetRef: {kind: Service, name: ''}", "spec.targetRef.name",
                 "must not be empty", id="ap-target-empty-name"),
    pytest.param(AuthorizationPolicy, "targetRefs: " + json.dumps([{"kind": "Service", "name": f"s{i}"}
                                                                   for i in range(17)]),
                 "spec.targetRefs", "at most 16", id="ap-target-refs-too-many"),
]


@pytest.mark.parametrize(("tp", "text", "path", "fragment"), INVALID_CASES)
def test_invalid(tp: type[Any], text: str, path: str, fragment: str) -> None:
    _, r = load(tp, text)
    assert r.failed, r.issues
    found = errors(r)
    assert found[0][0] == path, found
    assert fragment in found[0][1], found


def test_cross_namespace_target_ref() -> None:
    _, r = load(RequestAuthentication, "targetRef: {kind: Service, name: a, namespace: other}", namespace="mine")
    assert errors(r) == [("spec.targetRef.namespace", "cross namespace referencing is not allowed")]


# -- the conformance corpus --------------------------------------------------------------------------


def _documents(path: Path) -> list[tuple[int, str, yaml.Node]]:
    out: list[tuple[int, str, yaml.Node]] = []
    for index, doc in enumerate(yaml.compose_all(path.read_text())):
        if not isinstance(doc, yaml.MappingNode):
            continue
        mapping = {k.value: v for k, v in doc.value}
        kind = mapping.get("kind")
        api = mapping.get("apiVersion")
        if kind is None or api is None or not str(api.value).startswith("security.istio.io/"):
            continue
        if kind.value not in SPECS:
            continue
        spec = mapping.get("spec")
        if spec is None or (isinstance(spec, yaml.ScalarNode) and spec.tag == "tag:yaml.org,2002:null"):
            spec = yaml.compose("{}")
        assert spec is not None
        out.append((index, str(kind.value), spec))
    return out


def _valid_files() -> list[Path]:
    files = [p for d in ("bookinfo", "istio-tutorial", "legacy") for p in sorted((CORPUS / d).iterdir())]
    files += sorted((CORPUS / "validation").glob("*-valid.yaml"))
    return [p for p in files if p.suffix in (".yaml", ".yml") and _documents(p)]


VALID_FILES = _valid_files()
INVALID_FILES = [CORPUS / "validation" / f"{n}-invalid.yaml" for n in ("authz", "peerauth", "reqauth")]


def test_corpus_has_the_expected_security_files() -> None:
    names = {p.name for p in VALID_FILES}
    assert {"authz-valid.yaml", "peerauth-valid.yaml", "reqauth-valid.yaml", "enable-mtls.yml",
            "disable-mtls.yml", "authorization-policy-deny-all.yaml", "authorization-policy-jwt.yaml"} <= names


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_valid(path: Path) -> None:
    for index, kind, spec in _documents(path):
        r = Report(str(path), index)
        value = decode(SPECS[kind], spec, r, ("spec",))
        assert value is not INVALID, r.issues
        assert not errors(r), (index, r.issues)


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.name)
def test_corpus_invalid(path: Path) -> None:
    docs = _documents(path)
    assert docs
    for index, kind, spec in docs:
        r = Report(str(path), index)
        r.namespace = "default"
        decode(SPECS[kind], spec, r, ("spec",))
        assert errors(r), f"document {index} of {path.name} was accepted"


def test_corpus_full_documents_decode_to_values() -> None:
    (_, _, node), _ = _documents(CORPUS / "validation" / "authz-valid.yaml")
    r = Report("authz-valid.yaml", 0)
    policy = decode(AuthorizationPolicy, node, r, ("spec",))
    source = policy.rules[0].sources[0]
    assert source.trust_domains == ("cluster.local", "cluster-prefix-*", "*-suffix-cluster", "*")
    assert policy.rules[0].operations[0].not_paths[-1] == "/{**}/not-path/template"
    assert len(policy.rules[0].when) == 15
    ((_, _, node),) = _documents(CORPUS / "validation" / "reqauth-valid.yaml")
    ra = decode(RequestAuthentication, node, Report("reqauth-valid.yaml", 0), ("spec",))
    assert ra.jwt_rules[0].presence == "REQUIRED"
    assert ra.target_refs[0].kind == "Service"


@pytest.mark.parametrize(("uri", "warning"), [
    ("http://keys.example/jwks", "is plain http"),
    ("https://169.254.169.254/latest/meta-data/", "link-local address (cloud instance metadata)"),
    ("https://[fd00:ec2::254]/jwks", "link-local address (cloud instance metadata)"),
    ("https://metadata.google.internal/jwks", "cloud metadata host"),
    ("https://127.0.0.1:8443/jwks", None),  # loopback: development setups use it
    ("https://keys.example/jwks", None),
])
def test_jwks_uri_targets_worth_a_second_look_are_warned_about(uri: str, warning: str | None) -> None:
    text = f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: ns}}
spec:
  jwtRules: [{{issuer: iss, jwksUri: "{uri}"}}]
"""
    config = load_config([Text(text)])
    found = [w.message for w in config.warnings if w.path == "spec.jwtRules[0].jwksUri"]
    if warning is None:
        assert found == []
    else:
        assert len(found) == 1
        assert warning in found[0]
