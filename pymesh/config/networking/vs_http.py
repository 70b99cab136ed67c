"""VirtualService HTTP messages (match, destinations, actions, policies) and the shared Destination.

``HTTPRoute`` itself, TCP/TLS routes and ``VirtualService`` are in ``virtualservice.py``.
Field names follow istio/api ``networking/v1alpha3/virtual_service.proto``; the rules in each
``_check`` follow istio/istio ``pkg/config/validation``. Fields that Istio 1.0/1.1 had and
current Istio removed are accepted with a deprecation warning so seed-era samples load.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pymesh.config.decode import Checker, Invalid, Parse, field
from pymesh.config.networking._netcheck import check_fqdn, is_dns_label
from pymesh.config.types import Duration, Labels, Percent, check_host, compile_re2, ranged

__all__ = [
    "CorsPolicy",
    "Delegate",
    "Destination",
    "HTTPBody",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRouteDestination",
    "Headers",
    "PortSelector",
    "RegexRewrite",
    "StringMatch",
]

# -- rules shared with virtualservice.py ----------------------------------------------------


def _optional_port(value: int) -> int:
    if value != 0 and not 1 <= value <= 65535:
        raise Invalid(f"port number {value} must be in the range 1..65535")
    return value


OptionalPort = Annotated[int, _optional_port]  # a uint32 port where 0 means "not set"


def host_problem(host: str) -> str | None:
    """Istio's ``ValidateWildcardDomain``: check_host, and no all-numeric top-level label."""
    problem = check_host(host, allow_star=True)
    if problem is None and host != "*" and host.rstrip(".").rpartition(".")[2].isdigit():
        return f"host {host!r} is invalid: the top-level domain cannot be all-numeric"
    return problem


def check_gateway_names(v: Checker, names: Iterable[str], *at: str | int) -> None:
    """``mesh``, ``<namespace>/<name>``, a bare name, or (with a warning) the legacy FQDN form."""
    for i, name in enumerate(names):
        ns, slash, gw = name.partition("/")
        if not slash:
            if "." in name:
                parts = name.split(".")
                v.warn(f"using legacy gatewayName format {name!r}; prefer the <namespace>/<name> format: "
                       f"'{parts[1]}/{parts[0]}'", *at, i)
            problem = check_fqdn(name)
            if problem:
                v.error(f"invalid gateway name: {problem}", *at, i)
        elif not ns or not gw:
            v.error(f"gateway {name!r}: config namespace and gateway name cannot be empty", *at, i)
        elif not is_dns_label(ns):
            v.error(f"gateway {name!r}: invalid value for namespace: {ns!r}", *at, i)
        elif not is_dns_label(gw):
            v.error(f"gateway {name!r}: invalid value for gateway name: {gw!r}", *at, i)


def regex_problem(pattern: str) -> str | None:
    if not pattern:
        return "regex string match should not be empty"
    try:
        compile_re2(pattern)
    except Invalid as exc:
        return f"{exc.message}; Istio uses RE2 syntax" if "invalid RE2" in exc.message else exc.message
    return None


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9]+")  # RFC 7230 tchar
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_JWT_CLAIM = "@request.auth.claims"


def is_jwt_claim_key(name: str) -> bool:
    """``@request.auth.claims.a.b`` or ``@request.auth.claims[a][b]``: a JWT claim match."""
    if not name.lower().startswith(_JWT_CLAIM):
        return False
    rest = name[len(_JWT_CLAIM):]
    return (rest.startswith(".") and len(rest) > 1) or (rest.startswith("[") and rest.endswith("]") and len(rest) > 2)


def _header_value_problem(value: str) -> str | None:
    """Envoy's header-value grammar: ``%VAR%`` and ``%VAR(args)%`` expand; a literal % is ``%%``."""
    if _CONTROL.search(value):
        return "it contains a control character"
    state, i, n = "text", 0, len(value)
    while i < n:
        ch = value[i]
        if state == "text":
            if ch == "%":
                if i + 1 == n:
                    return "un-escaped % (write a literal % as %%)"
                if value[i + 1] == "%":
                    i += 1
                else:
                    state = "name"
        elif state == "name":
            state = "text" if ch == "%" else "args" if ch == "(" else "name"
        elif state == "args":  # after "(": a JSON array of strings, or one bare argument
            state = "quote" if ch == "[" else "args" if ch == " " else "string"
        elif state == "quote":
            if ch == '"':
                state = "string"
            elif ch != " ":
                return "expecting '\"' to open an argument"
        elif state == "string":
            if ch == "\\":
                if i + 1 == n:
                    return "un-terminated backslash in an argument"
                i += 1
            elif ch == ")":
                state = "close"
            elif ch == '"':
                state = "next"
        elif state == "next":
            if ch == ",":
                state = "quote"
            elif ch == "]":
                state = "paren"
            elif ch != " ":
                return "expecting ',', ']' or whitespace in the argument list"
        elif state == "paren":
            if ch == ")":
                state = "close"
            elif ch != " ":
                return "expecting ')' after the argument list"
        elif ch == "%":  # state "close"
            state = "text"
        elif ch != " ":
            return "expecting '%' to close the variable"
        i += 1
    return None if state == "text" else "un-terminated %VARIABLE% expression (write a literal % as %%)"


def _op_name_problem(name: str, *, authority_ok: bool) -> str | None:
    low = name.lower()
    if not name:
        return "header name cannot be empty"
    if authority_ok and low in (":authority", "host"):
        return None  # an authority rewrite: checked once per route
    if low == "host":
        return f"invalid header {name!r}: cannot set Host header"
    if name.startswith(":"):
        return f"invalid header {name!r}: header cannot have \":\" prefix"
    if not _TOKEN.fullmatch(name):
        return f"invalid header {name!r}: not a valid header name (an RFC 7230 token)"
    return None


def check_header_additions(v: Checker, values: Mapping[str, str], *at: str, request: bool) -> None:
    for name, value in values.items():
        problem = _op_name_problem(name, authority_ok=request)
        if problem:
            v.error(problem, *at, name)
        problem = _header_value_problem(value)
        if problem:
            v.error(f"header value {value!r} is invalid: {problem}", *at, name)


def check_header_removals(v: Checker, names: Iterable[str], *at: str) -> None:
    for i, name in enumerate(names):
        problem = _op_name_problem(name, authority_ok=False)
        if problem:
            v.error(problem, *at, i)


# -- matching -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StringMatch:
    """``exact`` | ``prefix`` | ``regex`` (RE2, whole-string); none of them means "is present"."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @property
    def kind(self) -> Literal["exact", "prefix", "regex"] | None:
        """The test; None for a presence match (``{}``, or ``regex: "*"`` in withoutHeaders)."""
        if self.exact is not None:
            return "exact"
        if self.prefix is not None:
            return "prefix"
        if self.regex is not None and self.regex != "*":
            return "regex"
        return None

    @property
    def value(self) -> str:
        """The string or pattern the test uses; empty for a presence match."""
        if self.exact is not None:
            return self.exact
        if self.prefix is not None:
            return self.prefix
        return "" if self.regex in (None, "*") else self.regex or ""

    def _check(self, v: Checker) -> None:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            v.error(f"set only one of exact, prefix or regex (found {' and '.join(given)})", given[1])
        if self.regex is not None and self.regex != "*":
            problem = regex_problem(self.regex)
            if problem:
                v.error(problem, "regex")


def check_string_match(v: Checker, sm: StringMatch | None, *at: str | int, empty_prefix_ok: bool = False,
                       star_ok: bool = False) -> None:
    """The StringMatch rules that depend on where it is used."""
    if sm is None:
        return
    if sm.prefix == "" and not empty_prefix_ok:
        v.error("prefix string match should not be empty", *at, "prefix")
    if sm.regex == "*" and not star_ok:
        v.error("regex '*' is not valid RE2; write {} to test that the value is present", *at, "regex")


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPMatchRequest:
    """One match block: every field set must hold (AND); several blocks of a route are ORed."""

    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: Mapping[str, StringMatch] = field(default_factory=dict)
    port: OptionalPort = 0
    source_labels: Labels = dataclasses.field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    query_params: Mapping[str, StringMatch] = field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: Mapping[str, StringMatch] = field(default_factory=dict)
    source_namespace: str = ""
    stat_prefix: str = ""

    def _check(self, v: Checker) -> None:
        if self == _EMPTY_MATCH:
            v.error("an HTTP match request cannot be empty; leave out match for a catch-all route")
        check_string_match(v, self.uri, "uri", empty_prefix_ok=True)  # Envoy allows an empty path prefix
        for where in ("scheme", "method", "authority"):
            check_string_match(v, getattr(self, where), where)
        for where, table in (("headers", self.headers), ("withoutHeaders", self.without_headers)):
            for name, sm in table.items():
                _check_match_header_name(v, name, where)
                check_string_match(v, sm, where, name, star_ok=where == "withoutHeaders")
        for name, sm in self.query_params.items():
            check_string_match(v, sm, "queryParams", name)
        check_gateway_names(v, self.gateways, "gateways")
        if self.source_namespace and not is_dns_label(self.source_namespace):
            v.error(f"sourceNamespace match {self.source_namespace} is invalid", "sourceNamespace")


_EMPTY_MATCH = HTTPMatchRequest()


def _check_match_header_name(v: Checker, name: str, where: str) -> None:
    if not name:
        v.error("header name cannot be empty", where, name)
    elif is_jwt_claim_key(name) or name in _PSEUDO_HEADERS:
        return
    elif not _TOKEN.fullmatch(name):
        v.error(f"header name {name!r} is not a valid header name (an RFC 7230 token)", where, name)
    elif name != name.lower():
        v.warn(f"header name {name!r} should be lowercase; header names are matched case-insensitively",
               where, name)


# -- destinations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PortSelector:
    number: int = 0
    # Istio 1.0/1.1 oneof branch, removed later; kept so seed-era samples load.
    name: str | None = field(default=None, deprecated="port.name is an Istio 1.0 field that current Istio "
                                                      "removed; use port.number")

    def _check(self, v: Checker) -> None:
        if self.name is not None:
            if self.number:
                v.error("set only one of number or name", "name")
            elif not is_dns_label(self.name):
                v.error(f"port name {self.name!r} is not a DNS-1123 label", "name")
        elif not 1 <= self.number <= 65535:
            v.error(f"port number {self.number} must be in the range 1..65535", "number")


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """A service (``host``), optionally one ``subset`` of it, and a ``port``."""

    host: str
    subset: str = ""
    port: PortSelector | None = None

    def _check(self, v: Checker) -> None:
        if self.host == "*":
            v.error("invalid destination host *: name a service", "host")
        else:
            problem = host_problem(self.host)
            if problem:
                v.error(f"invalid destination host: {problem}", "host")
        if self.subset and not is_dns_label(self.subset):
            v.error(f"subset name is invalid: {self.subset!r} (must be a DNS-1123 label)", "subset")


@dataclass(frozen=True, slots=True, kw_only=True)
class Headers:
    """Header manipulation: ``request`` before forwarding, ``response`` before returning."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class HeaderOperations:
        set: Mapping[str, str] = field(default_factory=dict)  # overwrite or add
        add: Mapping[str, str] = field(default_factory=dict)  # append to existing values
        remove: tuple[str, ...] = ()

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None

    def _check(self, v: Checker) -> None:
        for side, ops in (("request", self.request), ("response", self.response)):
            if ops is not None:
                check_header_additions(v, ops.set, side, "set", request=side == "request")
                check_header_additions(v, ops.add, side, "add", request=side == "request")
                check_header_removals(v, ops.remove, side, "remove")

    @property
    def authority_ops(self) -> tuple[tuple[str, str, str], ...]:
        """``(op, name, value)`` of each request set/add that rewrites the authority (``:authority``/``host``)."""
        ops = self.request
        if ops is None:
            return ()
        return tuple((op, name, value) for op, table in (("set", ops.set), ("add", ops.add))
                     for name, value in table.items() if name.lower() in (":authority", "host"))


def legacy_headers(req_add: Mapping[str, str] | None, req_remove: tuple[str, ...] | None,
                   resp_add: Mapping[str, str] | None, resp_remove: tuple[str, ...] | None) -> Headers | None:
    """Istio 1.0/1.1 append/remove header fields as the ``Headers`` they mean (None when unset)."""
    ops = Headers.HeaderOperations
    request = ops(add=dict(req_add or {}), remove=req_remove or ()) if req_add or req_remove else None
    response = ops(add=dict(resp_add or {}), remove=resp_remove or ()) if resp_add or resp_remove else None
    return None if request is None and response is None else Headers(request=request, response=response)


def _deprecated(old: str, new: str, era: str = "1.1") -> str:
    return f"{old} is an Istio {era} field that current Istio removed; use {new}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRouteDestination:
    destination: Destination
    weight: Annotated[int, ranged(0, None, "weight")] = 0  # relative; ignored for a single destination
    headers: Headers | None = None
    # Istio 1.1 fields, removed later; kept so seed-era samples load.
    remove_response_headers: tuple[str, ...] | None = field(
        default=None, deprecated=_deprecated("removeResponseHeaders", "headers.response.remove"))
    append_response_headers: Mapping[str, str] | None = field(
        default=None, deprecated=_deprecated("appendResponseHeaders", "headers.response.add"))
    remove_request_headers: tuple[str, ...] | None = field(
        default=None, deprecated=_deprecated("removeRequestHeaders", "headers.request.remove"))
    append_request_headers: Mapping[str, str] | None = field(
        default=None, deprecated=_deprecated("appendRequestHeaders", "headers.request.add"))

    @property
    def legacy_headers(self) -> Headers | None:
        """The Istio 1.1 header fields of this destination as a ``Headers`` value."""
        return legacy_headers(self.append_request_headers, self.remove_request_headers,
                              self.append_response_headers, self.remove_response_headers)

    def _check(self, v: Checker) -> None:
        check_header_additions(v, self.append_request_headers or {}, "appendRequestHeaders", request=True)
        check_header_removals(v, self.remove_request_headers or (), "removeRequestHeaders")
        check_header_additions(v, self.append_response_headers or {}, "appendResponseHeaders", request=False)
        check_header_removals(v, self.remove_response_headers or (), "removeResponseHeaders")


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPMirrorPolicy:
    destination: Destination
    percentage: Percent | None = None

    @property
    def effective_percentage(self) -> float:
        """Share of requests mirrored: 100 when no percentage is given."""
        return 100.0 if self.percentage is None else self.percentage.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegate:
    """Hand an HTTP route to another VirtualService (one level only)."""

    name: str = ""
    namespace: str = ""  # default: the namespace of the delegating VirtualService

    def _check(self, v: Checker) -> None:
        if not self.name:
            v.error("delegate name must be set", "name")
        if self.namespace and not is_dns_label(self.namespace):
            v.error(f"delegate namespace {self.namespace!r} is not a DNS-1123 label", "namespace")


# -- actions -------------------------------------------------------------------------------

_REDIRECT_CODES_EMITTED = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRedirect:
    uri: str = ""  # replaces the whole path
    authority: str = ""
    port: Annotated[int, ranged(1, 65535, "port")] | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str = ""  # "" keeps the request's
    redirect_code: Annotated[int, ranged(0, None, "redirectCode")] = 0  # 0 means 301
    prefix_rewrite: str = ""  # replaces only the matched prefix

    def _check(self, v: Checker) -> None:
        if self.uri and self.prefix_rewrite:
            v.error("redirect may only specify one of uri or prefixRewrite", "prefixRewrite")
        if self.port is not None and self.derive_port is not None:
            v.error("set only one of port or derivePort", "derivePort")
        if not (self.uri or self.prefix_rewrite or self.authority or self.scheme or self.port is not None
                or self.derive_port is not None):
            v.error("redirect must specify URI, authority, scheme, or port")
        if self.redirect_code and not 300 <= self.redirect_code <= 399:
            v.error(f"{self.redirect_code} is not a valid redirect code, must be 3xx", "redirectCode")
        elif self.redirect_code and self.redirect_code not in _REDIRECT_CODES_EMITTED:
            v.warn(f"redirect code {self.redirect_code} is not one Envoy sends (301, 302, 303, 307, 308); "
                   "Istio drops the route", "redirectCode")
        if self.scheme and self.scheme not in ("http", "https"):
            v.error('invalid redirect scheme, must be "http" or "https"', "scheme")


def _base64(text: str) -> bytes:
    # Protobuf JSON reads standard or URL-safe base64, padded or not; line breaks are ignored.
    data = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Invalid(f"bytes must be base64: {exc}") from exc


_KIB = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPBody:
    string: str | None = None
    bytes_: Annotated[bytes, Parse(str, _base64)] | None = None  # base64 in YAML, decoded here

    @property
    def content(self) -> bytes:
        """The body to send (a ``string`` body as UTF-8)."""
        if self.string is not None:
            return self.string.encode()
        return self.bytes_ or b""

    def _check(self, v: Checker) -> None:
        if self.string is not None and self.bytes_ is not None:
            v.error("set only one of string or bytes", "bytes")
        where = "string" if self.string is not None else "bytes"
        size = len(self.content)
        if size > 1024 * _KIB:
            v.error(f"direct response body is {size} bytes: large direct_responses may impact control plane "
                    "performance, must be less than 1MB", where)
        elif size > 100 * _KIB:
            v.warn(f"direct response body is {size} bytes: large direct_responses may impact control plane "
                   "performance", where)


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPDirectResponse:
    status: int
    body: HTTPBody | None = None

    def _check(self, v: Checker) -> None:
        if not 200 <= self.status <= 600:
            v.error(f"direct response status {self.status} is not in range 200..600", "status")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegexRewrite:
    match: str = ""  # RE2; every non-overlapping match in the path is replaced
    rewrite: str = ""  # may use \1..\9

    def _check(self, v: Checker) -> None:
        if not self.match or not self.rewrite:
            v.error("uriRegexRewrite requires both rewrite and match fields to be specified",
                    "rewrite" if self.match else "match")
        if self.match:
            problem = regex_problem(self.match)
            if problem:
                v.error(problem, "match")


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRewrite:
    uri: str = ""  # replaces the matched prefix
    authority: str = ""
    uri_regex_rewrite: RegexRewrite | None = None

    def _check(self, v: Checker) -> None:
        if self.uri and self.uri_regex_rewrite is not None:
            v.error("rewrite may only contain one of uri or uriRegexRewrite", "uriRegexRewrite")
        if not self.uri and self.uri_regex_rewrite is None and not self.authority:
            v.error("rewrite must specify at least one of uri, uriRegexRewrite, or authority")


# -- policies ------------------------------------------------------------------------------

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions (agent.supportedRetryOnPolicies).
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
# The codes Go's http.StatusText knows: a retryOn number must be one of them.
HTTP_STATUS_CODES = frozenset({
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
    300, 301, 302, 303, 304, 305, 307, 308, *range(400, 419), 421, 422, 423, 424, 425, 426, 428, 429, 431, 451,
    *range(500, 509), 510, 511,
})


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRetry:
    attempts: int = 0  # retries after the first try; 0 disables retries
    per_try_timeout: Duration | None = None
    retry_on: str = ""  # comma-separated Envoy conditions and HTTP status codes
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None  # unset means true
    backoff: Duration | None = None

    @property
    def retry_on_conditions(self) -> tuple[str, ...]:
        """The non-numeric retryOn tokens, in order."""
        return tuple(t.strip() for t in self.retry_on.split(",") if t.strip() and not t.strip().isdigit())

    @property
    def retriable_status_codes(self) -> tuple[int, ...]:
        """The HTTP status codes listed in retryOn (Istio adds ``retriable-status-codes`` for them)."""
        return tuple(int(t) for t in self.retry_on.split(",") if t.strip().isdigit())

    def _check(self, v: Checker) -> None:
        if self.attempts < 0:
            v.error("attempts cannot be negative", "attempts")
        if self.attempts == 0:
            for name, given in (("perTryTimeout", self.per_try_timeout is not None), ("retryOn", bool(self.retry_on)),
                                ("retryRemoteLocalities", self.retry_remote_localities is not None)):
                if given:
                    v.error(f"http retry policy configured when attempts are set to 0 (disabled): set attempts "
                            f"or remove {name}", name)
            for name, given in (("backoff", self.backoff is not None),
                                ("retryIgnorePreviousHosts", self.retry_ignore_previous_hosts is not None)):
                if given:
                    v.warn(f"{name} has no effect: attempts is 0, so retries are disabled", name)
        if self.retry_on:
            for token in self.retry_on.split(","):
                if not _retry_on_token_ok(token):
                    hint = " (remove the spaces)" if _retry_on_token_ok(token.strip()) else ""
                    v.error(f"{token!r} is not a valid retryOn policy{hint}; use Envoy retry conditions such "
                            "as 5xx, gateway-error, connect-failure, or HTTP status codes", "retryOn")


def _retry_on_token_ok(token: str) -> bool:
    return token in RETRY_ON or (token.isascii() and token.isdigit() and int(token) in HTTP_STATUS_CODES)


_CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CorsPolicy:
    allow_origin: tuple[str, ...] = field(default=(), deprecated=(
        "allowOrigin is deprecated; use allowOrigins with exact, prefix or regex"))
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] = "UNSPECIFIED"

    def _check(self, v: Checker) -> None:
        for i, origin in enumerate(self.allow_origins):
            if not origin.value and origin.regex != "*":
                v.error("an allowOrigins entry needs a non-empty exact, prefix or regex", "allowOrigins", i)
            check_string_match(v, origin, "allowOrigins", i)
        for i, method in enumerate(self.allow_methods):
            if method not in _CORS_METHODS:
                v.error(f"{method!r} is not a supported HTTP method (use {', '.join(sorted(_CORS_METHODS))})",
                        "allowMethods", i)
        for where, names in (("allowHeaders", self.allow_headers), ("exposeHeaders", self.expose_headers)):
            for i, name in enumerate(names):
                if not name:
                    v.error("header name cannot be empty", where, i)
                elif name != "*" and not _TOKEN.fullmatch(name):
                    v.error(f"header name {name!r} is not a valid header name", where, i)
        if self.max_age is not None and abs(self.max_age - round(self.max_age)) > 1e-9:
            v.error("max_age duration is accurate only to seconds precision", "maxAge")


def _check_fault_percentage(v: Checker, percentage: Percent | None) -> None:
    if percentage is not None and 0.0 < percentage.value < 0.0001:
        v.error(f"percentage {percentage.value} is neither 0.0, nor in range [0.0001, 100.0]", "percentage", "value")


GRPC_STATUS_NAMES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})

@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPFaultInjection:
    """Delay and/or abort a share of requests before they are forwarded."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Delay:
        percent: Annotated[int, ranged(0, 100, "percent")] | None = field(default=None, deprecated=(
            "delay.percent is deprecated; use percentage: {value: ...}"))
        fixed_delay: Duration | None = None
        exponential_delay: Duration | None = None
        percentage: Percent | None = None

        @property
        def effective_percentage(self) -> float:
            """percentage.value, else the deprecated percent, else 0 (no percentage: never delayed)."""
            return _effective(self.percentage, self.percent)

        def _check(self, v: Checker) -> None:
            _check_fault_percentage(v, self.percentage)
            if self.fixed_delay is not None and self.exponential_delay is not None:
                v.error("set only one of fixedDelay or exponentialDelay", "exponentialDelay")
            if self.exponential_delay is not None:
                v.error("exponentialDelay not supported yet; use fixedDelay", "exponentialDelay")
            elif self.fixed_delay is None:
                v.warn("delay configured, but fixedDelay not set: nothing is delayed")

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Abort:
        # Istio 1.0 field; current Istio removed it (reserved). Kept so seed-era samples load.
        percent: Annotated[int, ranged(0, 100, "percent")] | None = field(default=None, deprecated=_deprecated(
            "abort.percent", "percentage: {value: ...}", "1.0"))
        http_status: int | None = None
        grpc_status: str | None = None
        http2_error: str | None = None
        percentage: Percent | None = None

        @property
        def effective_percentage(self) -> float:
            """percentage.value, else the Istio 1.0 percent, else 0 (no percentage: never aborted)."""
            return _effective(self.percentage, self.percent)

        def _check(self, v: Checker) -> None:
            _check_fault_percentage(v, self.percentage)
            given = [k for k, val in (("httpStatus", self.http_status), ("grpcStatus", self.grpc_status),
                                      ("http2Error", self.http2_error)) if val is not None]
            if len(given) > 1:
                v.error(f"set only one of httpStatus, grpcStatus or http2Error (found {' and '.join(given)})",
                        given[1])
            if self.http2_error is not None:
                v.error("http2Error: HTTP/2 abort fault injection not supported yet; use httpStatus or grpcStatus",
                        "http2Error")
            if self.http_status is not None and not 200 <= self.http_status <= 600:
                v.error(f"abort httpStatus {self.http_status} is not in range 200..600", "httpStatus")
            if self.grpc_status is not None and self.grpc_status not in GRPC_STATUS_NAMES:
                v.error(f"gRPC status {self.grpc_status!r} is not supported; use a code name such as "
                        "'NOT_FOUND' or 'UNAVAILABLE'", "grpcStatus")
            if not given:
                v.warn("abort configured, but error type not set: nothing is aborted")

    delay: Delay | None = None
    abort: Abort | None = None

    def _check(self, v: Checker) -> None:
        if self.delay is None and self.abort is None:
            v.error("fault injection must have an abort and/or a delay (HTTP fault injection)")


def _effective(percentage: Percent | None, percent: int | None) -> float:
    if percentage is not None:
        return percentage.value
    return float(percent) if percent is not None else 0.0
