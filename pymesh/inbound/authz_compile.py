"""Compiling AuthorizationPolicy rules into predicates over :class:`~pymesh.inbound.authz_match.Attributes`.

:class:`RuleCompiler` turns one policy's rules into a single callable, once per (snapshot,
workload). Inside a rule the cheap, selective checks run first (methods, ports, paths),
then the source, then the ``when`` conditions; ANDs and ORs are chains of closures, not
``all()`` over generators. ``deny`` tells every field which way to lean when values are
repeated or missing (see :mod:`pymesh.inbound.authz_match`); what cannot be evaluated makes
an ALLOW rule match nothing and a DENY rule match on its other fields, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pymesh.config.security_authz import Condition, Operation, Rule, Source
from pymesh.inbound.authn import Identity
from pymesh.inbound.authz_match import (
    Attributes,
    Predicate,
    StringMatch,
    claim_values,
    compile_hosts,
    compile_ips,
    compile_paths,
    multi,
    negate,
    string_match,
)

__all__ = ["RuleCompiler", "match_all", "match_any", "rule_paths"]


def _never(a: Attributes) -> bool:
    return False


def _always(a: Attributes) -> bool:
    return True


def match_all(preds: Sequence[Predicate]) -> Predicate:
    """AND, short-circuit, as a chain of closures (cheaper than ``all()`` over a generator)."""
    preds = tuple(p for p in preds if p is not _always)
    if not preds:
        return _always
    if _never in preds:
        return _never
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        first, second = preds
        return lambda a: first(a) and second(a)
    if len(preds) == 3:
        first, second, third = preds
        return lambda a: first(a) and second(a) and third(a)
    head, rest = preds[0], match_all(preds[1:])
    return lambda a: head(a) and rest(a)


def match_any(preds: Sequence[Predicate]) -> Predicate:
    """OR, short-circuit."""
    preds = tuple(p for p in preds if p is not _never)
    if not preds:
        return _never
    if _always in preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    return lambda a: any(p(a) for p in preds)


def rule_paths(rule: Rule) -> tuple[str, ...] | None:
    """The ``paths`` values a request path must match for ``rule`` to match; None: any path may.

    Only when every operation names paths (``notPaths`` only narrow, so they bound nothing).
    A ``*`` among them is resolved by :class:`~pymesh.inbound.authz_match.PathIndex`.
    """
    operations = rule.operations
    if not operations or any(not o.paths for o in operations):
        return None
    return tuple(v for o in operations for v in o.paths)


def _principal(a: Attributes) -> str | None:
    return a.principal


def _namespace(a: Attributes) -> str | None:
    return a.namespace


def _trust_domain(a: Attributes) -> str | None:
    return a.trust_domain


class RuleCompiler:
    """Turns one policy's rules into predicates; ``deny`` says which way to lean (see authz_match)."""

    def __init__(self, where: str, namespace: str, deny: bool, trust_domains: Sequence[str],
                 warnings: list[str]) -> None:
        self.where = where
        self.namespace = namespace
        self.deny = deny
        self.trust_domains = tuple(trust_domains)
        self.warnings = warnings

    def rule(self, rule: Rule) -> Predicate:
        # Cheapest and most selective first: the operation (methods, ports, paths), then the source.
        parts: list[Predicate] = []
        if rule.to:
            parts.append(match_any([self.operation(o) for o in rule.operations]))
        if rule.from_:
            parts.append(match_any([self.source(s) for s in rule.sources]))
        parts += [self.condition(c) for c in rule.when]
        return match_all(parts)

    # -- fields ------------------------------------------------------------------------------------

    def _strings(self, get: Callable[[Attributes], list[str]], values: Sequence[str], not_values: Sequence[str],
                 *, every: bool = True, identity: bool = False) -> list[Predicate]:
        out: list[Predicate] = []
        if values:
            out.append(multi(get, string_match(values), deny=self.deny, every=every))
        if not_values:
            out.append(negate(get, string_match(not_values), deny=self.deny, every=every, require=identity))
        return out

    def _single(self, get: Callable[[Attributes], str | None], values: Sequence[str], not_values: Sequence[str],
                *, identity: bool = False) -> list[Predicate]:
        """A single-valued attribute (absent as None or ''): the same leanings, without lists."""
        out: list[Predicate] = []
        if values:
            match = string_match(values)

            def positive(a: Attributes) -> bool:
                v = get(a)
                return bool(v) and match(v)  # type: ignore[arg-type]

            out.append(positive)
        if not_values:
            nmatch = string_match(not_values)
            if identity and not self.deny:
                def negative(a: Attributes) -> bool:
                    v = get(a)
                    return bool(v) and not nmatch(v)  # type: ignore[arg-type]
            else:
                def negative(a: Attributes) -> bool:
                    v = get(a)
                    return not v or not nmatch(v)

            out.append(negative)
        return out

    def _principals(self, values: Sequence[str]) -> list[str]:
        """Istio's trust-domain aliases: a principal naming one of the mesh's domains names them all."""
        out = list(values)
        for value in values:
            domain, slash, rest = value.partition("/")
            if slash and domain in self.trust_domains:
                out += [f"{td}/{rest}" for td in self.trust_domains if td != domain]
        return list(dict.fromkeys(out))

    def _service_accounts(self, values: Sequence[str], not_values: Sequence[str]) -> list[Predicate]:
        def pairs(items: Sequence[str]) -> frozenset[tuple[str, str]]:
            return frozenset((ns or self.namespace, sa) for ns, _, sa in (v.rpartition("/") for v in items))

        def get(a: Attributes) -> list[str]:
            return [f"{a.namespace}/{a.service_account}"] if a.namespace is not None else []

        out: list[Predicate] = []
        for items, is_not in ((values, False), (not_values, True)):
            if not items:
                continue
            wanted = frozenset(f"{ns}/{sa}" for ns, sa in pairs(items))
            match = wanted.__contains__
            out.append(negate(get, match, deny=self.deny, require=True) if is_not
                       else multi(get, match, deny=self.deny))
        return out

    def _ips(self, get: Callable[[Attributes], Any], values: Sequence[str],
             not_values: Sequence[str]) -> list[Predicate]:
        out: list[Predicate] = []
        if values:
            inside = compile_ips(values)
            out.append(lambda a: inside(get(a)))
        if not_values:
            outside = compile_ips(not_values)
            if self.deny:
                out.append(lambda a: not outside(get(a)))
            else:
                out.append(lambda a: get(a) is not None and not outside(get(a)))
        return out

    def _request_principals(self, values: Sequence[str], not_values: Sequence[str]) -> list[Predicate]:
        out: list[Predicate] = []
        for items, is_not in ((values, False), (not_values, True)):
            if not items:
                continue
            match = _request_principal_match(items)

            def pred(a: Attributes, match: Callable[[Identity], bool] = match, is_not: bool = is_not) -> bool:
                ident = a.identity
                if ident is None:
                    return is_not
                return match(ident) != is_not

            out.append(pred)
        return out

    def source(self, s: Source) -> Predicate:
        parts: list[Predicate] = []
        parts += self._single(_principal, self._principals(s.principals), self._principals(s.not_principals),
                              identity=True)
        parts += self._request_principals(s.request_principals, s.not_request_principals)
        parts += self._single(_namespace, s.namespaces, s.not_namespaces, identity=True)
        parts += self._service_accounts(s.service_accounts, s.not_service_accounts)
        parts += self._single(_trust_domain, s.trust_domains, s.not_trust_domains, identity=True)
        parts += self._ips(lambda a: a.source_ip, s.ip_blocks, s.not_ip_blocks)
        parts += self._ips(lambda a: a.remote_ip, s.remote_ip_blocks, s.not_remote_ip_blocks)
        return match_all(parts)

    def operation(self, o: Operation) -> Predicate:
        parts: list[Predicate] = []
        if o.methods:
            methods = frozenset(o.methods)
            parts.append(lambda a: a.method in methods)
        if o.not_methods:
            not_methods = frozenset(o.not_methods)
            parts.append(lambda a: a.method not in not_methods)
        if o.ports:
            ports = frozenset(o.ports)
            parts.append(lambda a: a.port in ports)
        if o.not_ports:
            not_ports = frozenset(o.not_ports)
            parts.append(lambda a: a.port not in not_ports)
        if o.paths:
            paths = compile_paths(o.paths)
            if self.deny:  # ";params" cannot hide a path from a DENY (pymesh contract, section 3)
                parts.append(lambda a: paths(a.path) or paths(a.stripped_path))
            else:
                parts.append(lambda a: paths(a.path))
        if o.not_paths:
            not_paths = compile_paths(o.not_paths)
            if self.deny:
                parts.append(lambda a: not not_paths(a.path))
            else:  # ... nor exempt it from an ALLOW's notPaths
                parts.append(lambda a: not (not_paths(a.path) or not_paths(a.stripped_path)))
        if o.hosts:
            parts.append(compile_hosts(o.hosts))
        if o.not_hosts:
            not_hosts = compile_hosts(o.not_hosts)
            parts.append(lambda a: not not_hosts(a))
        return match_all(parts)

    def condition(self, c: Condition) -> Predicate:
        key, values, not_values = c.key, c.values, c.not_values
        if key.startswith("request.headers[") and key.endswith("]"):
            name = key[len("request.headers["):-1].lower()
            return match_all(self._strings(_header_getter(name, self.deny), values, not_values))
        if key.startswith("request.auth.claims[") and key.endswith("]"):
            path = tuple(key[len("request.auth.claims["):-1].split("]["))
            return match_all(self._strings(lambda a: claim_values(a.identity, path), values, not_values, every=False))
        if key == "request.auth.audiences":
            return match_all(self._strings(lambda a: list(a.identity.audiences) if a.identity else [], values,
                                      not_values, every=False))
        plain: dict[str, tuple[Callable[[Attributes], str | None], bool]] = {
            "source.principal": (_principal, True),
            "source.namespace": (_namespace, True),
            "source.trustDomain": (_trust_domain, True),
            "request.auth.principal": (lambda a: a.identity.principal if a.identity else None, False),
            "request.auth.presenter": (lambda a: a.identity.presenter if a.identity else None, False),
            "connection.sni": (lambda a: a.sni, False),
            "destination.port": (lambda a: a.port, False),
        }
        if key in plain:
            get, identity = plain[key]
            if key == "source.principal":
                values, not_values = tuple(self._principals(values)), tuple(self._principals(not_values))
            return match_all(self._single(get, values, not_values, identity=identity))
        if key == "source.serviceAccount":
            return match_all(self._service_accounts(values, not_values))
        ips: dict[str, Callable[[Attributes], Any]] = {
            "source.ip": lambda a: a.source_ip,
            "remote.ip": lambda a: a.remote_ip,
            "destination.ip": lambda a: a.destination_ip,
        }
        if key in ips:
            return match_all(self._ips(ips[key], values, not_values))
        return self.unenforceable(f"condition key {key!r} cannot be evaluated in-process")

    def unenforceable(self, what: str) -> Predicate:
        lean = "the condition is treated as matching" if self.deny else "the rule matches nothing"
        self.warnings.append(f"{self.where}: {what}; {lean} (fail closed)")
        return _always if self.deny else _never


def _header_getter(name: str, deny: bool) -> Callable[[Attributes], list[str]]:
    """Every value of a header, trimmed; a DENY also sees each comma-separated element of a value."""
    if not deny:
        return lambda a: [v.strip() for v in a.request.header_values(name)]

    def get(a: Attributes) -> list[str]:
        raw = [v.strip() for v in a.request.header_values(name)]
        return raw + [p.strip() for v in raw if "," in v for p in v.split(",")]

    return get


def _split_principal(value: str) -> tuple[str, str]:
    iss, _, sub = value.rpartition("/")
    return iss, sub


def _request_principal_match(values: Sequence[str]) -> Callable[[Identity], bool]:
    """``requestPrincipals``: ``*``, exact ``iss/sub`` compared as a pair, ``iss/*``, ``*/sub``, ``prefix*``..."""
    pairs: set[tuple[str, str]] = set()
    issuers: set[str] = set()
    subjects: set[str] = set()
    globs: list[str] = []
    anyone = False
    for value in values:
        if value == "*":
            anyone = True
        elif "*" not in value:
            pairs.add(_split_principal(value))
        elif value.endswith("/*") and "*" not in value[:-1]:
            issuers.add(value[:-2])
        elif value.startswith("*/") and "*" not in value[1:]:
            subjects.add(value[2:])
        else:
            globs.append(value)
    glob = StringMatch(globs)

    def match(ident: Identity) -> bool:
        if anyone or (ident.issuer, ident.subject) in pairs:
            return True
        if (ident.issuer in issuers and ident.subject) or (ident.subject in subjects and ident.issuer):
            return True
        return bool(globs) and glob(ident.principal)

    return match
