"""The authorization table: Istio's documented examples and the bulletins' bypass attempts.

Each case is evaluated through the engines (``paths.normalize`` then ``Authorizer.check``)
over an ``InboundRequest``, under each normalization level. Expected verdicts are written as
four letters for NONE / BASE / MERGE_SLASHES / DECODE_AND_MERGE_SLASHES: ``A`` allowed, ``D``
denied with 403 ``RBAC: access denied``, ``X`` refused with 400 before any policy.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymesh.inbound import paths
from pymesh.inbound.authz import Authorizer
from pymesh.inbound.paths import Mode
from pymesh.inbound.request import Denial

from .helpers import MODES, authorizer, decide, request


def _ap(name: str, body: str, ns: str = "foo") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
{body}
---"""


POLICIES: dict[str, str] = {
    # ISTIO-SECURITY-2021-005's bypass-prone shapes and the recommended one.
    "deny-admin": _ap("deny-admin", """
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin", "/admin/*"]}}]}]"""),
    "allow-not-admin": _ap("allow-not-admin", """
  action: ALLOW
  rules: [{to: [{operation: {notPaths: ["/admin", "/admin/*"]}}]}]"""),
    "allow-public": _ap("allow-public", """
  action: ALLOW
  rules: [{to: [{operation: {paths: ["/public", "/public/*"]}}]}]"""),
    # ISTIO-SECURITY-2021-008: hosts, case and ports.
    "deny-host": _ap("deny-host", """
  action: DENY
  rules: [{to: [{operation: {hosts: ["secret.com"]}}]}]"""),
    "allow-host": _ap("allow-host", """
  action: ALLOW
  rules: [{to: [{operation: {hosts: ["www.example.com", "api.example.com:8443", "*.internal"]}}]}]"""),
    # Istio's "allow-nothing", "deny-all", "allow-all" (concepts/security).
    "allow-nothing": _ap("allow-nothing", "  {}"),
    "deny-all": _ap("deny-all", "  action: DENY\n  rules: [{}]"),
    "allow-all": _ap("allow-all", "  rules: [{}]"),
    "deny-with-allow-all": _ap("allow-all", "  rules: [{}]") + _ap("deny-post", """
  action: DENY
  rules: [{to: [{operation: {methods: ["POST"]}}]}]"""),
    # The AuthorizationPolicy reference examples.
    "reference-allow": _ap("httpbin", """
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    - source: {namespaces: ["test"]}
    to:
    - operation: {methods: ["GET"], paths: ["/info*"]}
    - operation: {methods: ["POST"], paths: ["/data"]}
    when:
    - {key: "request.auth.claims[iss]", values: ["https://accounts.google.com"]}"""),
    "reference-deny-dev": _ap("httpbin", """
  action: DENY
  rules:
  - from: [{source: {notNamespaces: ["foo"]}}]
    to: [{operation: {methods: ["POST"]}}]"""),
    "methods-get": _ap("get-only", """
  rules: [{to: [{operation: {methods: ["GET"]}}]}]"""),
    "principal": _ap("p", """
  rules: [{from: [{source: {principals: ["cluster.local/ns/foo/sa/bar"]}}]}]"""),
    "principal-prefix": _ap("p", """
  rules: [{from: [{source: {principals: ["cluster.local/ns/foo/*"]}}]}]"""),
    "principal-suffix-deny": _ap("p", """
  action: DENY
  rules: [{from: [{source: {principals: ["*/sa/bar"]}}]}]"""),
    "principal-any": _ap("p", """
  rules: [{from: [{source: {principals: ["*"]}}]}]"""),
    "service-account-dots": _ap("p", """
  rules: [{from: [{source: {serviceAccounts: ["foo/a.b"]}}]}]"""),
    "allow-not-namespace": _ap("p", """
  rules: [{from: [{source: {notNamespaces: ["bad"]}}]}]"""),
    "deny-header": _ap("h", """
  action: DENY
  rules: [{when: [{key: "request.headers[x-role]", values: ["evil"]}]}]"""),
    "allow-header": _ap("h", """
  rules: [{when: [{key: "request.headers[x-role]", values: ["admin"]}]}]"""),
    "ip-blocks": _ap("ip", """
  rules: [{from: [{source: {ipBlocks: ["10.1.0.0/16"], notIpBlocks: ["10.1.2.3"]}}]}]"""),
    "ports": _ap("ports", """
  rules: [{to: [{operation: {ports: ["8080"], notPaths: ["/private*"]}}]}]"""),
    "template": _ap("tpl", """
  action: DENY
  rules: [{to: [{operation: {paths: ["/users/{*}/secret", "/files/{**}/raw"]}}]}]"""),
}


@dataclass(frozen=True)
class Case:
    policy: str
    path: str
    expect: str  # NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES
    request: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _all(letter: str) -> str:
    return letter * 4


# (path, expected for DENY /admin* and for ALLOW notPaths /admin*: the same by construction)
ADMIN_BYPASS: list[tuple[str, str, str]] = [
    ("/admin", "DDDD", "the plain path"),
    ("/admin/", "DDDD", "trailing slash"),
    ("/admin/users", "DDDD", "sub-path"),
    ("/public", "AAAA", "an unrelated path"),
    ("/admin/../public", "DAAA", "dots leaving /admin"),
    ("/admin/..", "DAAA", "dots leaving /admin to the root"),
    ("/public/../admin", "ADDD", "/admin/../ style traversal"),
    ("/x/../admin", "ADDD", "traversal from a sibling"),
    ("/./admin", "ADDD", "a dot segment"),
    ("/public/./../admin", "ADDD", "dot then dot-dot"),
    ("/public/%2e%2e/admin", "ADDD", "encoded dots"),
    ("/public/%2E%2E/admin", "ADDD", "encoded dots, upper case"),
    ("/public/.%2e/admin", "ADDD", "half-encoded dots"),
    ("/%2e%2e/admin", "ADDD", "encoded dots above the root"),
    ("/%61dmin", "ADDD", "an encoded unreserved letter"),
    ("/adm%69n/x", "ADDD", "an encoded letter inside"),
    ("//admin", "AADD", "a doubled slash"),
    ("///admin///", "AADD", "many slashes"),
    ("/public//../admin", "AAAA", "the dot-dot eats the empty segment: /public/admin"),
    ("/%2Fadmin", "AAAD", "an escaped slash"),
    ("/%2fadmin", "AAAD", "an escaped slash, lower case"),
    ("/admin%2F", "AAAD", "a trailing escaped slash"),
    ("/admin%2Fx", "AAAD", "an escaped slash inside"),
    ("/public%2F..%2Fadmin", "AAAD", "escaped-slash traversal"),
    ("/admin%5C", "AAAD", "an escaped backslash"),
    ("/%5Cadmin", "AAAD", "a leading escaped backslash"),
    ("/public\\..\\admin", "ADDD", "backslash traversal"),
    ("/\\admin", "AADD", "slash backslash"),
    ("/admin#frag", "DDDD", "a fragment (CVE-2021-39156)"),
    ("/admin#/../public", "DDDD", "a fragment hiding traversal"),
    ("/public#/../admin", "AAAA", "the fragment is cut before normalizing"),
    ("/admin?x=1", "DDDD", "a query"),
    ("/admin?/../public", "DDDD", "a query hiding traversal"),
    ("/admin;x=y", "DDDD", "path parameters (pymesh contract section 3)"),
    ("/admin;/users", "DDDD", "an empty parameter"),
    ("/admin;x=y/users", "DDDD", "parameters on an inner segment"),
    ("/public/..;/admin", "DDDD", "Tomcat-style ..; traversal"),
    ("/ADMIN", "AAAA", "case is not normalized (the app routes case-sensitively too)"),
    ("/Admin", "AAAA", "mixed case"),
    ("/%252e%252e/admin", "AAAA", "double encoding is never decoded"),
    ("/%c0%ae%c0%ae/admin", "AAAA", "overlong UTF-8 is never decoded"),
    ("/0x2e0x2e/admin", "AAAA", "hex literals"),
    ("/.../admin", "AAAA", "three dots are a name"),
    ("/admin%00", "XXXX", "NUL is refused"),
    ("/admin\x01", "XXXX", "a control character is refused"),
]

# ALLOW paths /public*: what each level lets through.
PUBLIC: list[tuple[str, str]] = [
    ("/public", "AAAA"),
    ("/public/doc", "AAAA"),
    ("/public/../admin", "ADDD"),
    ("/public/%2e%2e/admin", "ADDD"),
    ("/public%2F..%2Fadmin", "DDDD"),
    ("//public", "DDAA"),
    ("/%70ublic", "DAAA"),
    ("/public#x", "AAAA"),
    ("/admin", "DDDD"),
    ("/PUBLIC", "DDDD"),
]

HOSTS: list[tuple[str, str, str]] = [
    ("deny-host", "secret.com", "D"),
    ("deny-host", "Secret.com", "D"),
    ("deny-host", "SECRET.COM", "D"),
    ("deny-host", "secret.com:80", "D"),
    ("deny-host", "secret.com.", "D"),
    ("deny-host", "SECRET.COM.:8080", "D"),
    ("deny-host", "other.com", "A"),
    ("deny-host", "secret.com.evil", "A"),
    ("allow-host", "www.example.com", "A"),
    ("allow-host", "WWW.Example.COM:80", "A"),
    ("allow-host", "www.example.com.", "A"),
    ("allow-host", "api.example.com:8443", "A"),
    ("allow-host", "api.example.com", "D"),
    ("allow-host", "api.example.com:9999", "D"),
    ("allow-host", "db.internal", "A"),
    ("allow-host", "evil.com", "D"),
]

OTHERS: list[Case] = [
    Case("allow-nothing", "/", "DDDD", note="spec: {} denies everything"),
    Case("deny-all", "/anything", "DDDD"),
    Case("allow-all", "/anything", "AAAA"),
    Case("deny-with-allow-all", "/x", "AAAA", {"method": "GET"}),
    Case("deny-with-allow-all", "/x", "DDDD", {"method": "POST"}, "DENY wins over allow-all"),
    Case("methods-get", "/", "AAAA", {"method": "GET"}),
    Case("methods-get", "/", "DDDD", {"method": "get"}, "methods are case-sensitive"),
    Case("methods-get", "/", "DDDD", {"method": "POST"}),
    Case("principal", "/", "AAAA", {"principal": "cluster.local/ns/foo/sa/bar"}),
    Case("principal", "/", "DDDD", {"principal": "cluster.local/ns/foo/sa/barx"}),
    Case("principal", "/", "DDDD", {}, "plaintext has no principal"),
    Case("principal", "/", "DDDD", {"principal": "other.domain/ns/foo/sa/bar"}, "other trust domain"),
    Case("principal-prefix", "/", "AAAA", {"principal": "cluster.local/ns/foo/sa/x"}),
    Case("principal-prefix", "/", "DDDD", {"principal": "cluster.local/ns/foobar/sa/x"}),
    Case("principal-suffix-deny", "/", "DDDD", {"principal": "cluster.local/ns/a/sa/bar"}),
    Case("principal-suffix-deny", "/", "AAAA", {"principal": "cluster.local/ns/a/sa/baz"}),
    Case("principal-any", "/", "AAAA", {"principal": "cluster.local/ns/a/sa/b"}),
    Case("principal-any", "/", "DDDD", {}, "* needs an authenticated peer"),
    Case("service-account-dots", "/", "AAAA", {"principal": "cluster.local/ns/foo/sa/a.b"}),
    Case("service-account-dots", "/", "DDDD", {"principal": "cluster.local/ns/foo/sa/aXb"}, "CVE-2026-39350"),
    Case("allow-not-namespace", "/", "AAAA", {"principal": "cluster.local/ns/good/sa/x"}),
    Case("allow-not-namespace", "/", "DDDD", {"principal": "cluster.local/ns/bad/sa/x"}),
    Case("allow-not-namespace", "/", "DDDD", {}, "plaintext cannot pass a negative identity match"),
    Case("deny-header", "/", "AAAA", {"headers": [("x-role", "good")]}),
    Case("deny-header", "/", "DDDD", {"headers": [("x-role", "good"), ("x-role", "evil")]}, "CVE-2026-26308"),
    Case("deny-header", "/", "DDDD", {"headers": [("x-role", "good,evil")]}, "a comma-joined value"),
    Case("deny-header", "/", "DDDD", {"headers": [("X-Role", "evil")]}),
    Case("deny-header", "/", "DDDD", {"headers": [("x-role", "evil ")]}, "untrimmed whitespace (CVE-2019-18802)"),
    Case("allow-header", "/", "AAAA", {"headers": [("x-role", "admin")]}),
    Case("allow-header", "/", "DDDD", {"headers": [("x-role", "admin"), ("x-role", "user")]}, "every value"),
    Case("allow-header", "/", "DDDD", {"headers": [("x-role", "admin,user")]}),
    Case("allow-header", "/", "DDDD", {}),
    Case("ip-blocks", "/", "AAAA", {"source_ip": "10.1.9.9"}),
    Case("ip-blocks", "/", "DDDD", {"source_ip": "10.1.2.3"}),
    Case("ip-blocks", "/", "DDDD", {"source_ip": "10.2.0.1"}),
    Case("ip-blocks", "/", "AAAA", {"source_ip": "::ffff:10.1.0.7"}, "IPv4-mapped IPv6"),
    Case("ports", "/ok", "AAAA", {"port": 8080}),
    Case("ports", "/ok", "DDDD", {"port": 9090}),
    Case("ports", "/private/x", "DDDD", {"port": 8080}),
    Case("ports", "/private;x", "DDDD", {"port": 8080}, "notPaths with parameters"),
    Case("ports", "//private", "AADD", {"port": 8080}),
    Case("template", "/users/bob/secret", "DDDD"),
    Case("template", "/users/bob/x/secret", "AAAA"),
    Case("template", "/users//secret", "AAAA", note="{*} needs a non-empty segment"),
    Case("template", "/files/a/b/raw", "DDDD"),
    Case("template", "/files/a/../b/raw", "DDDD"),
    Case("reference-allow", "/info/x", "AAAA",
         {"principal": "cluster.local/ns/default/sa/sleep", "method": "GET"}, "needs the iss claim: see test_authz"),
    Case("reference-deny-dev", "/", "DDDD", {"method": "POST", "principal": "cluster.local/ns/dev/sa/x"}),
    Case("reference-deny-dev", "/", "AAAA", {"method": "POST", "principal": "cluster.local/ns/foo/sa/x"}),
    Case("reference-deny-dev", "/", "AAAA", {"method": "GET", "principal": "cluster.local/ns/dev/sa/x"}),
    Case("reference-deny-dev", "/", "DDDD", {"method": "POST"}, "plaintext is outside foo"),
]


def _cases() -> list[Any]:
    out: list[Any] = []
    for policy in ("deny-admin", "allow-not-admin"):
        for path, expect, note in ADMIN_BYPASS:
            out.append(pytest.param(Case(policy, path, expect, note=note), id=f"{policy}:{path!r}"))
    for path, expect in PUBLIC:
        out.append(pytest.param(Case("allow-public", path, expect), id=f"allow-public:{path!r}"))
    for policy, host, letter in HOSTS:
        out.append(pytest.param(Case(policy, "/", _all(letter), {"host": host}), id=f"{policy}:{host}"))
    for i, case in enumerate(OTHERS):
        out.append(pytest.param(case, id=f"{case.policy}:{i}"))
    return out


CASES = _cases()
_COMPILED: dict[str, Authorizer] = {}


def _authorizer(policy: str) -> Authorizer:
    if policy not in _COMPILED:
        _COMPILED[policy] = authorizer(POLICIES[policy])
    return _COMPILED[policy]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 80


@pytest.mark.parametrize("case", CASES)
def test_case(case: Case) -> None:
    az = _authorizer(case.policy)
    req = request(case.path, **case.request)
    if case.policy == "reference-allow":  # its `when` needs a token: without one it denies
        assert "".join(decide(az, req, mode) for mode in MODES) == "DDDD"
        return
    got = "".join(decide(az, req, mode) for mode in MODES)
    assert got == case.expect, f"{case.note}: {dict(zip(MODES, got, strict=True))}"


_PIECES = st.lists(st.sampled_from(["/", "admin", "public", ".", "..", "%2e", "%2E", "%2F", "%5C", "\\", ";x",
                                    "%61", "dmin", "a", "%25", "#", "?", "//"]), max_size=10)


@settings(max_examples=400, deadline=None)
@given(_PIECES, st.sampled_from(["BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]))
def test_allowed_paths_never_reach_admin(pieces: list[str], mode: Mode) -> None:
    """What a DENY on /admin* lets through never decodes to /admin in the app (outside escaped slashes)."""
    raw = "/" + "".join(pieces)
    norm = paths.normalize(raw, mode)
    if isinstance(norm, Denial) or norm.escaped_slashes:
        return  # refused, or %2F/%5C kept: the middleware must not decode those into separators
    app_path = urllib.parse.unquote(norm.path)
    reaches_admin = app_path == "/admin" or app_path.startswith("/admin/")
    if reaches_admin:
        assert decide(_authorizer("deny-admin"), request(raw), mode) == "D", (raw, norm.path)
        assert decide(_authorizer("allow-not-admin"), request(raw), mode) == "D", (raw, norm.path)


@settings(max_examples=300, deadline=None)
@given(_PIECES, st.sampled_from(["BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]),
       st.sampled_from(["deny-admin", "allow-not-admin", "allow-public"]))
def test_decision_is_stable_under_renormalization(pieces: list[str], mode: Mode, policy: str) -> None:
    """decide(p) == decide(normalize(p)): the target handed to the app is judged the same again."""
    raw = "/" + "".join(pieces)
    norm = paths.normalize(raw, mode)
    if isinstance(norm, Denial):
        return
    az = _authorizer(policy)
    assert decide(az, request(raw), mode) == decide(az, request(norm.target), mode), (raw, norm.target)
