"""VirtualService models: decoded values, Istio's validation rules, the conformance corpus."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.config.decode import INVALID, Report, decode
from pymesh.config.networking.virtualservice import (
    KINDS,
    HTTPFaultInjection,
    HTTPRoute,
    StringMatch,
    VirtualService,
)

ROUTE = "route: [{destination: {host: r}}]"


def load(text: str, namespace: str = "default") -> tuple[Any, Report]:
    r = Report("t.yaml", 0)
    r.namespace = namespace
    node = yaml.compose(textwrap.dedent(text))
    assert node is not None
    return decode(VirtualService, node, r, ("spec",)), r


def errors(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "error"]


def warnings(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "warning"]


def route(text: str) -> Any:
    """The first HTTP route of a VirtualService for host ``a`` whose http[0] is ``text``."""
    spec, r = load(f"hosts: [a]\nhttp: [{text}]")
    assert errors(r) == []
    assert isinstance(spec.http[0], HTTPRoute)
    return spec.http[0]


def test_kinds() -> None:
    assert [(k.group, k.kind, k.versions, k.spec) for k in KINDS] == [
        ("networking.istio.io", "VirtualService", ("v1", "v1beta1", "v1alpha3"), VirtualService),
    ]


# -- valid input, decoded values ----------------------------------------------------------------


def test_weighted_route_with_policies() -> None:
    spec, r = load("""
        hosts: [reviews, reviews.prod.svc.cluster.local]
        gateways: [mesh, istio-system/ingress]
        exportTo: [.]
        http:
        - name: main
          match:
          - uri: {prefix: /api}
            headers: {end-user: {exact: jason}}
            port: 9080
            sourceLabels: {app: productpage}
            ignoreUriCase: true
          route:
          - destination: {host: reviews, subset: v1, port: {number: 9080}}
            weight: 75
            headers: {request: {set: {x-v: "1"}}}
          - destination: {host: reviews, subset: v2}
            weight: 25
          timeout: 1.5s
          retries: {attempts: 3, perTryTimeout: 4.000s, retryOn: "5xx,503", backoff: 50ms}
          corsPolicy:
            allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*[.]example"}]
            allowMethods: [GET, POST]
            maxAge: 24h
            allowCredentials: false
            unmatchedPreflights: IGNORE
        tcp:
        - match: [{port: 27017, destinationSubnets: [10.0.0.0/8]}]
          route: [{destination: {host: mongo}}]
    """)
    assert errors(r) == []
    assert warnings(r) == []
    assert spec.hosts == ("reviews", "reviews.prod.svc.cluster.local")
    assert spec.applies_to_mesh
    assert not spec.is_delegate
    http = spec.http[0]
    assert http.name == "main"
    m = http.match[0]
    assert (m.uri.kind, m.uri.value, m.port, m.ignore_uri_case) == ("prefix", "/api", 9080, True)
    assert dict(m.headers) == {"end-user": StringMatch(exact="jason")}
    assert [(d.destination.subset, d.weight) for d in http.route] == [("v1", 75), ("v2", 25)]
    assert http.route[0].destination.port.number == 9080
    assert http.route[0].headers.request.set == {"x-v": "1"}
    assert http.timeout == 1.5
    assert (http.retries.attempts, http.retries.per_try_timeout, http.retries.backoff) == (3, 4.0, 0.05)
    assert http.retries.retry_on_conditions == ("5xx",)
    assert http.retries.retriable_status_codes == (503,)
    assert http.cors_policy.max_age == 86400.0
    assert http.cors_policy.allow_credentials is False
    assert http.cors_policy.unmatched_preflights == "IGNORE"
    assert spec.tcp[0].match[0].port == 27017


@pytest.mark.parametrize(("text", "kind", "value"), [
    pytest.param("{exact: /a}", "exact", "/a", id="exact"),
    pytest.param("{exact: ''}", "exact", "", id="exact-empty-is-real"),
    pytest.param("{prefix: /p}", "prefix", "/p", id="prefix"),
    pytest.param("{regex: '.*Firefox.*'}", "regex", ".*Firefox.*", id="regex"),
    pytest.param("{}", None, "", id="presence"),
])
def test_string_match_kind_and_value(text: str, kind: str | None, value: str) -> None:
    sm = route(f"{{match: [{{headers: {{x: {text}}}}}], {ROUTE}}}").match[0].headers["x"]
    assert (sm.kind, sm.value) == (kind, value)


def test_regex_star_in_without_headers_is_a_presence_match() -> None:
    sm = route(f"{{match: [{{withoutHeaders: {{x: {{regex: '*'}}}}}}], {ROUTE}}}").match[0].without_headers["x"]
    assert (sm.kind, sm.value) == (None, "")


@pytest.mark.parametrize(("fault", "delay", "abort", "warned"), [
    pytest.param("delay: {fixedDelay: 7s, percentage: {value: 12.5}}", 12.5, None, False, id="percentage"),
    pytest.param("delay: {fixedDelay: 7s, percent: 50}", 50.0, None, True, id="deprecated-int-percent"),
    pytest.param("delay: {fixedDelay: 7s, percent: 50, percentage: {value: 5}}", 5.0, None, True,
                 id="percentage-wins"),
    pytest.param("delay: {fixedDelay: 7s}", 0.0, None, False, id="no-percentage-never-fires"),
    pytest.param("abort: {httpStatus: 503, percentage: {value: 100}}", None, 100.0, False, id="abort"),
    pytest.param("abort: {grpcStatus: UNAVAILABLE}", None, 0.0, False, id="abort-grpc-no-percentage"),
    pytest.param("abort: {httpStatus: 500, percent: 100}", None, 100.0, True, id="istio-1.0-abort-percent"),
])
def test_fault_effective_percentage(fault: str, delay: float | None, abort: float | None, warned: bool) -> None:
    spec, r = load(f"hosts: [a]\nhttp: [{{fault: {{{fault}}}, {ROUTE}}}]")
    assert errors(r) == []
    f: HTTPFaultInjection = spec.http[0].fault
    assert (f.delay.effective_percentage if f.delay else None) == delay
    assert (f.abort.effective_percentage if f.abort else None) == abort
    assert bool(warnings(r)) == warned


def test_fixed_delay_seconds() -> None:
    assert route(f"{{fault: {{delay: {{fixedDelay: 7.000s}}}}, {ROUTE}}}").fault.delay.fixed_delay == 7.0


@pytest.mark.parametrize(("extra", "shares"), [
    pytest.param("mirror: {host: m}", [("m", 100.0)], id="mirror-defaults-to-100"),
    pytest.param("mirror: {host: m}, mirrorPercentage: {value: 0}", [("m", 0.0)], id="explicit-zero"),
    pytest.param("mirror: {host: m}, mirrorPercent: 20", [("m", 20.0)], id="deprecated-uint"),
    pytest.param("mirrors: [{destination: {host: m}}, {destination: {host: n}, percentage: {value: 5}}]",
                 [("m", 100.0), ("n", 5.0)], id="mirrors"),
])
def test_mirror_policies(extra: str, shares: list[tuple[str, float]]) -> None:
    spec, r = load(f"hosts: [a]\nhttp: [{{{ROUTE}, {extra}}}]")
    assert errors(r) == []
    assert [(p.destination.host, p.effective_percentage) for p in spec.http[0].mirror_policies] == shares


def test_direct_response_bodies() -> None:
    data = base64.b64encode(b"\x00\x01hello").decode()
    assert route(f"{{directResponse: {{status: 503, body: {{bytes: '{data}'}}}}}}").direct_response.body.content \
        == b"\x00\x01hello"
    assert route("{directResponse: {status: 200, body: {string: héllo}}}").direct_response.body.content \
        == "héllo".encode()


def test_redirect_and_rewrite_values() -> None:
    r = route("{redirect: {authority: b.example, scheme: https, derivePort: FROM_REQUEST_PORT, redirectCode: 308}}")
    assert (r.redirect.authority, r.redirect.derive_port, r.redirect.redirect_code) == (
        "b.example", "FROM_REQUEST_PORT", 308)
    rw = route(f"{{rewrite: {{uriRegexRewrite: {{match: '^/v1/(.*)$', rewrite: '/v2/\\1'}}}}, {ROUTE}}}").rewrite
    assert (rw.uri_regex_rewrite.match, rw.uri_regex_rewrite.rewrite) == ("^/v1/(.*)$", "/v2/\\1")


def test_istio_1_0_header_fields_load_with_warnings() -> None:
    spec, r = load(f"""
        hosts: [a]
        http:
        - {ROUTE}
          websocketUpgrade: true
          appendHeaders: {{x-a: "1"}}
          removeResponseHeaders: [server]
          appendRequestHeaders: {{x-b: "2"}}
    """)
    assert errors(r) == []
    assert {p for p, _ in warnings(r)} == {
        "spec.http[0].websocketUpgrade", "spec.http[0].appendHeaders", "spec.http[0].removeResponseHeaders",
        "spec.http[0].appendRequestHeaders",
    }
    legacy = spec.http[0].legacy_headers
    assert legacy.request.add == {"x-a": "1", "x-b": "2"}
    assert legacy.response.remove == ("server",)
    assert spec.http[0].headers is None


def test_snake_case_spelling_is_accepted() -> None:
    r = route("{route: [{destination: {host: r}}], retries: {attempts: 2, per_try_timeout: 2s, retry_on: reset}}")
    assert (r.retries.per_try_timeout, r.retries.retry_on) == (2.0, "reset")


def test_delegate_virtual_service() -> None:
    spec, r = load(f"http: [{{match: [{{uri: {{prefix: /productpage}}}}], {ROUTE}}}]")
    assert errors(r) == []
    assert spec.is_delegate
    root, r = load("hosts: [a]\nhttp: [{match: [{uri: {prefix: /}}], delegate: {name: pp, namespace: ns}}]")
    assert errors(r) == []
    assert (root.http[0].delegate.name, root.http[0].delegate.namespace) == ("pp", "ns")


@pytest.mark.parametrize("text", [
    pytest.param(f"hosts: ['*']\ngateways: [gw]\nhttp: [{{{ROUTE}}}]", id="star-host-on-a-gateway"),
    pytest.param(f"hosts: [10.0.0.1]\nhttp: [{{{ROUTE}}}]", id="ip-host"),
    pytest.param("hosts: [a]\nhttp: [{route: [{destination: {host: r}, weight: 550}, "
                 "{destination: {host: s}, weight: 500}]}]", id="weights-are-relative"),
    pytest.param("hosts: [a]\nhttp: [{route: [{destination: {host: r}, weight: 0}]}]", id="lone-zero-weight"),
    pytest.param(f"hosts: [a]\nhttp: [{{match: [{{uri: {{prefix: ''}}}}], {ROUTE}}}]", id="uri-empty-prefix"),
    pytest.param(f"hosts: [a]\ngateways: [gw]\nhttp: [{{match: [{{headers: {{'@request.auth.claims.g': "
                 f"{{exact: a}}}}}}], {ROUTE}}}]", id="jwt-claim-route-on-gateway"),
    pytest.param(f"hosts: [a]\nhttp: [{{headers: {{response: {{add: {{x: '100%% %HOSTNAME% %REQ(x-y)%'}}}}}}, "
                 f"{ROUTE}}}]", id="envoy-header-variables"),
    pytest.param(f"hosts: [a]\nhttp: [{{headers: {{request: {{set: {{':authority': b}}}}}}, {ROUTE}}}]",
                 id="authority-rewrite-by-header"),
    pytest.param("hosts: ['*.a.com']\ntls: [{match: [{sniHosts: [x.a.com]}], route: [{destination: {host: r}}]}]",
                 id="sni-subset-of-wildcard-host"),
    pytest.param("hosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]\ngateways: [ns1/gateway]\n"
                 "tls: [{match: [{sniHosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]}], "
                 "route: [{destination: {host: istio.istio-system.svc.cluster.local}}]}]",
                 id="auto-passthrough-sni-host"),
    pytest.param("hosts: [a]\nhttp: [{match: [{uri: {prefix: /a}}, {headers: {x: {}}}], "
                 "redirect: {prefixRewrite: /b}}]", id="prefix-rewrite-with-prefix-or-no-uri-match"),
    pytest.param("hosts: [a]\nhttp: [{directResponse: {status: 600}}]", id="direct-response-600"),
    pytest.param(f"hosts: [a]\nhttp: [{{retries: {{attempts: 0}}, {ROUTE}}}]", id="retries-disabled"),
])
def test_valid(text: str) -> None:
    spec, r = load(text)
    assert spec is not INVALID
    assert errors(r) == []


# -- Istio's validation rules: one table, the exact path and a distinctive part of the message -----

INVALID_CASES = [
    # VirtualService level
    ("hosts: [a]", "spec", "http, tcp or tls must be provided"),
    (f"hosts: ['*']\nhttp: [{{{ROUTE}}}]", "spec.hosts[0]", "not allowed for virtual services bound to the mesh"),
    (f"hosts: ['*']\ngateways: [mesh, gw]\nhttp: [{{{ROUTE}}}]", "spec.hosts[0]", "wildcard host *"),
    (f"hosts: ['*.foo.com', bar.foo.com]\nhttp: [{{{ROUTE}}}]", "spec.hosts[1]", "duplicate hosts in virtual service"),
    (f"hosts: ['foo.ba!r']\nhttp: [{{{ROUTE}}}]", "spec.hosts[0]", "not a valid domain name"),
    (f"hosts: [foo.123]\nhttp: [{{{ROUTE}}}]", "spec.hosts[0]", "cannot be all-numeric"),
    (f"gateways: [gw]\nhttp: [{{{ROUTE}}}]", "spec.gateways", "delegate virtual service must have no gateways"),
    (f"tcp: [{{{ROUTE}}}]", "spec.tcp", "delegate virtual service must have no tcp"),
    ("http: [{delegate: {name: x}}]", "spec.http[0].delegate", "delegate HTTP route cannot contain delegate"),
    (f"hosts: [a]\ngateways: ['b@dgateway']\nhttp: [{{{ROUTE}}}]", "spec.gateways[0]", "invalid gateway name"),
    (f"hosts: [a]\ngateways: ['ns1/*']\nhttp: [{{{ROUTE}}}]", "spec.gateways[0]", "invalid value for gateway name"),
    (f"hosts: [a]\nexportTo: [., default]\nhttp: [{{{ROUTE}}}]", "spec.exportTo[1]", "duplicate entries in exportTo"),
    (f"hosts: [a]\nexportTo: ['*', ns]\nhttp: [{{{ROUTE}}}]", "spec.exportTo", "both public (*) and non-public"),
    (f"hosts: [a]\nhttp: [{{match: [{{headers: {{'@request.auth.claims.g': {{exact: a}}}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].headers['@request.auth.claims.g']", "JWT claim based routing"),
    (f"hosts: [a]\nhttp: [{{{ROUTE}, retry: {{attempts: 1}}}}]", "spec.http[0].retry", "unknown field 'retry'"),
    # actions
    (f"hosts: [a]\nhttp: [{{delegate: {{name: x}}, {ROUTE}}}]", "spec.http[0].route",
     "root HTTP route must not specify route"),
    (f"hosts: [a]\nhttp: [{{redirect: {{uri: /x}}, {ROUTE}}}]", "spec.http[0].route",
     "cannot contain both route and redirect"),
    ("hosts: [a]\nhttp: [{redirect: {uri: /x}, fault: {abort: {httpStatus: 500}}}]", "spec.http[0].fault",
     "cannot contain both fault and redirect"),
    ("hosts: [a]\nhttp: [{redirect: {uri: /x}, directResponse: {status: 200}}]", "spec.http[0].directResponse",
     "cannot contain both directResponse and redirect"),
    ("hosts: [a]\nhttp: [{directResponse: {status: 200}, rewrite: {uri: /x}}]", "spec.http[0].rewrite",
     "cannot contain both rewrite and directResponse"),
    (f"hosts: [a]\nhttp: [{{directResponse: {{status: 200}}, {ROUTE}}}]", "spec.http[0].route",
     "cannot contain both route and directResponse"),
    ("hosts: [a]\nhttp: [{name: x}]", "spec.http[0]", "HTTP route, redirect or direct_response is required"),
    (f"hosts: [a]\nhttp: [{{{ROUTE}, mirror: {{host: m}}, mirrors: [{{destination: {{host: m}}}}]}}]",
     "spec.http[0].mirrors", "both mirror and mirrors"),
    # matches and StringMatch
    (f"hosts: [a]\nhttp: [{{match: [{{}}], {ROUTE}}}]", "spec.http[0].match[0]", "cannot be empty"),
    (f"hosts: [a]\nhttp: [{{match: [{{headers: {{x: {{prefix: ''}}}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].headers.x.prefix", "prefix string match should not be empty"),
    (f"hosts: [a]\nhttp: [{{match: [{{method: {{prefix: ''}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].method.prefix", "prefix string match should not be empty"),
    (f"hosts: [a]\nhttp: [{{match: [{{uri: {{regex: '(?=x)'}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].uri.regex", "invalid RE2 regex"),
    (f"hosts: [a]\nhttp: [{{match: [{{queryParams: {{q: {{regex: '{'a' * 1025}'}}}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].queryParams.q.regex", "longer than 1024"),
    (f"hosts: [a]\nhttp: [{{match: [{{headers: {{x: {{regex: ''}}}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].headers.x.regex", "regex string match should not be empty"),
    (f"hosts: [a]\nhttp: [{{match: [{{uri: {{exact: /a, prefix: /b}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].uri.prefix", "only one of exact, prefix or regex"),
    (f"hosts: [a]\nhttp: [{{match: [{{headers: {{x: {{regex: '*'}}}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].headers.x.regex", "regex '*' is not valid RE2"),
    (f"hosts: [a]\nhttp: [{{match: [{{headers: {{'a b': {{exact: a}}}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].headers['a b']", "is not a valid header name"),
    (f"hosts: [a]\nhttp: [{{match: [{{sourceNamespace: Not_OK}}], {ROUTE}}}]",
     "spec.http[0].match[0].sourceNamespace", "sourceNamespace match Not_OK is invalid"),
    (f"hosts: [a]\nhttp: [{{match: [{{sourceLabels: {{'a b': c}}}}], {ROUTE}}}]",
     "spec.http[0].match[0].sourceLabels", "invalid label key"),
    (f"hosts: [a]\nhttp: [{{match: [{{port: 70000}}], {ROUTE}}}]", "spec.http[0].match[0].port", "1..65535"),
    # header operations
    (f"hosts: [a]\nhttp: [{{headers: {{request: {{set: {{':path': /x}}}}}}, {ROUTE}}}]",
     "spec.http[0].headers.request.set[':path']", 'header cannot have ":" prefix'),
    (f"hosts: [a]\nhttp: [{{headers: {{response: {{set: {{host: x}}}}}}, {ROUTE}}}]",
     "spec.http[0].headers.response.set.host", "cannot set Host header"),
    (f"hosts: [a]\nhttp: [{{headers: {{request: {{remove: [host]}}}}, {ROUTE}}}]",
     "spec.http[0].headers.request.remove[0]", "cannot set Host header"),
    (f"hosts: [a]\nhttp: [{{headers: {{request: {{add: {{'': x}}}}}}, {ROUTE}}}]",
     "spec.http[0].headers.request.add['']", "header name cannot be empty"),
    (f"hosts: [a]\nhttp: [{{headers: {{response: {{add: {{x: 'abc%123'}}}}}}, {ROUTE}}}]",
     "spec.http[0].headers.response.add.x", "write a literal % as %%"),
    (f"hosts: [a]\nhttp: [{{headers: {{response: {{add: {{x: '%START_TIME%%'}}}}}}, {ROUTE}}}]",
     "spec.http[0].headers.response.add.x", "un-escaped %"),
    (f"hosts: [a]\nhttp: [{{rewrite: {{authority: b}}, headers: {{request: {{set: {{':authority': c}}}}}}, {ROUTE}}}]",
     "spec.http[0].headers.request.set[':authority']", "authority header cannot be set multiple times"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: r}, headers: {request: {set: {':method': GET}}}}]}]",
     "spec.http[0].route[0].headers.request.set[':method']", 'header cannot have ":" prefix'),
    (f"hosts: [a]\nhttp: [{{{ROUTE}, appendHeaders: {{':path': x}}}}]", "spec.http[0].appendHeaders[':path']",
     'header cannot have ":" prefix'),
    # destinations and weights
    ("hosts: [a]\nhttp: [{route: [{destination: {host: r}, weight: -1}]}]", "spec.http[0].route[0].weight",
     "weight -1 must be >= 0"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: r}, weight: 0}, {destination: {host: s}}]}]",
     "spec.http[0].route", "total destination weight = 0"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: '*'}}]}]", "spec.http[0].route[0].destination.host",
     "invalid destination host *"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: 10.1.2.3}}]}]", "spec.http[0].route[0].destination.host",
     "all-numeric"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: r, subset: v_1}}]}]",
     "spec.http[0].route[0].destination.subset", "subset name is invalid"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: r, port: {number: 70000}}}]}]",
     "spec.http[0].route[0].destination.port.number", "port number 70000 must be in the range 1..65535"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: r, port: {}}}]}]",
     "spec.http[0].route[0].destination.port.number", "port number 0"),
    ("hosts: [a]\nhttp: [{route: [{destination: {subset: v1}}]}]", "spec.http[0].route[0].destination.host",
     "missing required field 'host'"),
    (f"hosts: [a]\nhttp: [{{{ROUTE}, mirror: {{host: '*'}}}}]", "spec.http[0].mirror.host",
     "invalid destination host *"),
    (f"hosts: [a]\nhttp: [{{{ROUTE}, mirror: {{host: m}}, mirrorPercent: 101}}]", "spec.http[0].mirrorPercent",
     "out of range 0..100"),
    (f"hosts: [a]\nhttp: [{{{ROUTE}, mirrors: [{{destination: {{host: m}}, percentage: {{value: -1}}}}]}}]",
     "spec.http[0].mirrors[0].percentage.value", "out of range 0..100"),
    # retries and timeouts
    (f"hosts: [a]\nhttp: [{{timeout: 0.5ms, {ROUTE}}}]", "spec.http[0].timeout", "at least 1ms"),
    (f"hosts: [a]\nhttp: [{{retries: {{attempts: -1}}, {ROUTE}}}]", "spec.http[0].retries.attempts",
     "attempts cannot be negative"),
    (f"hosts: [a]\nhttp: [{{retries: {{perTryTimeout: 2s}}, {ROUTE}}}]", "spec.http[0].retries.perTryTimeout",
     "http retry policy configured when attempts are set to 0"),
    (f"hosts: [a]\nhttp: [{{retries: {{attempts: 0, retryRemoteLocalities: false}}, {ROUTE}}}]",
     "spec.http[0].retries.retryRemoteLocalities", "attempts are set to 0"),
    (f"hosts: [a]\nhttp: [{{retries: {{attempts: 2, retryOn: '5xx,bogus'}}, {ROUTE}}}]",
     "spec.http[0].retries.retryOn", "'bogus' is not a valid retryOn policy"),
    (f"hosts: [a]\nhttp: [{{retries: {{attempts: 2, retryOn: '600,reset'}}, {ROUTE}}}]",
     "spec.http[0].retries.retryOn", "'600' is not a valid retryOn policy"),
    (f"hosts: [a]\nhttp: [{{retries: {{attempts: 2, retryOn: '5xx, reset'}}, {ROUTE}}}]",
     "spec.http[0].retries.retryOn", "(remove the spaces)"),
    (f"hosts: [a]\nhttp: [{{retries: {{attempts: 2, perTryTimeout: 2.0001s}}, {ROUTE}}}]",
     "spec.http[0].retries.perTryTimeout", "millisecond precision"),
    # fault injection
    (f"hosts: [a]\nhttp: [{{fault: {{}}, {ROUTE}}}]", "spec.http[0].fault", "must have an abort and/or a delay"),
    (f"hosts: [a]\nhttp: [{{fault: {{abort: {{httpStatus: 500, percentage: {{value: 101}}}}}}, {ROUTE}}}]",
     "spec.http[0].fault.abort.percentage.value", "out of range 0..100"),
    (f"hosts: [a]\nhttp: [{{fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 0.00001}}}}}}, {ROUTE}}}]",
     "spec.http[0].fault.delay.percentage.value", "neither 0.0, nor in range [0.0001, 100.0]"),
    (f"hosts: [a]\nhttp: [{{fault: {{abort: {{httpStatus: 199}}}}, {ROUTE}}}]",
     "spec.http[0].fault.abort.httpStatus", "not in range 200..600"),
    (f"hosts: [a]\nhttp: [{{fault: {{abort: {{grpcStatus: unavailable}}}}, {ROUTE}}}]",
     "spec.http[0].fault.abort.grpcStatus", "gRPC status 'unavailable' is not supported"),
    (f"hosts: [a]\nhttp: [{{fault: {{abort: {{http2Error: x}}}}, {ROUTE}}}]", "spec.http[0].fault.abort.http2Error",
     "HTTP/2 abort fault injection not supported"),
    (f"hosts: [a]\nhttp: [{{fault: {{abort: {{httpStatus: 500, grpcStatus: INTERNAL}}}}, {ROUTE}}}]",
     "spec.http[0].fault.abort.grpcStatus", "only one of httpStatus, grpcStatus or http2Error"),
    (f"hosts: [a]\nhttp: [{{fault: {{delay: {{exponentialDelay: 1s}}}}, {ROUTE}}}]",
     "spec.http[0].fault.delay.exponentialDelay", "exponentialDelay not supported"),
    (f"hosts: [a]\nhttp: [{{fault: {{delay: {{fixedDelay: 1s, percent: 101}}}}, {ROUTE}}}]",
     "spec.http[0].fault.delay.percent", "out of range 0..100"),
    # redirect, direct response, rewrite
    ("hosts: [a]\nhttp: [{redirect: {}}]", "spec.http[0].redirect", "redirect must specify URI, authority"),
    ("hosts: [a]\nhttp: [{redirect: {uri: /x, redirectCode: 200}}]", "spec.http[0].redirect.redirectCode",
     "must be 3xx"),
    ("hosts: [a]\nhttp: [{redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}}]",
     "spec.http[0].redirect.derivePort", "only one of port or derivePort"),
    ("hosts: [a]\nhttp: [{redirect: {port: 0}}]", "spec.http[0].redirect.port", "out of range 1..65535"),
    ("hosts: [a]\nhttp: [{redirect: {scheme: ftp}}]", "spec.http[0].redirect.scheme", "invalid redirect scheme"),
    ("hosts: [a]\nhttp: [{redirect: {uri: /a, prefixRewrite: /b}}]", "spec.http[0].redirect.prefixRewrite",
     "may only specify one of uri or prefixRewrite"),
    ("hosts: [a]\nhttp: [{match: [{uri: {exact: /a}}], redirect: {prefixRewrite: /b}}]", "spec.http[0].match[0].uri",
     "prefixRewrite requires all URI matches to use prefix"),
    ("hosts: [a]\nhttp: [{directResponse: {status: 601}}]", "spec.http[0].directResponse.status",
     "601 is not in range 200..600"),
    ("hosts: [a]\nhttp: [{directResponse: {body: {string: x}}}]", "spec.http[0].directResponse.status",
     "missing required field 'status'"),
    ("hosts: [a]\nhttp: [{directResponse: {status: 200, body: {string: a, bytes: YQ==}}}]",
     "spec.http[0].directResponse.body.bytes", "only one of string or bytes"),
    (f"hosts: [a]\nhttp: [{{directResponse: {{status: 200, body: {{string: '{'x' * (1024 * 1024 + 1)}'}}}}}}]",
     "spec.http[0].directResponse.body.string", "must be less than 1MB"),
    ("hosts: [a]\nhttp: [{directResponse: {status: 200, body: {bytes: '!!!'}}}]",
     "spec.http[0].directResponse.body.bytes", "bytes must be base64"),
    (f"hosts: [a]\nhttp: [{{rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}, {ROUTE}}}]",
     "spec.http[0].rewrite.uriRegexRewrite", "only contain one of uri or uriRegexRewrite"),
    (f"hosts: [a]\nhttp: [{{rewrite: {{}}, {ROUTE}}}]", "spec.http[0].rewrite", "rewrite must specify at least one"),
    (f"hosts: [a]\nhttp: [{{rewrite: {{uriRegexRewrite: {{match: a}}}}, {ROUTE}}}]",
     "spec.http[0].rewrite.uriRegexRewrite.rewrite", "requires both rewrite and match"),
    (f"hosts: [a]\nhttp: [{{rewrite: {{uriRegexRewrite: {{match: '(', rewrite: b}}}}, {ROUTE}}}]",
     "spec.http[0].rewrite.uriRegexRewrite.match", "invalid RE2 regex"),
    # CORS
    (f"hosts: [a]\nhttp: [{{corsPolicy: {{allowMethods: [GET, PUTT]}}, {ROUTE}}}]",
     "spec.http[0].corsPolicy.allowMethods[1]", "'PUTT' is not a supported HTTP method"),
    (f"hosts: [a]\nhttp: [{{corsPolicy: {{maxAge: 1500ms}}, {ROUTE}}}]", "spec.http[0].corsPolicy.maxAge",
     "accurate only to seconds precision"),
    (f"hosts: [a]\nhttp: [{{corsPolicy: {{allowOrigins: [{{exact: ''}}]}}, {ROUTE}}}]",
     "spec.http[0].corsPolicy.allowOrigins[0]", "needs a non-empty exact, prefix or regex"),
    (f"hosts: [a]\nhttp: [{{corsPolicy: {{allowOrigins: [{{regex: '[a'}}]}}, {ROUTE}}}]",
     "spec.http[0].corsPolicy.allowOrigins[0].regex", "invalid RE2 regex"),
    (f"hosts: [a]\nhttp: [{{corsPolicy: {{exposeHeaders: ['']}}, {ROUTE}}}]",
     "spec.http[0].corsPolicy.exposeHeaders[0]", "header name cannot be empty"),
    (f"hosts: [a]\nhttp: [{{corsPolicy: {{unmatchedPreflights: DROP}}, {ROUTE}}}]",
     "spec.http[0].corsPolicy.unmatchedPreflights", "not one of UNSPECIFIED, FORWARD, IGNORE"),
    # TCP and TLS
    ("hosts: [a]\ntcp: [{match: [{port: 999}]}]", "spec.tcp[0].route", "TCP route is required"),
    ("hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: r}}]}]",
     "spec.tcp[0].match[0].destinationSubnets[0]", "is not an IP address or CIDR range"),
    ("hosts: [a]\ntcp: [{route: [{destination: {host: r}, weight: 0}, {destination: {host: s}, weight: 0}]}]",
     "spec.tcp[0].route", "total destination weight = 0"),
    ("hosts: [a]\ntls: [{route: [{destination: {host: r}}]}]", "spec.tls[0].match", "missing required field 'match'"),
    ("hosts: [a]\ntls: [{match: [], route: [{destination: {host: r}}]}]", "spec.tls[0].match",
     "at least one match condition"),
    ("hosts: [a]\ntls: [{match: [{sniHosts: [a]}]}]", "spec.tls[0].route", "TLS route is required"),
    ("hosts: [a]\ntls: [{match: [{sniHosts: []}], route: [{destination: {host: r}}]}]",
     "spec.tls[0].match[0].sniHosts", "at least one SNI host"),
    ("hosts: [a.com]\ntls: [{match: [{sniHosts: [b.com]}], route: [{destination: {host: r}}]}]",
     "spec.tls[0].match[0].sniHosts[0]", "not a compatible subset of any of the virtual service hosts"),
    ("hosts: [a.com]\ntls: [{match: [{sniHosts: ['foo.*.com']}], route: [{destination: {host: r}}]}]",
     "spec.tls[0].match[0].sniHosts[0]", "not a valid domain name"),
    (f"http: [{{{ROUTE}}}]\ntls: [{{match: [{{sniHosts: [a]}}], {ROUTE}}}]", "spec.tls",
     "delegate virtual service must have no tls"),
]


@pytest.mark.parametrize(("text", "path", "message"), [
    pytest.param(text, path, message, id=f"{i:02d}-{path.removeprefix('spec.').removeprefix('spec') or 'spec'}")
    for i, (text, path, message) in enumerate(INVALID_CASES)
])
def test_invalid(text: str, path: str, message: str) -> None:
    _, r = load(text)
    found = errors(r)
    assert found, f"no error for {text!r}"
    assert found[0][0] == path, found
    assert message in found[0][1], found


@pytest.mark.parametrize(("text", "path", "message"), [
    pytest.param(f"hosts: [a]\nhttp: [{{match: [{{headers: {{X-Foo: {{exact: a}}}}}}], {ROUTE}}}]",
                 "spec.http[0].match[0].headers['X-Foo']", "should be lowercase", id="upper-case-header-match"),
    pytest.param(f"hosts: [a]\ngateways: [gateway.example.com]\nhttp: [{{{ROUTE}}}]", "spec.gateways[0]",
                 "prefer the <namespace>/<name> format: 'example/gateway'", id="legacy-fqdn-gateway"),
    pytest.param("hosts: [a]\nhttp: [{redirect: {uri: /x, redirectCode: 304}}]", "spec.http[0].redirect.redirectCode",
                 "Istio drops the route", id="redirect-code-envoy-does-not-send"),
    pytest.param("hosts: [a.com]\ntls: [{match: [{sniHosts: [1.1.1.1]}], route: [{destination: {host: r}}]}]",
                 "spec.tls[0].match[0].sniHosts[0]", "goes against SNI spec", id="ip-sni-host"),
    pytest.param(f"hosts: [a]\nhttp: [{{fault: {{abort: {{percentage: {{value: 5}}}}}}, {ROUTE}}}]",
                 "spec.http[0].fault.abort", "error type not set", id="abort-without-error-type"),
    pytest.param(f"hosts: [a]\nhttp: [{{retries: {{attempts: 0, backoff: 2s}}, {ROUTE}}}]",
                 "spec.http[0].retries.backoff", "retries are disabled", id="backoff-without-retries"),
    pytest.param(f"hosts: [a]\nhttp: [{{{ROUTE}, mirrorPercentage: {{value: 5}}}}]", "spec.http[0].mirrorPercentage",
                 "no effect without mirror", id="mirror-percentage-without-mirror"),
    pytest.param(f"hosts: [a]\nhttp: [{{corsPolicy: {{allowOrigin: ['*']}}, {ROUTE}}}]",
                 "spec.http[0].corsPolicy.allowOrigin", "use allowOrigins", id="deprecated-allow-origin"),
    pytest.param("hosts: [a]\nhttp: [{route: [{destination: {host: r, port: {name: http}}}]}]",
                 "spec.http[0].route[0].destination.port.name", "use port.number", id="istio-1.0-port-name"),
])
def test_warnings(text: str, path: str, message: str) -> None:
    _, r = load(text)
    assert errors(r) == []
    assert any(p == path and message in m for p, m in warnings(r)), warnings(r)


def test_duplicate_and_unreachable_rules_are_not_errors() -> None:
    _, r = load(f"""
        hosts: [a]
        http:
        - {ROUTE}
        - {ROUTE}
        - match: [{{uri: {{prefix: /x}}}}, {{uri: {{prefix: /x}}}}]
          {ROUTE}
    """)
    assert errors(r) == []


# -- the conformance corpus ------------------------------------------------------------------------

# Istio 1.1's webhook rejected a VirtualService without hosts; current Istio reads it as a
# delegate (EnableVirtualServiceDelegate, on by default), which pymesh follows.
ACCEPTED_NOW = {("validation/networking-v1alpha3-VirtualService-invalid.yaml", 0)}


def _documents(conformance: Path, patterns: list[str]) -> list[tuple[str, int, yaml.Node]]:
    out = []
    for pattern in patterns:
        for f in sorted(conformance.glob(pattern)):
            for i, doc in enumerate(yaml.compose_all(f.read_text())):
                if doc is None:
                    continue
                mapping = {k.value: v for k, v in doc.value if k.value != "_err"}
                kind = mapping.get("kind")
                if kind is None or kind.value != "VirtualService":
                    continue
                spec = mapping.get("spec")
                if spec is None or (isinstance(spec, yaml.ScalarNode) and spec.tag.endswith(":null")):
                    spec = yaml.compose("{}")
                assert spec is not None
                out.append((str(f.relative_to(conformance)), i, spec))
    return out


def _decode(spec: yaml.Node) -> tuple[Any, Report]:
    r = Report("t.yaml", 0)
    r.namespace = "default"
    return decode(VirtualService, spec, r, ("spec",)), r


def test_corpus_valid(conformance: Path) -> None:
    docs = _documents(conformance, ["bookinfo/*.yaml", "istio-tutorial/*.yml", "istio-tutorial/*.yaml",
                                    "legacy/*", "validation/*-valid.yaml"])
    assert len(docs) >= 45
    for name, index, spec in docs:
        decoded, r = _decode(spec)
        assert decoded is not INVALID, f"{name} document {index}: {errors(r)}"
        assert errors(r) == [], f"{name} document {index}"


def test_corpus_seed_era_samples(conformance: Path) -> None:
    docs = {(n, i): s for n, i, s in _documents(conformance, ["legacy/*", "istio-tutorial/*.yml"])}
    abort, r = _decode(docs[("legacy/istio-1.0.0__virtual-service-ratings-test-abort.yaml", 0)])
    assert abort.http[0].fault.abort.effective_percentage == 100.0
    assert warnings(r) == [("spec.http[0].fault.abort.percent", warnings(r)[0][1])]
    delay, _ = _decode(docs[("istio-tutorial/virtual-service-recommendation-delay.yml", 0)])
    assert (delay.http[0].fault.delay.fixed_delay, delay.http[0].fault.delay.effective_percentage) == (7.0, 50.0)
    retry, _ = _decode(docs[("istio-tutorial/virtual-service-recommendation-v1_and_v2_retry.yml", 0)])
    assert (retry.http[0].retries.attempts, retry.http[0].retries.per_try_timeout) == (3, 4.0)


def test_corpus_invalid(conformance: Path) -> None:
    docs = _documents(conformance, ["validation/*-invalid.yaml"])
    assert docs
    for name, index, spec in docs:
        decoded, r = _decode(spec)
        if (name, index) in ACCEPTED_NOW:
            assert errors(r) == [], f"{name} document {index}"
            assert decoded.is_delegate
        else:
            assert errors(r), f"{name} document {index} should be rejected"
