"""AuthorizationPolicy evaluation: CUSTOM, DENY, ALLOW and AUDIT in Istio's order, without I/O.

One :class:`Authorizer` per (snapshot, workload), compiled from the AuthorizationPolicy
resources that select the workload (``WorkloadPolicies.authorization``, legacy RBAC
translations included). :meth:`Authorizer.check` takes the request, the normalized path
and the verified token identity and answers a :class:`Decision`:

1. any DENY rule matches: 403 ``RBAC: access denied``;
2. ALLOW policies exist and none of their rules matches: 403;
3. otherwise allowed; if a CUSTOM rule matches, :attr:`Decision.custom` names the
   extension provider the driver must ask before the app runs
   (:mod:`pymesh.inbound.extauthz`). Istio asks CUSTOM first; asking it last changes
   nothing but which 403 body a request denied twice gets, and spares the call.

AUDIT rules only fill :attr:`Decision.audit`. Policies annotated ``istio.io/dry-run: "true"``
are evaluated into :attr:`Decision.shadow_denied` and never change the verdict.

Fail closed: a condition pymesh cannot evaluate (``experimental.envoy.filters.*``), a
CUSTOM provider that is missing, not an HTTP ext_authz, or one of several providers for
the workload, makes an ALLOW rule match nothing and a DENY rule (or a CUSTOM rule,
denying) match on the rest of its fields. Each such finding is in :attr:`Authorizer.warnings`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymesh.config.meshconfig import ExtensionProvider as MeshExtensionProvider
from pymesh.config.resource import Resource
from pymesh.config.security_authz import AuthorizationPolicy
from pymesh.inbound.authn import Identity
from pymesh.inbound.authz_compile import RuleCompiler, match_any, rule_paths
from pymesh.inbound.authz_match import Attributes, PathIndex, Predicate
from pymesh.inbound.extauthz import provider_problems
from pymesh.inbound.request import Denial, InboundRequest, MemoReads

__all__ = ["DENIED", "Authorizer", "CustomCheck", "Decision", "analyze"]

DENIED = Denial(403, b"RBAC: access denied", (("content-type", "text/plain"),))
_DRY_RUN = "istio.io/dry-run"


@dataclass(frozen=True, slots=True)
class CustomCheck:
    """A CUSTOM policy matched: ask this provider (``provider`` None: deny, it cannot be asked)."""

    name: str
    provider: MeshExtensionProvider | None
    policies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one request; ``policy`` is the matched DENY/ALLOW policy (``ns/name``) or ''."""

    allowed: bool
    denial: Denial | None = None
    policy: str = ""
    custom: CustomCheck | None = None
    audit: tuple[str, ...] = ()
    shadow_denied: bool | None = None  # the verdict of dry-run policies alone, when there are any


_ALLOW = Decision(True)
_DENY_DEFAULT = Decision(False, DENIED)


@dataclass(frozen=True, slots=True)
class _Policy:
    name: str
    action: str
    match: Predicate
    provider: str = ""
    methods: frozenset[str] | None = None  # every method a rule can match; None: any
    paths: tuple[str, ...] | None = None  # the ``paths`` values some rule needs; None: any path
    allowed: Decision = _ALLOW  # the verdict when this ALLOW policy matches alone, built once


def _methods(spec: AuthorizationPolicy) -> frozenset[str] | None:
    """The methods some rule of ``spec`` can match, when every rule names them positively (an index key)."""
    found: set[str] = set()
    for rule in spec.rules:
        operations = rule.operations
        if not operations or any(not o.methods for o in operations):
            return None
        for o in operations:
            found.update(o.methods)
    return frozenset(found)


def _paths(spec: AuthorizationPolicy) -> tuple[str, ...] | None:
    """The ``paths`` values a request path must match for some rule of ``spec`` to (an index key)."""
    found: list[str] = []
    for rule in spec.rules:
        paths = rule_paths(rule)
        if paths is None:
            return None
        found += paths
    return tuple(dict.fromkeys(found))


def _index(policies: Sequence[_Policy]) -> PathIndex[_Policy]:
    return PathIndex([(p, p.paths) for p in policies])


def _by_method(policies: Sequence[_Policy]) -> tuple[dict[str, PathIndex[_Policy]], PathIndex[_Policy]]:
    """Policies to try per request method, then path (order kept), and for a method no policy names.

    Built once per snapshot: a request then only tries the policies that could match its
    method and path, in their order, so the first match is the one a linear scan finds.
    """
    named = {m for p in policies if p.methods is not None for m in p.methods}
    table = {m: _index([p for p in policies if p.methods is None or m in p.methods]) for m in named}
    return table, _index([p for p in policies if p.methods is None])


# Condition keys whose values the verdict memo's key holds (core.memoizable): the peer, the port,
# the SNI, and the token (constant when no RequestAuthentication applies). Any other key but the
# addresses and headers (one pymesh cannot evaluate) makes the policies unmemoizable.
_KEYED = frozenset({"source.principal", "source.namespace", "source.trustDomain", "source.serviceAccount",
                    "request.auth.principal", "request.auth.presenter", "request.auth.audiences",
                    "connection.sni", "destination.port"})
_ADDRESSES = frozenset({"source.ip", "remote.ip", "destination.ip"})


def _reads(spec: AuthorizationPolicy) -> MemoReads | None:
    """What the rules of ``spec`` read beyond the request line, Host, port and peer; None: unknown."""
    addresses = False
    headers: set[str] = set()
    for rule in spec.rules:
        for s in rule.sources:
            addresses = addresses or bool(s.ip_blocks or s.not_ip_blocks or s.remote_ip_blocks
                                          or s.not_remote_ip_blocks)
        for c in rule.when:
            key = c.key
            if key in _ADDRESSES:
                addresses = True
            elif key.startswith("request.headers[") and key.endswith("]"):
                headers.add(key[len("request.headers["):-1].lower())
            elif key not in _KEYED and not key.startswith("request.auth.claims["):
                return None
    return MemoReads(addresses, frozenset(headers))


def _dry_run(res: Resource[Any]) -> bool:
    return str(res.metadata.annotations.get(_DRY_RUN, "")).lower() == "true"


class Authorizer:
    """The AuthorizationPolicies of one workload, compiled; :meth:`check` is pure and cheap."""

    def __init__(
        self,
        policies: Iterable[Resource[AuthorizationPolicy]],
        *,
        providers: Sequence[MeshExtensionProvider] = (),
        trust_domain: str = "cluster.local",
        trust_domain_aliases: Sequence[str] = (),
    ) -> None:
        warnings: list[str] = []
        domains = (trust_domain, *trust_domain_aliases)
        known = {p.name: p for p in providers}
        enforced: dict[str, list[_Policy]] = {"CUSTOM": [], "DENY": [], "ALLOW": [], "AUDIT": []}
        shadow: dict[str, list[_Policy]] = {"CUSTOM": [], "DENY": [], "ALLOW": [], "AUDIT": []}
        ordered = sorted(policies, key=lambda r: r.age)
        for res in ordered:
            spec: AuthorizationPolicy = res.spec
            name = f"{res.namespace}/{res.name}"
            deny = spec.action != "ALLOW"
            compiler = RuleCompiler(f"AuthorizationPolicy {name}", res.namespace, deny, domains, warnings)
            match = match_any([compiler.rule(r) for r in spec.rules])
            provider = spec.provider.name if spec.provider is not None else ""
            policy = _Policy(name, spec.action, match, provider, _methods(spec), _paths(spec),
                             Decision(True, None, name))
            (shadow if _dry_run(res) else enforced)[spec.action].append(policy)
        self._custom = _custom_checks(enforced["CUSTOM"], known, warnings)
        self._deny, self._deny_other = _by_method(enforced["DENY"])
        self._allow, self._allow_other = _by_method(enforced["ALLOW"])
        self._audit = tuple(enforced["AUDIT"])
        self._has_allow = bool(enforced["ALLOW"])
        self._shadow = shadow if any(shadow.values()) else None
        self._trivial = not (self._custom or enforced["DENY"] or enforced["ALLOW"] or self._audit or self._shadow)
        reads = [_reads(res.spec) for res in ordered]
        self.memo_reads: MemoReads | None = None
        """What verdicts depend on beyond the request line, Host, port, peer and token (see
        ``core.memoizable``); None when they must be computed every time."""
        if not (self._custom or self._audit) and None not in reads:  # CUSTOM is I/O, an AUDIT match is logged
            declared = [r for r in reads if r is not None]
            self.memo_reads = MemoReads(any(r.addresses for r in declared),
                                        frozenset().union(*(r.headers for r in declared)))
        warnings += analyze(ordered)
        self.warnings: tuple[str, ...] = tuple(dict.fromkeys(warnings))
        """What the load should show: rules that fail closed, risky shapes (see :func:`analyze`)."""

    @property
    def enabled(self) -> bool:
        return not self._trivial

    def check(self, request: InboundRequest, path: str, identity: Identity | None = None, *,
              remote_ip: str | None = None) -> Decision:
        """The verdict for ``request`` at normalized ``path`` with the verified token ``identity``.

        ``remote_ip``: the original client address when a trusted proxy vouched for it
        (``remote.ip``, ``remoteIpBlocks``); the direct peer otherwise.
        """
        if self._trivial:
            return _ALLOW
        attrs = Attributes(request, path, identity, remote_ip)
        audit = tuple(p.name for p in self._audit if p.match(attrs)) if self._audit else ()
        shadow = self._shadow_verdict(attrs) if self._shadow is not None else None
        method = request.method
        # A DENY's paths also match the path without ;params (authz_compile), so look both up.
        stripped = attrs.stripped_path if ";" in path else None
        for policy in self._deny.get(method, self._deny_other).lookup(path, stripped):
            if policy.match(attrs):
                return Decision(False, DENIED, policy.name, None, audit, shadow)
        matched: _Policy | None = None
        if self._has_allow:
            for policy in self._allow.get(method, self._allow_other).lookup(path):
                if policy.match(attrs):
                    matched = policy
                    break
            else:
                if not audit and shadow is None:
                    return _DENY_DEFAULT
                return Decision(False, DENIED, "", None, audit, shadow)
        custom = next((c for p, c in self._custom if p.match(attrs)), None) if self._custom else None
        if custom is not None and custom.provider is None:
            return Decision(False, DENIED, custom.policies[0], custom, audit, shadow)
        if custom is None and not audit and shadow is None:
            return _ALLOW if matched is None else matched.allowed  # the common verdicts, not allocated
        return Decision(True, None, matched.name if matched is not None else "", custom, audit, shadow)

    def _shadow_verdict(self, attrs: Attributes) -> bool:
        shadow = self._shadow
        assert shadow is not None
        if any(p.match(attrs) for p in shadow["DENY"]):
            return True
        return bool(shadow["ALLOW"]) and not any(p.match(attrs) for p in shadow["ALLOW"])


def _custom_checks(policies: list[_Policy], known: Mapping[str, MeshExtensionProvider], warnings: list[str],
                   ) -> tuple[tuple[_Policy, CustomCheck], ...]:
    """Each CUSTOM policy with the provider it asks; None (deny) when that provider cannot be asked."""
    names = list(dict.fromkeys(p.provider for p in policies))
    out: list[tuple[_Policy, CustomCheck]] = []
    for policy in policies:
        provider = known.get(policy.provider)
        reason = ""
        if len(names) > 1:
            reason = f"more than one CUSTOM provider ({', '.join(names)}) selects the workload"
        elif provider is None:
            reason = f"extension provider {policy.provider!r} is not in MeshConfig extensionProviders"
        else:
            problems = [p for p in provider_problems(provider) if "includeRequestBodyInCheck" not in p]
            reason = "; ".join(problems)
        if reason:
            warnings.append(f"AuthorizationPolicy {policy.name}: {reason}; matching requests are denied "
                            "(fail closed)")
            provider = None
        out.append((policy, CustomCheck(policy.provider, provider, (policy.name,))))
    return tuple(out)


def analyze(policies: Iterable[Resource[AuthorizationPolicy]]) -> list[str]:
    """Load-time warnings about policy shapes that are easy to get wrong (ISTIO-SECURITY-2021-004/-005)."""
    warnings: list[str] = []
    for res in policies:
        spec = res.spec
        name = f"AuthorizationPolicy {res.namespace}/{res.name}"
        for i, rule in enumerate(spec.rules):
            for s in rule.sources:
                if spec.action == "DENY" and (s.principals or s.namespaces):
                    warnings.append(f"{name}: rules[{i}]: DENY on principals/namespaces does not match plaintext "
                                    "callers (no peer identity); add STRICT mTLS or a DENY on notPrincipals: ['*']")
                if spec.action == "ALLOW" and (s.not_principals or s.not_namespaces):
                    warnings.append(f"{name}: rules[{i}]: ALLOW on notPrincipals/notNamespaces requires a verified "
                                    "peer in pymesh: plaintext callers do not match (Istio would let them in)")
    return warnings
