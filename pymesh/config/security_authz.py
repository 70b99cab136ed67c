"""security.istio.io AuthorizationPolicy (v1, v1beta1) and the scope rules all security kinds share.

Validation follows istio/istio ``pkg/config/validation/validation.go``
(``ValidateAuthorizationPolicy``), ``pkg/config/security/security.go`` and the CRD schema.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pymesh.config.common import PolicyTargetReference, WorkloadSelector
from pymesh.config.decode import Checker, Invalid

__all__ = [
    "AuthorizationAction",
    "AuthorizationPolicy",
    "Condition",
    "ExtensionProvider",
    "Operation",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "Source",
    "check_policy_scope",
]

AuthorizationAction = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]

# -- scope: selector / targetRef / targetRefs (shared with the other security kinds) -----------

_GROUP = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_KIND = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
# (canonical group, kind) pairs istiod accepts as policy targets; "" is the core group.
_TARGET_KINDS = frozenset({
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
})


def _check_target_ref(v: Checker, ref: PolicyTargetReference) -> None:
    if len(ref.group) > 253 or (ref.group and not _GROUP.fullmatch(ref.group)):
        v.error(f"targetRef group {ref.group!r} is not a DNS subdomain (lowercase letters, digits, '-' and '.')",
                "group")
    elif not ref.kind:
        v.error("targetRef kind must not be empty", "kind")
    elif len(ref.kind) > 63 or not _KIND.fullmatch(ref.kind):
        v.error(f"targetRef kind {ref.kind!r} must start with a letter and hold only letters, digits and '-'",
                "kind")
    elif (ref.group or "core", ref.kind) not in _TARGET_KINDS:
        v.error(f"targetRef must be to a Service (group \"\"), ServiceEntry (networking.istio.io), or Gateway or "
                f"GatewayClass (gateway.networking.k8s.io), not {ref.group!r}/{ref.kind}", "kind")
    if len(ref.name) > 253:
        v.error("targetRef name is longer than 253 characters", "name")


def check_policy_scope(
    v: Checker,
    selector: WorkloadSelector | None,
    target_ref: PolicyTargetReference | None,
    target_refs: Sequence[PolicyTargetReference],
) -> None:
    """Istio's rules for how a security policy picks its workloads (``validateOneOfSelectorType``)."""
    if (selector is not None) + (target_ref is not None) + bool(target_refs) > 1:
        where = "targetRef" if target_ref is not None else "targetRefs"
        v.error("only one of targetRefs or selector can be set (selector, targetRef and targetRefs exclude each other)",
                where)
    if selector is not None and not selector.match_labels:
        v.warn("workload selector specified without labels", "selector")
    if target_ref is not None:
        _check_target_ref(v.at("targetRef"), target_ref)
    if len(target_refs) > 16:
        v.error(f"targetRefs has {len(target_refs)} entries; at most 16 are allowed", "targetRefs")
    for i, ref in enumerate(target_refs):
        _check_target_ref(v.at("targetRefs", i), ref)


# -- value syntax (security.go) ------------------------------------------------------------------


def _ip_problem(value: str) -> str | None:
    """Why ``value`` is not an IP address or CIDR range as Go's ``netip`` parses them, or None."""
    try:
        if "/" in value:
            if "%" in value:
                raise ValueError(value)
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        kind = "CIDR range" if "/" in value else "IP address"
        return f"bad {kind} {value!r}"
    return None


_PORT = re.compile(r"[0-9]+")


def _port_problem(value: str) -> str | None:
    if not _PORT.fullmatch(value) or int(value) > 65535:
        return f"bad port {value!r}: must be a number in 0..65535"
    return None


def _wildcard_problem(value: str) -> str | None:
    count = value.count("*")
    if count > 1:
        return f"at most one wildcard is allowed, found {value!r}"
    if count == 1 and not (value.startswith("*") or value.endswith("*")):
        return f"wildcard is only allowed at the start or end, found {value!r}"
    return None


def _trust_domain_problem(value: str) -> str | None:
    problem = _wildcard_problem(value)
    if problem is None and "/" in value:
        return f"trust domain must not contain '/', found {value!r}"
    return problem


def _service_account_problem(value: str) -> str | None:
    if "*" in value:
        return f"wildcard not allowed in service account {value!r}"
    if len(value) > 320:
        return "service account value cannot exceed 320 characters"
    ns, slash, sa = value.rpartition("/")
    if "/" in ns or (slash and not ns) or not sa:
        return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {value!r}"
    return None


_MATCH_ONE = "{*}"
_MATCH_ANY = "{**}"
# RFC 3986 pchar, the literal segments Envoy's URI templates accept.
_PATH_LITERAL = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+")


def _path_template_problem(path: str) -> str | None:
    templated = _MATCH_ONE in path or _MATCH_ANY in path
    seen_any = False
    for glob in path.strip("/").split("/"):
        if glob in (_MATCH_ONE, _MATCH_ANY):
            if seen_any:
                return f"invalid or unsupported path {path!r}: {{**}} must be the last operator"
            seen_any = glob == _MATCH_ANY
            continue
        if "{" in glob or "}" in glob:
            return (f"invalid or unsupported path {path!r}: contains '{{' or '}}' beyond a supported "
                    "path template ({*} or {**})")
        if templated and not _PATH_LITERAL.fullmatch(glob):
            return f"invalid or unsupported path {path!r}: segment {glob!r} is not a valid literal in a path template"
    return None


_Problem = Callable[[str], str | None]


def _literal_star_hint(path: str) -> str | None:
    """A ``*`` that is neither a prefix/suffix wildcard nor a template: matched as a plain character."""
    if path == "*" or _MATCH_ONE in path or _MATCH_ANY in path:
        return None
    inner = path[1:] if path.startswith("*") else path
    inner = inner[:-1] if inner.endswith("*") else inner
    if "*" in inner:
        return (f"path {path!r} has a '*' that only matches a literal '*': wildcards work at the start or end, "
                "or as a {*} / {**} path template segment")
    return None


def _spiffe_principal_hint(value: str) -> str | None:
    if value.lower().startswith("spiffe://"):
        return (f"principal {value!r} never matches: principals are written without 'spiffe://', "
                f"e.g. {value[len('spiffe://'):]!r}")
    return None


def _warn_values(v: Checker, name: str, values: Sequence[str], hint: _Problem) -> None:
    """Values that load but can never mean what they seem to: warned about, since a DENY using one fails open."""
    for i, value in enumerate(values):
        message = hint(value) if value else None
        if message is not None:
            v.warn(message, name, i)


def _check_values(v: Checker, name: str, values: Sequence[str], *problems: _Problem) -> None:
    for i, value in enumerate(values):
        if not value:
            v.error(f"empty value not allowed in {name}", name, i)
            continue
        for problem in problems:
            message = problem(value)
            if message is not None:
                v.error(message, name, i)
                break


def _check_service_accounts(v: Checker, name: str, values: Sequence[str]) -> None:
    if len(values) > 16:
        v.error(f"{name} may not have more than 16 values", name)
    _check_values(v, name, values, _service_account_problem)


# -- the model -------------------------------------------------------------------------------------

_PLAIN_SOURCE_FIELDS = (
    ("principals", "principals"), ("notPrincipals", "not_principals"),
    ("requestPrincipals", "request_principals"), ("notRequestPrincipals", "not_request_principals"),
    ("namespaces", "namespaces"), ("notNamespaces", "not_namespaces"),
)
_IP_SOURCE_FIELDS = (
    ("ipBlocks", "ip_blocks"), ("notIpBlocks", "not_ip_blocks"),
    ("remoteIpBlocks", "remote_ip_blocks"), ("notRemoteIpBlocks", "not_remote_ip_blocks"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Who sends the request; set fields are ANDed, values within a field ORed."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()

    @property
    def has_tcp_fields(self) -> bool:
        """Whether a field istiod counts as TCP-matchable is set (its DENY warning list; trustDomains is not in it)."""
        return bool(self.principals or self.not_principals or self.namespaces or self.not_namespaces
                    or self.service_accounts or self.not_service_accounts or self.ip_blocks
                    or self.not_ip_blocks or self.remote_ip_blocks or self.not_remote_ip_blocks)

    def _check(self, v: Checker) -> None:
        if not (self.has_tcp_fields or self.request_principals or self.not_request_principals
                or self.trust_domains or self.not_trust_domains):
            v.error("`from.source` must not be empty: set principals, namespaces, ipBlocks or another field")
        if (self.service_accounts or self.not_service_accounts) and (
            self.principals or self.not_principals or self.namespaces or self.not_namespaces
        ):
            v.error("cannot set serviceAccounts with namespaces or principals in the same source",
                    "serviceAccounts" if self.service_accounts else "notServiceAccounts")
        for wire, attr in _PLAIN_SOURCE_FIELDS:
            _check_values(v, wire, getattr(self, attr))
        _warn_values(v, "principals", self.principals, _spiffe_principal_hint)
        _warn_values(v, "notPrincipals", self.not_principals, _spiffe_principal_hint)
        for wire, attr in _IP_SOURCE_FIELDS:
            _check_values(v, wire, getattr(self, attr), _ip_problem)
        _check_service_accounts(v, "serviceAccounts", self.service_accounts)
        _check_service_accounts(v, "notServiceAccounts", self.not_service_accounts)
        _check_values(v, "trustDomains", self.trust_domains, _trust_domain_problem)
        _check_values(v, "notTrustDomains", self.not_trust_domains, _trust_domain_problem)


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """What the request does; ``hosts`` match ``:authority`` case-insensitively, the rest exactly."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()

    def _check(self, v: Checker) -> None:
        if not (self.hosts or self.not_hosts or self.ports or self.not_ports or self.methods
                or self.not_methods or self.paths or self.not_paths):
            v.error("`to.operation` must not be empty: set hosts, ports, methods or paths")
        _check_values(v, "hosts", self.hosts)
        _check_values(v, "notHosts", self.not_hosts)
        _check_values(v, "ports", self.ports, _port_problem)
        _check_values(v, "notPorts", self.not_ports, _port_problem)
        _check_values(v, "methods", self.methods)
        _check_values(v, "notMethods", self.not_methods)
        _check_values(v, "paths", self.paths, _path_template_problem)
        _check_values(v, "notPaths", self.not_paths, _path_template_problem)
        _warn_values(v, "paths", self.paths, _literal_star_hint)
        _warn_values(v, "notPaths", self.not_paths, _literal_star_hint)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleFrom:
    source: Source | None = None

    def _check(self, v: Checker) -> None:
        if self.source is None:
            v.error("`from.source` must not be nil: write `- source: {...}`", "source")


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleTo:
    operation: Operation | None = None

    def _check(self, v: Checker) -> None:
        if self.operation is None:
            v.error("`to.operation` must not be nil: write `- operation: {...}`", "operation")


_KNOWN_KEYS = (
    "request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, "
    "source.trustDomain, request.auth.principal, request.auth.audiences, request.auth.presenter, "
    "request.auth.claims[<name>], destination.ip, destination.port, connection.sni, experimental.envoy.filters.*"
)
_PLAIN_KEYS = frozenset({
    "source.namespace", "source.principal", "request.auth.principal", "request.auth.audiences",
    "request.auth.presenter", "connection.sni",
})
_IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
_MAP_KEY_PREFIXES = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")


def _map_key_ok(key: str) -> bool:
    """``a[b]`` with a non-empty ``a`` and ``b`` (nested ``a[b][c]`` passes too), as security.go checks."""
    open_at = key.find("[")
    return key.endswith("]") and 0 < open_at < len(key) - 2


def _key_problem(key: str) -> str | None:
    if key.startswith(_MAP_KEY_PREFIXES):
        return None if _map_key_ok(key) else f"bad key {key!r}: should have format a[b]"
    if key in _PLAIN_KEYS or key in _IP_KEYS or key in ("source.serviceAccount", "source.trustDomain",
                                                        "destination.port"):
        return None
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute {key!r}; use one of {_KNOWN_KEYS}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One ``when`` entry: ``key`` is an Istio attribute; values ORed, then AND NOT notValues."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    def _check(self, v: Checker) -> None:
        if not self.key:
            v.error("`key` must not be empty", "key")
            return
        problem = _key_problem(self.key)
        if problem is not None:
            v.error(problem, "key")
            return
        if not self.values and not self.not_values:
            v.error(f"at least one of `values` or `notValues` must be set for key {self.key}")
            return
        for name, values in (("values", self.values), ("notValues", self.not_values)):
            if self.key in _IP_KEYS:
                _check_values(v, name, values, _ip_problem)
            elif self.key == "destination.port":
                _check_values(v, name, values, _port_problem)
            elif self.key == "source.serviceAccount":
                _check_service_accounts(v, name, values)
            elif self.key == "source.trustDomain":
                _check_values(v, name, values, _wildcard_problem)
            else:
                _check_values(v, name, values)


def _present_not_empty(what: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Istio rejects ``from: []`` / ``to: []``: present but empty (absent means "any")."""

    def check(value: tuple[Any, ...]) -> tuple[Any, ...]:
        if not value:
            raise Invalid(f"`{what}` must not be empty; leave it out to match any {what}")
        return value

    return check


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Matches when any ``from`` matches (or none given), any ``to`` matches, and every ``when`` holds."""

    from_: Annotated[tuple[RuleFrom, ...], _present_not_empty("from")] = ()
    to: Annotated[tuple[RuleTo, ...], _present_not_empty("to")] = ()
    when: tuple[Condition, ...] = ()

    def _check(self, v: Checker) -> None:
        if len(self.from_) > 512:
            v.error(f"`from` has {len(self.from_)} entries; at most 512 are allowed", "from")

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(f.source for f in self.from_ if f.source is not None)

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(t.operation for t in self.to if t.operation is not None)

    @property
    def http_only(self) -> bool:
        """True when a DENY of this rule would also deny TCP traffic (istiod's warning condition)."""
        sources, operations = self.sources, self.operations
        tcp_from = any(s.has_tcp_fields for s in sources)
        tcp_to = any(o.ports or o.not_ports for o in operations)
        return bool((sources and not operations and not tcp_from) or (operations and not tcp_to))


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtensionProvider:
    """The ``provider`` of a CUSTOM policy: an extension provider named in MeshConfig."""

    name: str = ""


# CUSTOM (ext-authz) policies cannot match on identity: istiod rejects these.
_CUSTOM_SOURCE_FIELDS = (
    ("namespaces", "namespaces"), ("notNamespaces", "not_namespaces"),
    ("serviceAccounts", "service_accounts"), ("notServiceAccounts", "not_service_accounts"),
    ("trustDomains", "trust_domains"), ("notTrustDomains", "not_trust_domains"),
    ("principals", "principals"), ("notPrincipals", "not_principals"),
    ("requestPrincipals", "request_principals"), ("notRequestPrincipals", "not_request_principals"),
)
_CUSTOM_KEYS = frozenset({"source.namespace", "source.serviceAccount", "source.trustDomain", "source.principal"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationPolicy:
    """Access control for the selected workloads: CUSTOM, then DENY, then ALLOW; AUDIT only records."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] = ()
    rules: tuple[Rule, ...] = ()
    action: AuthorizationAction = "ALLOW"
    provider: ExtensionProvider | None = None

    def _check(self, v: Checker) -> None:
        check_policy_scope(v, self.selector, self.target_ref, self.target_refs)
        if len(self.rules) > 512:
            v.error(f"rules has {len(self.rules)} entries; at most 512 are allowed", "rules")
        if self.action in ("DENY", "CUSTOM") and not self.rules:
            v.error(f"{self.action} action without `rules` is meaningless as it will never be triggered; "
                    "add an empty rule `{}` if you want it triggered for every request", "rules")
        if self.action == "CUSTOM":
            if self.provider is None or not self.provider.name:
                v.error("`provider.name` must not be empty: a CUSTOM policy names its extension provider",
                        "provider")
            self._check_custom_rules(v)
        elif self.provider is not None:
            v.error(f"`provider` must not be with non CUSTOM action, found {self.action}", "provider")
        if self.action == "DENY":
            for i, rule in enumerate(self.rules):
                if rule.http_only:
                    v.warn("configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due "
                           "to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly "
                           "specify the port", "rules", i)

    def _check_custom_rules(self, v: Checker) -> None:
        for i, rule in enumerate(self.rules):
            for j, entry in enumerate(rule.from_):
                if entry.source is None:
                    continue
                for wire, attr in _CUSTOM_SOURCE_FIELDS:
                    if getattr(entry.source, attr):
                        v.error(f"from.{wire} is currently not supported with CUSTOM action",
                                "rules", i, "from", j, "source", wire)
            for k, cond in enumerate(rule.when):
                if cond.key in _CUSTOM_KEYS or cond.key.startswith("request.auth."):
                    v.error(f"{cond.key} is currently not supported with CUSTOM action", "rules", i, "when", k, "key")
