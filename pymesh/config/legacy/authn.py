"""authentication.istio.io/v1alpha1 ``Policy`` and ``MeshPolicy`` (Istio 1.0 to 1.5).

Fields follow istio/api ``authentication/v1alpha1/policy.proto`` as Istio 1.1 had it,
plus ``jwks`` from its last revision. Validation follows Istio 1.1's
``pilot/pkg/model/validation.go`` (``ValidateAuthenticationPolicy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pymesh.config.decode import Checker, field
from pymesh.config.resource import KindSpec
from pymesh.config.types import RE2Regex, check_dns_label

__all__ = [
    "KINDS",
    "Jwt",
    "MeshPolicy",
    "MutualTls",
    "OriginAuthenticationMethod",
    "PeerAuthenticationMethod",
    "Policy",
    "PortSelector",
    "StringMatch",
    "TargetSelector",
    "TriggerRule",
]

DEFAULT_POLICY_NAME = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class StringMatch:
    """A path matcher of a JWT trigger rule: one of exact, prefix, suffix, regex."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: RE2Regex | None = None  # full match

    def _check(self, v: Checker) -> None:
        given = [k for k in ("exact", "prefix", "suffix", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            v.error(f"set only one of exact, prefix, suffix or regex, not {' and '.join(given)}", given[1])
        elif not given:
            v.warn("string match sets none of exact, prefix, suffix or regex and matches no path")


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerRule:
    """When a JWT applies: no excluded path matches and (no included paths, or one matches)."""

    excluded_paths: tuple[StringMatch, ...] = ()
    included_paths: tuple[StringMatch, ...] = ()


def check_jwks_uri(uri: str) -> str | None:
    """Istio's ``ParseJwksURI``: an http or https URL with a numeric port if any."""
    try:
        parts = urlsplit(uri)
        _ = parts.port  # raises for a non-numeric or out-of-range port
    except ValueError as exc:
        return f"invalid jwksUri {uri!r}: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"URI scheme {parts.scheme!r} is not supported (use http or https)"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Jwt:
    """How to validate a JWT: issuer, audiences, keys and where to find the token."""

    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: str = ""  # inline JWKS; added after 1.1
    jwt_headers: tuple[str, ...] = ()
    jwt_params: tuple[str, ...] = ()
    trigger_rules: tuple[TriggerRule, ...] = ()  # added in 1.1

    def _check(self, v: Checker) -> None:
        if not self.issuer:
            v.error("issuer must be set", "issuer")
        for i, audience in enumerate(self.audiences):
            if not audience:
                v.error("audience must be non-empty string", "audiences", i)
        if self.jwks_uri:
            problem = check_jwks_uri(self.jwks_uri)
            if problem:
                v.error(problem, "jwksUri")
        for i, header in enumerate(self.jwt_headers):
            if not header:
                v.error("location header must be non-empty string", "jwtHeaders", i)
        for i, param in enumerate(self.jwt_params):
            if not param:
                v.error("location query must be non-empty string", "jwtParams", i)


@dataclass(frozen=True, slots=True, kw_only=True)
class MutualTls:
    """Peer authentication by mutual TLS. ``mode`` defaults to STRICT (enum value 0 here)."""

    allow_tls: bool = field(
        default=False,
        deprecated="allowTls is deprecated: use mode: PERMISSIVE to accept plaintext as well",
    )
    mode: Literal["STRICT", "PERMISSIVE"] = "STRICT"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAuthenticationMethod:
    """One entry of ``peers``: mutual TLS, or (deprecated) a JWT.

    Istio 1.0 wrote ``- mtls:`` (null) or ``- mtls: {}`` to mean STRICT mutual TLS. A
    null ``mtls`` is indistinguishable here from an absent one, so an entry that sets
    neither method counts as STRICT mutual TLS: use :attr:`effective_mtls`.
    """

    mtls: MutualTls | None = None
    jwt: Jwt | None = field(
        default=None,
        deprecated="peer JWT authentication is deprecated: put the JWT under origins",
    )

    @property
    def effective_mtls(self) -> MutualTls | None:
        """The mutual TLS settings this entry asks for, or None for a JWT entry."""
        if self.mtls is not None:
            return self.mtls
        return MutualTls() if self.jwt is None else None

    def _check(self, v: Checker) -> None:
        if self.mtls is not None and self.jwt is not None:
            v.error("a peer authentication method sets either mtls or jwt, not both", "jwt")


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginAuthenticationMethod:
    """One entry of ``origins``: the JWT that authenticates the end user."""

    jwt: Jwt | None = None

    def _check(self, v: Checker) -> None:
        if self.jwt is None:
            v.error("jwt cannot be empty", "jwt")


@dataclass(frozen=True, slots=True, kw_only=True)
class PortSelector:
    """A service port, by number or by name."""

    number: int | None = None
    name: str | None = None

    def _check(self, v: Checker) -> None:
        if self.number is not None and self.name is not None:
            v.error("a port selector sets either number or name, not both", "name")
        elif self.name:
            problem = check_dns_label(self.name, "port name")
            if problem:
                v.error(problem, "name")
        elif self.number:
            if not 1 <= self.number <= 65535:
                v.error(f"port number {self.number} is out of range 1..65535", "number")
        else:  # unset, 0 or "": Istio reports both
            v.error("port selector needs a number (1..65535) or a name (DNS-1123 label)")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSelector:
    """A service (short name, resolved in the policy's namespace) and optionally its ports."""

    name: str = ""
    ports: tuple[PortSelector, ...] = ()
    # Istio 1.1 field, never implemented and removed later; accepted so 1.1 files load.
    labels: Mapping[str, str] = field(
        default_factory=dict,
        deprecated="target labels were never implemented by Istio and are ignored",
    )

    def _check(self, v: Checker) -> None:
        if check_dns_label(self.name) is not None:
            v.error(f"target name {self.name!r} must be a valid label: a service short name "
                    "(lowercase letters, digits and '-')", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Who may call the services it targets (or the whole namespace), and as whom.

    Selection: a Policy whose targets name the service (and port) beats the namespace's
    ``default`` Policy (no targets), which beats the ``default`` MeshPolicy; the winner
    applies whole.
    """

    targets: tuple[TargetSelector, ...] = ()
    peers: tuple[PeerAuthenticationMethod, ...] = ()
    peer_is_optional: bool = False
    origins: tuple[OriginAuthenticationMethod, ...] = ()
    origin_is_optional: bool = False
    principal_binding: Literal["USE_PEER", "USE_ORIGIN"] = "USE_PEER"

    def _check(self, v: Checker) -> None:
        self._check_name(v)
        self._check_issuers(v)
        if self.principal_binding == "USE_ORIGIN" and not self.origins:
            v.warn("principalBinding USE_ORIGIN without origins rejects every request", "principalBinding")

    def _check_name(self, v: Checker) -> None:
        name = v.report.name
        if not name:  # decoded without its metadata: nothing to compare
            return
        if not self.targets and name != DEFAULT_POLICY_NAME:
            v.error(f"authentication policy with no target rules must be named {DEFAULT_POLICY_NAME!r}, "
                    f"found {name!r}")
        if self.targets and name == DEFAULT_POLICY_NAME:
            v.error(f"authentication policy with name {name!r} must not have any target rules", "targets")

    def _check_issuers(self, v: Checker) -> None:
        seen: set[str] = set()
        jwts: list[tuple[Jwt, tuple[str | int, ...]]] = []
        jwts += [(p.jwt, ("peers", i, "jwt")) for i, p in enumerate(self.peers) if p.jwt is not None]
        jwts += [(o.jwt, ("origins", i, "jwt")) for i, o in enumerate(self.origins) if o.jwt is not None]
        for jwt, where in jwts:
            if jwt.issuer in seen:
                v.error(f"jwt with issuer {jwt.issuer!r} already defined", *where, "issuer")
            seen.add(jwt.issuer)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshPolicy(Policy):
    """The cluster-scoped Policy for the whole mesh: named ``default``, no targets."""

    def _check_name(self, v: Checker) -> None:
        name = v.report.name
        if name and name != DEFAULT_POLICY_NAME:
            v.error(f"cluster-scoped authentication policy name must be {DEFAULT_POLICY_NAME!r}, found {name!r}")
        if self.targets:
            v.error("cluster-scoped authentication policy must not have targets", "targets")


_GROUP = "authentication.istio.io"

KINDS: tuple[KindSpec, ...] = (
    KindSpec(_GROUP, "Policy", ("v1alpha1",), Policy, legacy=True),
    KindSpec(_GROUP, "MeshPolicy", ("v1alpha1",), MeshPolicy, legacy=True, namespaced=False),
)
