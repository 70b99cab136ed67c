"""security.istio.io v1 / v1beta1: PeerAuthentication, RequestAuthentication and AuthorizationPolicy.

AuthorizationPolicy lives in :mod:`pymesh.config.security_authz` and is re-exported here.
Validation follows istio/istio ``pkg/config/validation/validation.go`` and the CRD schema
(``manifests/charts/base/files/crd-all.gen.yaml``), which adds rules the webhook lacks.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pymesh.config.common import PolicyTargetReference, WorkloadSelector
from pymesh.config.decode import Checker, Invalid, Parse, field
from pymesh.config.resource import KindSpec
from pymesh.config.security_authz import (
    AuthorizationAction,
    AuthorizationPolicy,
    Condition,
    ExtensionProvider,
    Operation,
    Rule,
    RuleFrom,
    RuleTo,
    Source,
    check_policy_scope,
)
from pymesh.config.types import Duration, fetch_target_warning

__all__ = [
    "KINDS",
    "AuthorizationAction",
    "AuthorizationPolicy",
    "ClaimToHeader",
    "Condition",
    "ExtensionProvider",
    "JWTHeader",
    "JWTPresence",
    "JWTRule",
    "MtlsMode",
    "MutualTLS",
    "Operation",
    "PeerAuthentication",
    "RequestAuthentication",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "Source",
]

# -- PeerAuthentication ----------------------------------------------------------------------------

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MutualTLS:
    """Server-side mTLS acceptance; UNSET inherits from the enclosing scope (PERMISSIVE at the top)."""

    mode: MtlsMode = "UNSET"


_PORT_KEY = re.compile(r"[0-9]+")


def _port_keys(value: Mapping[str, MutualTLS]) -> Mapping[int, MutualTLS]:
    """``portLevelMtls`` keys are workload port numbers (a protobuf ``map<uint32, ...>``)."""
    if not value:
        raise Invalid("port level mTLS, if defined, must have at least one element")
    out: dict[int, MutualTLS] = {}
    for key, mtls in value.items():
        if not _PORT_KEY.fullmatch(key):
            raise Invalid(f"portLevelMtls key {key!r} is not a port number")
        port = int(key)
        if not 1 <= port <= 65535:
            raise Invalid(f"portLevelMtls port {key} must be between 1-65535")
        if port in out:
            raise Invalid(f"portLevelMtls port {port} is given twice")
        out[port] = mtls
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAuthentication:
    """Which mTLS modes the selected workloads accept, optionally per workload port."""

    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: Annotated[Mapping[int, MutualTLS], Parse(dict[str, MutualTLS], _port_keys)] = field(
        default_factory=dict
    )

    def _check(self, v: Checker) -> None:
        if self.selector is not None and not self.selector.match_labels:
            v.warn("workload selector specified without labels", "selector")
        if self.port_level_mtls and (self.selector is None or not self.selector.match_labels):
            v.error("portLevelMtls requires selector: mesh/namespace peer authentication cannot have port "
                    "level mTLS", "portLevelMtls")

    @property
    def mode(self) -> MtlsMode:
        """The workload-wide mode, UNSET when ``mtls`` is absent."""
        return "UNSET" if self.mtls is None else self.mtls.mode


# -- RequestAuthentication -------------------------------------------------------------------------

JWTPresence = Literal["OPTIONAL", "REQUIRED"]


def _not_empty(what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value:
            raise Invalid(f"{what} must be a non-empty string")
        return value

    return check


def _max_items(limit: int, what: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def check(value: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(value) > limit:
            raise Invalid(f"{what} has {len(value)} entries; at most {limit} are allowed")
        return value

    return check


_STRICT_HEADER = re.compile(r"[-_A-Za-z0-9]+")


def _strict_header(value: str) -> str:
    if not value:
        raise Invalid("header name cannot be empty")
    if not _STRICT_HEADER.fullmatch(value):
        raise Invalid(f"header name {value!r} is not a valid header name (letters, digits, '-' and '_' only)")
    return value


def _jwks_uri(value: str) -> str:
    if not value:
        raise Invalid("jwksUri must not be empty; leave it out to use OIDC discovery")
    if len(value) > 2048:
        raise Invalid("jwksUri is longer than 2048 characters")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a malformed port)
    except ValueError as exc:
        raise Invalid(f"jwksUri {value!r} is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise Invalid(f"jwksUri {value!r}: url must have scheme http:// or https://")
    if not parts.hostname:
        raise Invalid(f"jwksUri {value!r} has no host")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class JWTHeader:
    """A header carrying the token; ``prefix`` (e.g. ``Bearer ``) is stripped before decoding."""

    name: Annotated[str, _not_empty("location header name")]
    prefix: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimToHeader:
    """Copy a claim of a verified token into a request header."""

    header: Annotated[str, _strict_header]
    claim: Annotated[str, _not_empty("claim")]


# The members a JWK of each type must carry (RFC 7518 section 6, RFC 8037).
_KEY_TYPES = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x"), "oct": ("k",)}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


def _jwks_problems(text: str) -> tuple[str | None, list[int]]:
    """The reason inline ``jwks`` is unusable (or None), and the indexes of keys holding private material."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return f"jwks parse error: not valid JSON ({exc})", []
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        return 'jwks parse error: expected a JSON object with a "keys" list', []
    private: list[int] = []
    for i, key in enumerate(data["keys"]):
        if not isinstance(key, dict):
            return f"jwks parse error: key at index {i} is not a JSON object", []
        kty = key.get("kty")
        if kty not in _KEY_TYPES:
            return f"jwks parse error: key at index {i} has unsupported kty {kty!r} (RSA, EC, OKP or oct)", []
        missing = [m for m in _KEY_TYPES[kty] if not isinstance(key.get(m), str) or not key[m]]
        if missing:
            return f"jwks parse error: {kty} key at index {i} lacks {', '.join(missing)}", []
        if kty == "oct" or _PRIVATE_MEMBERS.intersection(key):
            private.append(i)
    return None, private


@dataclass(frozen=True, slots=True, kw_only=True)
class JWTRule:
    """One JWT issuer: where its keys come from, where the token is read, what is passed on."""

    issuer: Annotated[str, _not_empty("issuer")] = ""
    audiences: tuple[Annotated[str, _not_empty("audience")], ...] = ()
    jwks_uri: Annotated[str, _jwks_uri] = ""
    jwks: str = ""
    from_headers: tuple[JWTHeader, ...] = ()
    from_params: tuple[Annotated[str, _not_empty("location query")], ...] = ()
    output_payload_to_header: str = ""
    from_cookies: tuple[Annotated[str, _not_empty("cookie name")], ...] = ()
    forward_original_token: bool = False
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    timeout: Duration | None = None  # JWKS fetch timeout; Istio's default is 5s
    space_delimited_claims: Annotated[
        tuple[Annotated[str, _not_empty("space-delimited claim name")], ...], _max_items(64, "spaceDelimitedClaims")
    ] = ()
    # In istio/istio's CRD (2026) ahead of the istio/api proto.
    presence: JWTPresence = "OPTIONAL"

    def _check(self, v: Checker) -> None:
        if not self.issuer and not self.jwks_uri:
            v.error("issuer or jwksUri must be non-empty string", "issuer")
        if self.jwks and self.jwks_uri:
            v.error("only one of jwks or jwksUri can be set", "jwks")
        if self.jwks:
            problem, private = _jwks_problems(self.jwks)
            if problem is not None:
                v.error(problem, "jwks")
            for i in private:
                v.warn(f"jwks key at index {i} contains private key material; only public keys are used "
                       "for verification", "jwks")
        if self.jwks_uri:
            if self.jwks_uri.lower().startswith("http://"):
                v.warn(f"jwksUri {self.jwks_uri!r} is plain http: anyone on the path can replace the keys "
                       "tokens are checked with; use https", "jwksUri")
            internal = fetch_target_warning(self.jwks_uri, "jwksUri")
            if internal is not None:
                v.warn(internal, "jwksUri")

    @property
    def timeout_seconds(self) -> float:
        return 5.0 if self.timeout is None else self.timeout


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAuthentication:
    """Which JWTs the selected workloads accept; a request without a token still passes authentication."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] = ()
    jwt_rules: Annotated[tuple[JWTRule, ...], _max_items(4096, "jwtRules")] = ()

    def _check(self, v: Checker) -> None:
        check_policy_scope(v, self.selector, self.target_ref, self.target_refs)


_VERSIONS = ("v1", "v1beta1")

KINDS: tuple[KindSpec, ...] = (
    KindSpec("security.istio.io", "PeerAuthentication", _VERSIONS, PeerAuthentication),
    KindSpec("security.istio.io", "RequestAuthentication", _VERSIONS, RequestAuthentication),
    KindSpec("security.istio.io", "AuthorizationPolicy", _VERSIONS, AuthorizationPolicy),
)
