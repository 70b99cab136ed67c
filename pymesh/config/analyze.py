"""Cross-document analysis, like ``istioctl analyze``: warnings, never load errors.

Istio accepts every one of these configurations, so pymesh loads them too and says
what will happen at request time. ``pymesh validate --strict`` turns them into errors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pymesh.config.decode import Checker
from pymesh.config.hosts import fqdn, matches
from pymesh.config.meshconfig import MeshConfig
from pymesh.config.resource import Resource

__all__ = ["run"]

Item = tuple[Resource[Any], Checker]


def run(items: Sequence[Item], mesh: MeshConfig) -> None:
    by_kind: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_kind[item[0].kind].append(item)
    _subsets(by_kind)
    _unreachable_rules(by_kind["VirtualService"])
    _duplicate_hosts(by_kind["VirtualService"])
    _destination_rule_merges(by_kind["DestinationRule"])
    _gateways(by_kind)
    _peer_authn_conflicts(by_kind["PeerAuthentication"], mesh)
    _custom_providers(by_kind["AuthorizationPolicy"], mesh)
    _role_refs(by_kind)
    _orphan_delegates(by_kind["VirtualService"])


def _destinations(vs: Any) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every (path, Destination) a VirtualService sends or mirrors traffic to."""
    for i, route in enumerate(vs.http):
        for j, dest in enumerate(route.route):
            yield ("spec", "http", i, "route", j, "destination"), dest.destination
        if route.mirror is not None:
            yield ("spec", "http", i, "mirror"), route.mirror
        for j, mirror in enumerate(route.mirrors):
            yield ("spec", "http", i, "mirrors", j, "destination"), mirror.destination
    for kind in ("tcp", "tls"):
        for i, route in enumerate(getattr(vs, kind)):
            for j, dest in enumerate(route.route):
                yield ("spec", kind, i, "route", j, "destination"), dest.destination


class _HostIndex:
    """Exact names by dict, wildcards scanned: linear in destinations, not quadratic."""

    def __init__(self) -> None:
        self.exact: dict[str, set[str]] = defaultdict(set)
        self.wild: dict[str, set[str]] = defaultdict(set)

    def add(self, host: str, values: Iterable[str] = ()) -> None:
        (self.wild if host.startswith("*") else self.exact)[host].update(values)

    def covers(self, host: str) -> bool:
        return host in self.exact or any(matches(w, host) for w in self.wild)

    def values(self, host: str) -> set[str]:
        found = set(self.exact.get(host, ()))
        for w, vals in self.wild.items():
            if matches(w, host):
                found |= vals
        return found


def _subsets(by_kind: dict[str, list[Item]]) -> None:
    subsets = _HostIndex()
    for res, _ in by_kind["DestinationRule"]:
        subsets.add(fqdn(res.spec.host, res.namespace), (s.name for s in res.spec.subsets))
    served = _HostIndex()
    for res, _ in by_kind["ServiceEntry"]:
        for h in res.spec.hosts:
            served.add(fqdn(h, res.namespace))
    for res, check in by_kind["VirtualService"]:
        for path, dest in _destinations(res.spec):
            host = fqdn(dest.host, res.namespace)
            if dest.subset and dest.subset not in subsets.values(host):
                check.warn(
                    f"subset {dest.subset!r} of host {dest.host!r} is not defined by any DestinationRule; "
                    "requests routed there get 503 (no cluster)",
                    *path, "subset",
                )
            if ".svc." not in host and not served.covers(host):
                check.warn(
                    f"host {dest.host!r} is not defined by any ServiceEntry; pymesh resolves it through DNS "
                    "and REGISTRY_ONLY blocks it",
                    *path, "host",
                )


def _unreachable_rules(items: list[Item]) -> None:
    for res, check in items:
        catch_all: int | None = None
        for i, route in enumerate(res.spec.http):
            if catch_all is not None:
                check.warn(f"rule is never used: http[{catch_all}] has no match and catches every request",
                           "spec", "http", i)
            elif not route.match:
                catch_all = i


def _duplicate_hosts(items: list[Item]) -> None:
    owners: dict[str, Item] = {}
    for item in sorted(items, key=lambda it: it[0].age):
        res, check = item
        if res.spec.gateways and "mesh" not in res.spec.gateways:
            continue
        for i, host in enumerate(res.spec.hosts):
            name = fqdn(host, res.namespace)
            first = owners.get(name)
            if first is None:
                owners[name] = item
            else:
                other = first[0]
                check.warn(
                    f"host {host!r} is also claimed by VirtualService {other.namespace}/{other.name} ({other.source}); "
                    "for sidecars the older one wins and this one is ignored for that host",
                    "spec", "hosts", i,
                )


def _destination_rule_merges(items: list[Item]) -> None:
    seen: dict[tuple[str, str], Resource[Any]] = {}
    for res, check in items:
        key = (res.namespace, fqdn(res.spec.host, res.namespace))
        first = seen.setdefault(key, res)
        if first is not res:
            check.warn(
                f"DestinationRule {first.namespace}/{first.name} ({first.source}) is for the same host; "
                "subsets are merged and the first one's trafficPolicy wins",
                "spec", "host",
            )


def _gateways(by_kind: dict[str, list[Item]]) -> None:
    known = {(res.namespace, res.name) for res, _ in by_kind["Gateway"]}
    for res, check in by_kind["VirtualService"]:
        for i, gw in enumerate(res.spec.gateways):
            if gw == "mesh":
                continue
            ns, _, name = gw.rpartition("/")
            if (ns or res.namespace, name) not in known and "." not in name:
                check.warn(f"gateway {gw!r} is not defined by any loaded Gateway", "spec", "gateways", i)


def _peer_authn_conflicts(items: list[Item], mesh: MeshConfig) -> None:
    wide: dict[str, Resource[Any]] = {}
    for res, check in sorted(items, key=lambda it: it[0].age):
        selector = res.spec.selector
        if selector is not None and selector.match_labels:
            continue
        first = wide.setdefault(res.namespace, res)
        if first is not res:
            scope = "mesh-wide" if res.namespace == mesh.root_namespace else "namespace-wide"
            check.warn(
                f"another {scope} PeerAuthentication {first.namespace}/{first.name} exists; the older one is used",
                "metadata", "name",
            )


def _custom_providers(items: list[Item], mesh: MeshConfig) -> None:
    names = {p.name for p in mesh.extension_providers}
    for res, check in items:
        provider = res.spec.provider
        if res.spec.action == "CUSTOM" and provider is not None and provider.name not in names:
            check.warn(f"extension provider {provider.name!r} is not in MeshConfig extensionProviders; "
                       "requests are denied", "spec", "provider", "name")


def _role_refs(by_kind: dict[str, list[Item]]) -> None:
    roles = {(res.namespace, res.name) for res, _ in by_kind["ServiceRole"]}
    for res, check in by_kind["ServiceRoleBinding"]:
        ref = res.spec.role_ref
        name = ref.name if ref is not None else res.spec.role
        if name and name.lstrip("/") and (res.namespace, name.lstrip("/")) not in roles:
            where = ("spec", "roleRef") if ref is not None else ("spec", "role")
            check.warn(f"ServiceRole {name!r} is not defined in namespace {res.namespace!r}", *where)


def _orphan_delegates(items: list[Item]) -> None:
    """A VirtualService without hosts is a delegate; one that nothing delegates to is a mistake.

    Istio accepts it silently (it routes nothing). pymesh refuses it, because on its own
    it is the Istio 1.1 error "virtual service must have at least one host".
    """
    referenced = set()
    for res, _ in items:
        for route in res.spec.http:
            if route.delegate is not None:
                referenced.add((route.delegate.namespace or res.namespace, route.delegate.name))
    for res, check in items:
        if not res.spec.hosts and (res.namespace, res.name) not in referenced:
            check.error(
                "virtual service must have at least one host (without hosts it is a delegate, "
                f"and no VirtualService delegates to {res.namespace}/{res.name})",
                "spec", "hosts",
            )
