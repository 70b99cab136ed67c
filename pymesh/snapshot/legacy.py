"""Istio 1.0/1.1 security objects, translated once into the current model.

:func:`translate` runs at snapshot build, without I/O, so that one engine enforces old and
new policies alike:

- authentication.istio.io ``Policy``/``MeshPolicy`` ``peers`` become PeerAuthentication and
  ``origins`` become RequestAuthentication resources. What the current API cannot say (a
  token is *required*, only on the paths its trigger rules select; which policy wins) is
  kept in :class:`OriginRequirement` records.
- rbac.istio.io ``ClusterRbacConfig``/``RbacConfig``, ``ServiceRole`` and
  ``ServiceRoleBinding`` become ALLOW AuthorizationPolicy resources, including an ALLOW
  policy without rules (which denies everything) for each scope RBAC turns on.
- Mixer ``rule`` + ``denier``/``listchecker`` handler + ``checknothing``/``listentry``
  instance become :class:`MixerCheck` records with the parsed expressions.

Every synthetic resource carries the legacy document's ``source``, its metadata, and the
annotation :data:`TRANSLATED_FROM` naming the documents it came from. Problems that Istio
reported at runtime (a reference to nothing, an unsupported key) skip the part concerned
and add a line to :attr:`LegacyPolicies.warnings`.

Conventions shared with :mod:`pymesh.snapshot.policies`: a legacy *service* is a workload
whose name or ``app`` label is the service name (a ``Service`` target; PeerAuthentication,
which has no ``targetRefs``, selects ``app: <service>``), a service port is taken to be the
workload port, and MeshConfig ``rootNamespace`` plays the part of Mixer's default config
namespace (``istio-system``).

Where the current model cannot say what Istio 1.x did, the translation picks the safer side
and warns: a ServiceRole ``services`` pattern other than ``*``, a full service name or a
namespace-wide ``*.<ns>.svc.cluster.local``, a wildcard ``destination.labels`` value and
``destination.user`` skip the rule (grant less); a grant in the root namespace not limited
to named services (which would become mesh-wide) is left out; unsupported constraint keys are
ignored and unsupported subject properties match nobody, both as Istio 1.1 did. Ties
between policies Istio 1.1 resolved in store order are resolved by name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from pymesh.config.common import PolicyTargetReference, WorkloadSelector
from pymesh.config.legacy import authn, mixer, rbac
from pymesh.config.legacy.expr import Expression, ExpressionError, Value, parse, parse_match
from pymesh.config.meshconfig import MeshConfig
from pymesh.config.resource import ObjectMeta, Resource, Source
from pymesh.config.security import JWTHeader, JWTRule, MtlsMode, MutualTLS, PeerAuthentication, RequestAuthentication
from pymesh.config.security_authz import AuthorizationPolicy, Condition, Operation, RuleFrom, RuleTo
from pymesh.config.security_authz import Rule as AuthzRule
from pymesh.config.security_authz import Source as AuthzSource

__all__ = [
    "DRY_RUN",
    "GRPC_CODES",
    "TRANSLATED_FROM",
    "DenyAction",
    "LegacyPolicies",
    "ListAction",
    "MixerCheck",
    "OriginJwt",
    "OriginRequirement",
    "OriginTarget",
    "denial",
    "grpc_to_http",
    "translate",
]

TRANSLATED_FROM = "pymesh.io/translated-from"
DRY_RUN = "istio.io/dry-run"

_AUTHN = "authentication.istio.io"
_RBAC = "rbac.istio.io"
_MIXER = "config.istio.io"
_API = "security.istio.io/v1beta1"
_SVC_DOMAIN = "svc.cluster.local"


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginJwt:
    """One ``origins`` JWT: its issuer and the paths it is required on."""

    issuer: str
    trigger_rules: tuple[authn.TriggerRule, ...] = ()

    def triggered(self, path: str) -> bool:
        """Istio 1.1: no rules, or some rule with no excluded path matching and an included one (if any) matching.

        ``path`` is the request path; its query and fragment are ignored.
        """
        if not self.trigger_rules:
            return True
        path = path.split("?", 1)[0].split("#", 1)[0]
        return any(
            not any(_path_matches(m, path) for m in rule.excluded_paths)
            and (not rule.included_paths or any(_path_matches(m, path) for m in rule.included_paths))
            for rule in self.trigger_rules
        )


def _path_matches(m: authn.StringMatch, path: str) -> bool:
    if m.exact is not None:
        return path == m.exact
    if m.prefix is not None:
        return path.startswith(m.prefix)
    if m.suffix is not None:
        return path.endswith(m.suffix)
    if m.regex is not None:
        return re.fullmatch(m.regex, path) is not None
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginTarget:
    """A service a Policy targets; no ports means all of them."""

    service: str
    ports: tuple[int, ...] = ()
    port_names: tuple[str, ...] = ()

    def selects(self, name: str, labels: Mapping[str, str], port: int | None, port_name: str | None) -> bool:
        if self.service not in (name, labels.get("app")):
            return False
        if not self.ports and not self.port_names:
            return True
        return (port is not None and port in self.ports) or (port_name is not None and port_name in self.port_names)


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginRequirement:
    """What one legacy Policy/MeshPolicy asks of the request's origin (end user).

    One record per legacy policy, with or without ``origins``: in Istio 1.x the most
    specific policy wins WHOLE (service > namespace > mesh), so a targeted policy without
    origins frees its services from a namespace policy's token requirement. Pick the
    winner with :meth:`LegacyPolicies.origin_requirement`.

    Istio 1.1 semantics for the winner: the JWTs whose trigger rules select the path are
    tried in order and the first valid one sets the origin; if some JWT is triggered and
    none is valid, the request fails with :attr:`status` and :attr:`body` unless
    :attr:`optional`; if none is triggered it passes without an origin. ``USE_ORIGIN``
    with no origins at all always fails. CORS preflight requests pass. The token checks
    themselves (keys, issuer, audiences, where the token is read) are the
    RequestAuthentication named by :attr:`request_authentication`.
    """

    policy: str  # the legacy document, as in TRANSLATED_FROM
    source: Source
    level: Literal["mesh", "namespace", "service"]
    namespace: str  # where it applies; the root namespace for the MeshPolicy
    targets: tuple[OriginTarget, ...] = ()
    origins: tuple[OriginJwt, ...] = ()
    optional: bool = False  # originIsOptional
    principal_binding: Literal["USE_PEER", "USE_ORIGIN"] = "USE_PEER"
    request_authentication: str = ""  # "namespace/name" of the translated RequestAuthentication
    status: int = 401
    body: str = "Origin authentication failed."

    @property
    def always_fails(self) -> bool:
        return self.principal_binding == "USE_ORIGIN" and not self.origins

    def triggered(self, path: str) -> tuple[OriginJwt, ...]:
        return tuple(o for o in self.origins if o.triggered(path))


GRPC_CODES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)
"""gRPC status code names by number."""

# The istio/proxy mixer filter's gRPC -> HTTP mapping (not Mixer's own HTTPStatusFromCode).
_HTTP = (200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401)

PERMISSION_DENIED = 7
UNAVAILABLE = 14
INVALID_ARGUMENT = 3
FAILED_PRECONDITION = 9


def grpc_to_http(code: int) -> int:
    """The HTTP status the sidecar answered a failed Mixer check with (500 for an unknown code)."""
    return _HTTP[code] if 0 <= code < len(_HTTP) else 500


def denial(failures: Sequence[tuple[str, int, str]]) -> tuple[int, str]:
    """HTTP status and body for failed checks ``(handler, code, message)``, in dispatch order.

    As Mixer: the first failure's code wins and ``handler:message`` parts are joined with
    ``", "``; the body is ``<CODE_NAME>:<parts>``, e.g. ``PERMISSION_DENIED:h.denier.ns:Not allowed``.
    """
    code = failures[0][1]
    name = GRPC_CODES[code] if 0 <= code < len(GRPC_CODES) else str(code)
    return grpc_to_http(code), name + ":" + ", ".join(f"{h}:{m}" for h, _, m in failures)


@dataclass(frozen=True, slots=True, kw_only=True)
class DenyAction:
    """The ``denier`` adapter: every matched request gets this status (code 0 lets it pass)."""

    code: int
    message: str


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class ListAction:
    """The ``listchecker`` adapter with a ``listentry`` instance: is :attr:`value` on the list?

    The ``overrides`` are checked, and the list fetched from ``providerUrl`` when there is one
    (``pymesh.inbound.lists`` fetches it; the enforcer passes its membership test as
    ``fetched``). A miss on a whitelist answers PERMISSION_DENIED (Istio 1.1; 1.0 answered
    NOT_FOUND); with a ``providerUrl`` but no list (never fetched, or past its ttl) the check
    fails closed with UNAVAILABLE, as the adapter's missing list failed every check.
    """

    value: Expression
    overrides: tuple[str, ...] = ()
    entry_type: Literal["STRINGS", "CASE_INSENSITIVE_STRINGS", "IP_ADDRESSES", "REGEX"] = "STRINGS"
    blacklist: bool = False
    provider_url: str = ""
    refresh_interval: float = 60.0
    ttl: float = 300.0
    networks: tuple[IPNetwork, ...] = ()  # IP_ADDRESSES, precomputed
    patterns: tuple[re.Pattern[str], ...] = ()  # REGEX, precomputed (unanchored search)
    miss_code: int = PERMISSION_DENIED

    def contains(self, symbol: str, fetched: Callable[[str], bool] | None = None) -> bool:
        """Membership as the list adapter decides it; raises ValueError for a non-IP on an IP list."""
        if self.entry_type == "STRINGS":
            found = symbol in self.overrides
        elif self.entry_type == "CASE_INSENSITIVE_STRINGS":
            found = symbol.upper() in {o.upper() for o in self.overrides}
        elif self.entry_type == "REGEX":
            found = any(p.search(symbol) for p in self.patterns)
        else:
            try:
                address = ipaddress.ip_address(symbol)
            except ValueError:
                raise ValueError(f"{symbol} is not a valid IP address") from None
            found = any(address in net for net in self.networks if net.version == address.version)
        return found or (fetched is not None and fetched(symbol))

    def verdict(self, value: Value, fetched: Callable[[str], bool] | None = None) -> tuple[int, str]:
        """``(grpc code, message)`` for the evaluated :attr:`value`; ``(0, "")`` lets the request pass.

        ``fetched``: membership in the list from :attr:`provider_url`, None when there is none.
        """
        if self.provider_url and fetched is None:
            return UNAVAILABLE, f"the list from {self.provider_url} is not available"
        if isinstance(value, ipaddress.IPv6Address) and value.ipv4_mapped is not None:
            value = value.ipv4_mapped
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            symbol = str(value)
        elif isinstance(value, str) and value:
            symbol = value
        else:
            return INVALID_ARGUMENT, f"{value} is not a valid string or IP address"
        try:
            found = self.contains(symbol, fetched)
        except ValueError as exc:
            return INVALID_ARGUMENT, str(exc)
        if self.blacklist:
            return (PERMISSION_DENIED, f"{symbol} is blacklisted") if found else (0, "")
        return (0, "") if found else (self.miss_code, f"{symbol} is not whitelisted")


@dataclass(frozen=True, slots=True, kw_only=True)
class MixerCheck:
    """One Mixer check: when :attr:`match` holds for a request in scope, run :attr:`action`.

    Scope: :attr:`mesh_wide` rules (those in the root namespace) apply to every request,
    others to requests whose destination is in :attr:`namespace`. ``match`` None is
    "always"; a match that fails to evaluate (a missing attribute) does not match. Failed
    checks answer as :func:`denial` says, naming :attr:`handler`.
    """

    rule: str  # "namespace/name" of the rule
    source: Source
    namespace: str
    mesh_wide: bool
    match: Expression | None
    handler: str  # Mixer's handler name in messages: "<name>.<kind>.<ns>" (1.0 kinds) or "<name>.<ns>"
    instance: str  # "<name>.<kind>.<ns>"
    adapter: Literal["denier", "listchecker"]
    action: DenyAction | ListAction
    action_index: int = 0

    def applies_to(self, namespace: str) -> bool:
        return self.mesh_wide or namespace == self.namespace


@dataclass(frozen=True, slots=True)
class LegacyPolicies:
    """Everything the legacy objects of one config mean, computed once per snapshot."""

    resources: tuple[Resource[Any], ...] = ()  # PeerAuthentication, RequestAuthentication, AuthorizationPolicy
    origins: tuple[OriginRequirement, ...] = ()
    mixer_checks: tuple[MixerCheck, ...] = ()  # root-namespace rules first, then by namespace and name
    warnings: tuple[str, ...] = ()

    def origin_requirement(
        self, namespace: str, name: str, labels: Mapping[str, str], port: int | None = None,
        port_name: str | None = None,
    ) -> OriginRequirement | None:
        """The legacy authentication policy that wins for a workload port (Istio 1.1's selection).

        A service-level policy targeting the workload (and the port, if it names ports) wins,
        ties going to the first by name; then the namespace's ``default`` Policy; then the
        ``default`` MeshPolicy.
        """
        for level in ("service", "namespace"):
            for req in self.origins:
                if req.level == level and req.namespace == namespace and (
                    level == "namespace" or any(t.selects(name, labels, port, port_name) for t in req.targets)
                ):
                    return req
        return next((r for r in self.origins if r.level == "mesh"), None)

    def mixer_checks_for(self, namespace: str) -> tuple[MixerCheck, ...]:
        return tuple(c for c in self.mixer_checks if c.applies_to(namespace))


# -- shared helpers --------------------------------------------------------------------------------


def _describe(res: Resource[Any]) -> str:
    ident = f"{res.namespace}/{res.name}" if res.namespace else res.name
    return f"{res.api_version} {res.kind} {ident}"


@dataclass(slots=True)
class _Out:
    mesh: MeshConfig
    resources: list[Resource[Any]] = field(default_factory=list)
    origins: list[OriginRequirement] = field(default_factory=list)
    checks: list[MixerCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.mesh.root_namespace

    def warn(self, res: Resource[Any], message: str) -> None:
        ident = f"{res.namespace}/{res.name}" if res.namespace else res.name
        self.warnings.append(f"{res.source}: {res.kind} {ident}: {message}")

    def emit(
        self, kind: str, spec: Any, origin: Resource[Any], name: str, namespace: str,
        sources: Sequence[Resource[Any]] = (), dry_run: bool = False,
    ) -> Resource[Any]:
        annotations = dict(origin.metadata.annotations)
        annotations[TRANSLATED_FROM] = ", ".join(_describe(r) for r in (sources or (origin,)))
        if dry_run:
            annotations[DRY_RUN] = "true"
        meta: ObjectMeta = replace(origin.metadata, name=name, namespace=namespace, annotations=annotations)
        res: Resource[Any] = Resource(api_version=_API, kind=kind, metadata=meta, spec=spec, source=origin.source)
        self.resources.append(res)
        return res


def _service_ref(name: str) -> PolicyTargetReference:
    return PolicyTargetReference(name=name, kind="Service")


def _of(resources: Sequence[Resource[Any]], group: str, *kinds: str) -> list[Resource[Any]]:
    return sorted((r for r in resources if r.group == group and r.kind in kinds),
                  key=lambda r: (r.namespace, r.name))


# -- authentication --------------------------------------------------------------------------------


def _peer_mode(res: Resource[Any], out: _Out) -> MtlsMode:
    spec: authn.Policy = res.spec
    if any(p.jwt is not None for p in spec.peers):
        out.warn(res, "peer JWT authentication is not translated; only mutual TLS peers are")
    methods = [m for m in (p.effective_mtls for p in spec.peers) if m is not None]
    if not methods:
        return "DISABLE"  # no peer authentication: plaintext, as Istio 1.x set up the listener
    mtls = methods[0]
    if mtls.allow_tls and mtls.mode == "STRICT":
        out.warn(res, "allowTls (TLS without a client certificate) has no current equivalent; translated as "
                      "PERMISSIVE")
        return "PERMISSIVE"
    return "PERMISSIVE" if spec.peer_is_optional else mtls.mode


def _jwt_rule(jwt: authn.Jwt) -> JWTRule:
    return JWTRule(
        issuer=jwt.issuer,
        audiences=jwt.audiences,
        jwks_uri=jwt.jwks_uri,
        jwks=jwt.jwks,
        from_headers=tuple(JWTHeader(name=h) for h in jwt.jwt_headers),
        from_params=jwt.jwt_params,
        forward_original_token=True,  # Istio 1.x forwarded the token
    )


def _origins(
    res: Resource[Any], out: _Out, level: Literal["mesh", "namespace", "service"], namespace: str,
    targets: tuple[OriginTarget, ...],
) -> None:
    spec: authn.Policy = res.spec
    jwts = [o.jwt for o in spec.origins if o.jwt is not None]
    ra = ""
    if jwts:
        refs = tuple(_service_ref(n) for n in dict.fromkeys(t.service for t in targets))
        ra_spec = RequestAuthentication(target_refs=refs, jwt_rules=tuple(_jwt_rule(j) for j in jwts))
        out.emit("RequestAuthentication", ra_spec, res, res.name, namespace)
        ra = f"{namespace}/{res.name}"
        if any(t.ports or t.port_names for t in targets):
            out.warn(res, "a RequestAuthentication cannot be limited to ports: the translated one validates "
                          "tokens on every port of the targets (the requirement keeps the ports)")
    out.origins.append(OriginRequirement(
        policy=_describe(res), source=res.source, level=level, namespace=namespace, targets=targets,
        origins=tuple(OriginJwt(issuer=j.issuer, trigger_rules=j.trigger_rules) for j in jwts),
        optional=spec.origin_is_optional, principal_binding=spec.principal_binding, request_authentication=ra,
    ))


def _translate_authn(resources: Sequence[Resource[Any]], out: _Out) -> None:
    policies = _of(resources, _AUTHN, "Policy")
    modes = {id(r): _peer_mode(r, out) for r in policies}
    for res in _of(resources, _AUTHN, "MeshPolicy"):
        if res.name != authn.DEFAULT_POLICY_NAME:
            out.warn(res, "only the MeshPolicy named 'default' is used; this one is ignored")
            continue
        mode = _peer_mode(res, out)
        out.emit("PeerAuthentication", PeerAuthentication(mtls=MutualTLS(mode=mode)), res, res.name, out.root)
        _origins(res, out, "mesh", out.root, ())
    for res in policies:
        if res.spec.targets:
            continue
        if res.namespace == out.root:
            out.warn(res, "a namespace-wide Policy in the root namespace applies to the whole mesh once translated")
        spec = PeerAuthentication(mtls=MutualTLS(mode=modes[id(res)]))
        out.emit("PeerAuthentication", spec, res, res.name, res.namespace)
        _origins(res, out, "namespace", res.namespace, ())
    targeted = [r for r in policies if r.spec.targets]
    for namespace in dict.fromkeys(r.namespace for r in targeted):
        in_ns = sorted((r for r in targeted if r.namespace == namespace), key=lambda r: r.name)
        _targeted_peers(in_ns, modes, out)
        for res in in_ns:
            targets = tuple(OriginTarget(
                service=t.name,
                ports=tuple(p.number for p in t.ports if p.number),
                port_names=tuple(p.name for p in t.ports if p.name),
            ) for t in res.spec.targets)
            _origins(res, out, "service", namespace, targets)


def _targeted_peers(policies: list[Resource[Any]], modes: Mapping[int, MtlsMode], out: _Out) -> None:
    """One PeerAuthentication per targeted service, holding each port's Istio 1.1 winner.

    Istio 1.1 let the first matching policy (here: by name) win a service port, whether its
    target named ports or not; a service port is taken to be the same workload port.
    """
    by_service: dict[str, list[tuple[Resource[Any], authn.TargetSelector]]] = {}
    for res in policies:
        for target in res.spec.targets:
            by_service.setdefault(target.name, []).append((res, target))
            for port in target.ports:
                if port.name:
                    out.warn(res, f"target {target.name} port {port.name!r} is named: pymesh cannot map a service "
                                  "port name to a workload port, so this port selector is skipped")
    for service, entries in by_service.items():
        whole = next((r for r, t in entries if not t.ports), None)
        numbers = sorted({p.number for _, t in entries for p in t.ports if p.number})
        port_level: dict[int, MutualTLS] = {}
        contributors = [whole] if whole is not None else []
        for number in numbers:
            winner = next(r for r, t in entries if not t.ports or any(p.number == number for p in t.ports))
            if winner is not whole:
                port_level[number] = MutualTLS(mode=modes[id(winner)])
                if winner not in contributors:
                    contributors.append(winner)
        if not contributors:
            continue
        # PeerAuthentication has no targetRefs: the service is its workloads' ``app`` label.
        spec = PeerAuthentication(
            selector=WorkloadSelector(match_labels={"app": service}),
            mtls=None if whole is None else MutualTLS(mode=modes[id(whole)]),
            port_level_mtls=port_level,
        )
        first = contributors[0]
        if first.namespace == out.root:
            out.warn(first, f"target {service}: a PeerAuthentication with a selector in the root namespace is "
                            "ignored (as istiod ignores it), so this service-level mTLS setting has no effect")
        out.emit("PeerAuthentication", spec, first, f"{first.name}.{service}", first.namespace, contributors)


# -- RBAC ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where one role rule applies inside its namespace: all, some services, and/or label sets."""

    services: tuple[str, ...] | None = None  # None: every service
    labels: tuple[Mapping[str, str], ...] | None = None  # None: no label condition; else any of these


def _fqdn(host: str) -> tuple[str, str] | None:
    """``name.ns.svc.cluster.local`` -> (ns, name)."""
    parts = host.split(".")
    if len(parts) >= 4 and parts[2] == "svc" and all(parts[:2]):
        return parts[1], parts[0]
    return None


@dataclass(slots=True)
class _Rbac:
    config: Resource[Any]
    spec: rbac.ClusterRbacConfig
    permissive: bool

    @property
    def target(self) -> rbac.RbacTarget:
        spec = self.spec
        return (spec.inclusion if spec.mode == "ON_WITH_INCLUSION" else spec.exclusion) or rbac.RbacTarget()

    def services(self, namespace: str) -> tuple[str, ...]:
        """Short names of the target services (FQDNs) in ``namespace``."""
        parsed = (_fqdn(s) for s in self.target.services)
        return tuple(dict.fromkeys(p[1] for p in parsed if p is not None and p[0] == namespace))

    def enabled(self, namespace: str) -> tuple[str, ...] | Literal[False] | None:
        """False: RBAC is off for the namespace; None: on for all its services; a tuple: on for those only."""
        mode = self.spec.mode
        if mode == "ON":
            return None
        listed = namespace in self.target.namespaces
        if mode == "ON_WITH_INCLUSION":
            return None if listed else (self.services(namespace) or False)
        return False if listed else None  # excluded services get an allow-all policy instead


def _rbac_config(resources: Sequence[Resource[Any]], out: _Out) -> _Rbac | None:
    found = [r for r in _of(resources, _RBAC, "ClusterRbacConfig") if r.name == rbac.DEFAULT_RBAC_CONFIG_NAME]
    if not found:  # Istio 1.1 falls back to the 1.0 kind
        found = [r for r in _of(resources, _RBAC, "RbacConfig") if r.name == rbac.DEFAULT_RBAC_CONFIG_NAME]
    if not found:
        return None
    for extra in found[1:]:
        out.warn(extra, f"another {extra.kind} named 'default' is used instead: {found[0].source}")
    config = _Rbac(found[0], found[0].spec, found[0].spec.enforcement_mode == "PERMISSIVE")
    if config.spec.mode == "OFF":
        return None
    if config.spec.mode == "ON_WITH_EXCLUSION" and out.root in config.target.namespaces:
        out.warn(found[0], f"excluding the root namespace {out.root} cannot be expressed once translated (a "
                           "policy there applies to the whole mesh); RBAC is translated as OFF")
        return None
    return config


def _translate_rbac(resources: Sequence[Resource[Any]], out: _Out) -> None:
    bindings = _of(resources, _RBAC, "ServiceRoleBinding")
    config = _rbac_config(resources, out)
    if config is None:
        for res in bindings:
            out.warn(res, "RBAC is off (no ClusterRbacConfig or RbacConfig 'default' with a mode other than OFF), "
                          "so this binding has no effect")
        return
    _rbac_base(config, out)
    roles = {(r.namespace, r.name): r for r in _of(resources, _RBAC, "ServiceRole")}
    for binding in bindings:
        enabled = config.enabled(binding.namespace)
        if enabled is False:
            continue
        spec: rbac.ServiceRoleBinding = binding.spec
        role_name = spec.role_ref.name if spec.role_ref is not None else spec.role.lstrip("/")
        role = roles.get((binding.namespace, role_name)) if role_name else None
        sources: list[Resource[Any]] = [binding]
        if spec.actions:
            rules = spec.actions
        elif role is None:
            out.warn(binding, f"ServiceRole {role_name!r} not found in namespace {binding.namespace}; "
                              "the binding grants nothing")
            continue
        else:
            rules = role.spec.rules
            sources.append(role)
        subjects = _subjects(binding, out)
        if not subjects:
            continue
        dry_run = config.permissive or spec.mode == "PERMISSIVE"
        for i, rule in enumerate(rules):
            _role_rule(binding, sources, i, rule, subjects, enabled, dry_run, out)


def _rbac_base(config: _Rbac, out: _Out) -> None:
    """The ALLOW policies without rules (deny by default) RBAC turns on, and the exclusions' allow-alls."""
    res, mode, target = config.config, config.spec.mode, config.target

    def emit(name: str, namespace: str, refs: tuple[str, ...] = (), allow_all: bool = False) -> None:
        policy = AuthorizationPolicy(target_refs=tuple(_service_ref(r) for r in refs),
                                     rules=(AuthzRule(),) if allow_all else ())
        out.emit("AuthorizationPolicy", policy, res, name, namespace, dry_run=config.permissive)

    base = f"{res.name}.deny-by-default"
    if mode == "ON":
        emit(base, out.root)
        return
    for host in target.services:
        if _fqdn(host) is None:
            out.warn(res, f"service {host!r} is not a Kubernetes service name (name.namespace.svc.cluster.local) "
                          "and matches nothing")
    by_namespace = {ns: config.services(ns) for ns in dict.fromkeys(p[0] for p in map(_fqdn, target.services) if p)}
    partial = {ns: names for ns, names in by_namespace.items() if ns not in target.namespaces}
    if mode == "ON_WITH_INCLUSION":
        for ns in dict.fromkeys(target.namespaces):
            if ns == out.root:
                out.warn(res, f"including the root namespace {ns} cannot be expressed on its own once translated "
                              "(a policy there applies to the whole mesh); its deny-by-default is left out")
                continue
            emit(base, ns)
        for ns, names in partial.items():
            emit(f"{base}.services", ns, names)
        return
    emit(base, out.root)  # ON_WITH_EXCLUSION: deny everywhere, allow all where excluded
    for ns in dict.fromkeys(target.namespaces):
        emit(f"{res.name}.excluded", ns, allow_all=True)
    for ns, names in partial.items():
        emit(f"{res.name}.excluded-services", ns, names, allow_all=True)


_Subject = tuple[AuthzSource | None, tuple[Condition, ...]]


def _subjects(binding: Resource[Any], out: _Out) -> list[_Subject]:
    """Each subject as (source or None for anyone, conditions); subjects that match nobody are dropped."""
    result: list[_Subject] = []
    for i, subject in enumerate(binding.spec.subjects):
        translated = _subject(subject)
        if isinstance(translated, str):
            out.warn(binding, f"subjects[{i}]: {translated}; Istio 1.1 never matched it, so it grants nothing")
        else:
            result.append(translated)
    return result


def _subject(s: rbac.Subject) -> _Subject | str:
    f: dict[str, list[str]] = {}
    when: list[Condition] = []

    def add(name: str, *values: str) -> None:
        f.setdefault(name, []).extend(v for v in values if v not in f.get(name, []))

    if s.user and s.user != "*":  # "*" is anyone, authenticated or not
        add("principals", s.user)
    add("principals", *s.names)
    add("not_principals", *s.not_names)
    add("namespaces", *s.namespaces)
    add("not_namespaces", *s.not_namespaces)
    add("ip_blocks", *s.ips)
    add("not_ip_blocks", *s.not_ips)
    groups = (*s.groups, *((s.group,) if s.group else ()))
    if groups or s.not_groups:
        when.append(Condition(key="request.auth.claims[groups]", values=groups, not_values=s.not_groups))
    for key in sorted(s.properties):
        value = s.properties[key]
        if key in ("source.principal", "source.user"):
            if not s.user:
                add("principals", value)
        elif key == "source.namespace":
            add("namespaces", value)
        elif key == "source.ip":
            add("ip_blocks", value)
        elif key == "request.auth.principal":
            add("request_principals", value)
        elif key in ("request.auth.audiences", "request.auth.presenter") or (
            key.startswith(("request.headers[", "request.auth.claims[")) and key.endswith("]")
        ):
            when.append(Condition(key=key, values=(value,)))
        else:
            return f"unsupported property key {key!r}"
    source = AuthzSource(**{k: tuple(v) for k, v in f.items() if v}) if any(f.values()) else None
    return source, tuple(when)


def _role_rule(
    binding: Resource[Any], sources: Sequence[Resource[Any]], index: int, rule: rbac.AccessRule,
    subjects: list[_Subject], enabled: tuple[str, ...] | None, dry_run: bool, out: _Out,
) -> None:
    namespace = binding.namespace
    where = f"rules[{index}]" if len(sources) > 1 else f"actions[{index}]"
    scope = _rule_scope(rule, namespace, lambda m: out.warn(sources[-1], f"{where}: {m}"))
    if scope is None:
        return
    constrained = _constraints(rule, lambda m: out.warn(sources[-1], f"{where}: {m}"))
    if constrained is None:
        return
    conditions, ports = constrained
    operation = _operation(rule, ports)
    if operation is False:
        return
    to = (RuleTo(operation=operation),) if operation is not None else ()
    rules = tuple(
        AuthzRule(from_=(RuleFrom(source=src),) if src is not None else (), to=to, when=(*conditions, *when))
        for src, when in subjects
    )
    variants = _variants(scope, enabled)
    for j, (refs, labels) in enumerate(variants):
        selector = WorkloadSelector(match_labels=dict(labels)) if labels is not None else None
        policy = AuthorizationPolicy(selector=selector, target_refs=tuple(_service_ref(r) for r in refs), rules=rules)
        name = f"{binding.name}.rule-{index}" + (f"-{j}" if len(variants) > 1 else "")
        if namespace == out.root and (labels is not None or not refs):
            # In the root namespace a policy without targetRefs applies in every namespace.
            out.warn(binding, f"{where}: a grant in the root namespace that is not limited to named services "
                              "would apply to the whole mesh once translated; it is left out")
            continue
        out.emit("AuthorizationPolicy", policy, binding, name, namespace, sources, dry_run=dry_run)


def _glob(value: str, pattern: str) -> bool:
    """Istio 1.1 ``stringMatch``: exact, ``*``, ``prefix*`` or ``*suffix``."""
    if pattern == "*" or value == pattern:
        return True
    return (pattern.endswith("*") and value.startswith(pattern[:-1])) or (
        pattern.startswith("*") and value.endswith(pattern[1:]))


def _service_names(entry: str, namespace: str) -> set[str] | str | None:
    """A ``services`` entry as short names of ``namespace`` (None: all of them), or why it cannot be expressed."""
    if entry == "*" or (entry.startswith("*") and f".{namespace}.{_SVC_DOMAIN}".endswith(entry[1:])):
        return None  # every service of the namespace matches
    if entry.endswith("*") and not entry.startswith("*"):
        name, dot, rest = entry[:-1].partition(".")
        if dot and name and f"{namespace}.{_SVC_DOMAIN}".startswith(rest):
            return {name}
    elif not entry.startswith("*"):
        parsed = _fqdn(entry)
        if parsed is not None:
            return {parsed[1]} if parsed[0] == namespace else set()  # other namespaces never match here
    return (f"services entry {entry!r} cannot be expressed as services of namespace {namespace} (use a full "
            "name like name.namespace.svc.cluster.local, or '*')")


def _rule_scope(rule: rbac.AccessRule, namespace: str, warn: Callable[[str], None]) -> _Scope | None:
    """Which workloads of ``namespace`` the rule covers, or None if none (or it cannot be expressed)."""
    listed: set[str] = set()
    names: set[str] | None = listed
    for entry in rule.services:
        found = _service_names(entry, namespace)
        if isinstance(found, str):
            warn(found + "; the entry is skipped")
        elif found is None:
            names = None
            break
        else:
            listed |= found
    labels: list[dict[str, str]] = [{}]
    for constraint in rule.constraints:
        key, values = constraint.key, tuple(dict.fromkeys(constraint.values))
        wildcard = any("*" in v for v in values)
        if key.startswith("destination.labels[") and key.endswith("]"):
            if wildcard:
                warn(f"constraint {key} with a wildcard value cannot be a workload selector; the rule is skipped")
                return None
            label = key[len("destination.labels["):-1]
            labels = [{**ls, label: v} for ls in labels for v in values if ls.get(label, v) == v]
        elif key == "destination.name":
            if wildcard:
                warn("constraint destination.name with a wildcard value cannot be expressed; the rule is skipped")
                return None
            names = set(values) if names is None else names & set(values)
        elif key == "destination.namespace":
            if not any(_glob(namespace, v) for v in values):
                return None
        elif key == "destination.user":
            warn("constraint destination.user (the workload's service account) cannot be expressed; "
                 "the rule is skipped")
            return None
    if (names is not None and not names) or not labels:
        return None
    return _Scope(None if names is None else tuple(sorted(names)), None if labels == [{}] else tuple(labels))


def _variants(scope: _Scope, enabled: tuple[str, ...] | None) -> list[tuple[tuple[str, ...], Mapping[str, str] | None]]:
    """(target services, selector labels) per policy; a Service target and labels merge via the app label."""
    services = scope.services
    if enabled is not None:
        services = tuple(s for s in (enabled if services is None else services) if s in enabled)
        if not services:
            return []
    if scope.labels is None:
        return [(services or (), None)]
    if services is None:
        return [((), ls) for ls in scope.labels]
    return [((), {**ls, "app": s}) for s in services for ls in scope.labels if ls.get("app", s) == s]


_PLAIN_KEYS = frozenset({"destination.ip", "connection.sni"})


def _constraints(rule: rbac.AccessRule, warn: Callable[[str], None]
                 ) -> tuple[tuple[Condition, ...], tuple[str, ...]] | None:
    """The rule's constraints as conditions and ports; None when one cannot be evaluated."""
    when: list[Condition] = []
    ports: list[str] = []
    for c in rule.constraints:
        key = c.key
        if key.startswith(("destination.labels[",)) or key in ("destination.name", "destination.namespace",
                                                               "destination.user"):
            continue  # decided by _rule_scope
        if key == "destination.port":
            ports += c.values
        elif key in _PLAIN_KEYS or key.startswith("experimental.envoy.filters.") or (
            key.startswith("request.headers[") and key.endswith("]")
        ):
            when.append(Condition(key=key, values=c.values))
        else:
            # Dropping the constraint would grant more than the role says; dropping the rule
            # grants less (ServiceRoles only ever allow), so a rule pymesh cannot check grants nothing.
            warn(f"constraint key {key!r} is not supported: the rule grants nothing")
            return None
    return tuple(when), tuple(ports)


def _operation(rule: rbac.AccessRule, ports: tuple[str, ...]) -> Operation | Literal[False] | None:
    """The rule's ``to.operation``; None for any request, False when nothing can match."""
    fields: dict[str, tuple[str, ...]] = {
        "methods": rule.methods, "paths": rule.paths, "hosts": rule.hosts,
        "not_methods": rule.not_methods, "not_paths": rule.not_paths, "not_hosts": rule.not_hosts,
        "ports": (*(str(p) for p in rule.ports), *ports), "not_ports": tuple(str(p) for p in rule.not_ports),
    }
    for name in ("methods", "paths", "hosts"):
        if "*" in fields[name]:
            fields[name] = ()  # "*" is any value
        if "*" in fields[f"not_{name}"]:
            return False
    kept = {k: v for k, v in fields.items() if v}
    return Operation(**kept) if kept else None


# -- Mixer -----------------------------------------------------------------------------------------

_DENIER_TEMPLATES = frozenset({"checknothing", "listentry"})


@dataclass(frozen=True, slots=True)
class _Handler:
    res: Resource[Any]
    adapter: str  # denier, listchecker, or another adapter's name
    name: str  # as Mixer names it in messages
    params: mixer.DenierParams | mixer.ListcheckerParams | None
    status_given: bool = True


def _canonical(ref: str, kind: str, namespace: str) -> tuple[str, str]:
    """Mixer's canonicalize: ``name.kind.ns`` as is; ``name`` -> in the rule's namespace; ``a.b`` is ambiguous."""
    parts = ref.split(".")
    if len(parts) == 1:
        return f"{ref}.{kind}.{namespace}", ""
    if len(parts) == 2:
        return f"{parts[0]}.{parts[1]}.{namespace}", f"{parts[0]}.{kind}.{parts[1]}"
    return ref, ""


def _key(res: Resource[Any]) -> str:
    return f"{res.name}.{res.kind}.{res.namespace}"


def _handlers(resources: Sequence[Resource[Any]], out: _Out) -> dict[str, _Handler]:
    found: dict[str, _Handler] = {}
    for res in _of(resources, _MIXER, "handler", "denier", "listchecker"):
        if res.kind != "handler":
            found[_key(res)] = _Handler(res, res.kind, _key(res), res.spec)
            continue
        spec: mixer.Handler = res.spec
        adapter = spec.compiled_adapter or spec.adapter
        params: Any = None
        if spec.compiled_adapter in mixer.COMPILED_ADAPTERS:
            try:
                params = spec.compiled_params
            except ValueError as exc:
                out.warn(res, f"params are not valid: {exc}")
                continue
        given = isinstance(spec.params, dict) and "status" in spec.params
        found[_key(res)] = _Handler(res, adapter, f"{res.name}.{res.namespace}", params, given)
    return found


def _instances(resources: Sequence[Resource[Any]]) -> dict[str, tuple[Resource[Any], str]]:
    found: dict[str, tuple[Resource[Any], str]] = {}
    for res in _of(resources, _MIXER, "instance", "listentry", "checknothing"):
        if res.kind == "instance":  # an out-of-process template is never one pymesh checks
            template = res.spec.compiled_template or f"{res.spec.template} (out of process)"
        else:
            template = res.kind
        found[_key(res)] = (res, template)
    return found


def _translate_mixer(resources: Sequence[Resource[Any]], out: _Out) -> None:
    handlers = _handlers(resources, out)
    instances = _instances(resources)
    rules = _of(resources, _MIXER, "rule")
    rules.sort(key=lambda r: (r.namespace != out.root, r.namespace, r.name))
    for res in rules:
        spec: mixer.Rule = res.spec
        try:
            match = parse_match(spec.match)
        except ExpressionError as exc:
            out.warn(res, f"match is not a valid expression ({exc}); the rule is skipped")
            continue
        for i, action in enumerate(spec.actions):
            fqn, alt = _canonical(action.handler, "handler", res.namespace)
            handler = handlers.get(fqn) or (handlers.get(alt) if alt else None)
            if handler is None:
                bare = f"{action.handler.split('.')[0]}.handler.{res.namespace}"
                hint = f"; the 'handler' {bare} is referenced by its bare name" if bare in handlers else ""
                out.warn(res, f"actions[{i}]: handler {action.handler!r} not found (looked for {fqn}"
                              f"{' and ' + alt if alt else ''}){hint}; the action is skipped")
                continue
            if handler.adapter not in ("denier", "listchecker"):
                out.warn(res, f"actions[{i}]: handler {handler.name} uses adapter {handler.adapter!r}, which pymesh "
                              "does not enforce (only denier and listchecker); the action is skipped")
                continue
            for ref in action.instances:
                _mixer_action(res, i, match, handler, ref, instances, out)


def _mixer_action(
    rule: Resource[Any], index: int, match: Expression | None, handler: _Handler, ref: str,
    instances: Mapping[str, tuple[Resource[Any], str]], out: _Out,
) -> None:
    fqn, alt = _canonical(ref, "instance", rule.namespace)
    found = instances.get(fqn) or (instances.get(alt) if alt else None)
    if found is None:
        out.warn(rule, f"actions[{index}]: instance {ref!r} not found; it is skipped")
        return
    inst, template = found
    supported = _DENIER_TEMPLATES if handler.adapter == "denier" else frozenset({"listentry"})
    if template not in supported:
        out.warn(rule, f"actions[{index}]: instance {_key(inst)} is of template {template!r}, which handler "
                       f"{handler.name} ({handler.adapter}) does not check; it is skipped")
        return
    action: DenyAction | ListAction
    if handler.adapter == "denier":
        params = handler.params
        assert isinstance(params, mixer.DenierParams)
        code = params.status.code if handler.status_given else FAILED_PRECONDITION  # the 1.1 handler default
        if code == 0:
            out.warn(handler.res, "denier status code is 0 (OK): matched requests pass")
        action = DenyAction(code=code, message=params.status.message)
    else:
        try:
            entry = inst.spec.compiled_params if inst.kind == "instance" else inst.spec
            assert isinstance(entry, mixer.ListEntry)
            value = parse(entry.value)
        except (ExpressionError, ValueError) as exc:
            out.warn(inst, f"value is not a valid expression ({exc}); the action is skipped")
            return
        lists = handler.params
        assert isinstance(lists, mixer.ListcheckerParams)
        action = _list_action(handler, value, lists, out)
    out.checks.append(MixerCheck(
        rule=f"{rule.namespace}/{rule.name}", source=rule.source, namespace=rule.namespace,
        mesh_wide=rule.namespace == out.root, match=match, handler=handler.name, instance=_key(inst),
        adapter="denier" if handler.adapter == "denier" else "listchecker",
        action=action, action_index=index,
    ))


def _re2_search(pattern: str) -> re.Pattern[str]:
    """A list entry as Mixer compiled it (Go's RE2): linear-time search over client-supplied values."""
    import re2

    try:
        return cast("re.Pattern[str]", re2.compile(pattern))  # the match API of re.Pattern
    except re2.error as exc:
        raise ValueError(str(exc)) from None


def _list_action(handler: _Handler, value: Expression, p: mixer.ListcheckerParams, out: _Out) -> ListAction:
    networks: list[IPNetwork] = []
    patterns: list[re.Pattern[str]] = []
    for entry in p.overrides:
        if p.entry_type == "IP_ADDRESSES":  # as Mixer: a bare address gets /32, even an IPv6 one
            try:
                networks.append(ipaddress.ip_network(entry if "/" in entry else f"{entry}/32", strict=False))
            except ValueError:
                out.warn(handler.res, f"override {entry!r} is not an IP address or range; it is skipped")
        elif p.entry_type == "REGEX":
            try:
                patterns.append(_re2_search(entry))  # RE2, as Mixer: client values are matched
            except ValueError as exc:
                out.warn(handler.res, f"override {entry!r} is not a valid regex ({exc}); it is skipped")
    return ListAction(
        value=value, overrides=tuple(o for o in p.overrides if o), entry_type=p.entry_type, blacklist=p.blacklist,
        provider_url=p.provider_url, refresh_interval=p.refresh_interval or 60.0, ttl=p.ttl or 300.0,
        networks=tuple(networks), patterns=tuple(patterns),
    )


# -- entry point -----------------------------------------------------------------------------------


def translate(resources: Iterable[Resource[Any]], mesh: MeshConfig) -> LegacyPolicies:
    """Translate the legacy objects among ``resources``; pure and deterministic."""
    items = list(resources)
    out = _Out(mesh)
    _translate_authn(items, out)
    _translate_rbac(items, out)
    _translate_mixer(items, out)
    return LegacyPolicies(tuple(out.resources), tuple(out.origins), tuple(out.checks), tuple(out.warnings))
