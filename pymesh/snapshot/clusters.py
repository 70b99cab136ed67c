"""Clusters: (host, subset, port) with the traffic policy that applies to it.

DestinationRule lookup follows Istio's sidecar (``push_context.go``): rules in the
client's namespace first, then rules exported from the service's namespace, then the
root namespace; within a namespace the most specific host wins, and the first rule
found is used whole (no inheritance across levels). Several rules for one host in one
namespace merge: subsets unioned, the oldest one's top-level policy kept.

Policy for (port P, subset S), as ``MergeSubsetTrafficPolicy``: the rule's port-level
entry for P replaces all four components of the top level; then S's port-level entry
for P replaces everything, else each component S sets overrides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from pymesh.config.hosts import fqdn, matches, more_specific_first
from pymesh.config.resource import Resource, exported_to
from pymesh.snapshot.registry import Endpoint, Registry, Service

__all__ = ["Cluster", "ClusterKey", "ClusterTable", "TrafficPolicy"]


@dataclass(frozen=True, slots=True)
class ClusterKey:
    host: str
    subset: str = ""
    port: int = 0  # 0: the request did not say and the service has no single port

    def __str__(self) -> str:
        # Envoy's name for it: outbound|port|subset|host
        return f"outbound|{self.port or ''}|{self.subset}|{self.host}"


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """The four per-cluster components after merging; None means Istio's default."""

    load_balancer: Any = None
    connection_pool: Any = None
    outlier_detection: Any = None
    tls: Any = None
    retry_budget: Any = None  # top and subset level only: port-level entries have none

    def override(self, other: Any) -> TrafficPolicy:
        """Each component ``other`` (a config TrafficPolicy or port policy) sets replaces ours."""
        return TrafficPolicy(
            load_balancer=other.load_balancer or self.load_balancer,
            connection_pool=other.connection_pool or self.connection_pool,
            outlier_detection=other.outlier_detection or self.outlier_detection,
            tls=other.tls or self.tls,
            retry_budget=getattr(other, "retry_budget", None) or self.retry_budget,
        )

    @staticmethod
    def whole(other: Any, retry_budget: Any = None) -> TrafficPolicy:
        """A port-level entry replaces the four components, unset ones falling back to defaults."""
        return TrafficPolicy(other.load_balancer, other.connection_pool, other.outlier_detection, other.tls,
                             retry_budget)


_NONE = TrafficPolicy()


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    key: ClusterKey
    policy: TrafficPolicy = _NONE
    service: Service | None = None
    destination_rule: Resource[Any] | None = None
    subset_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: tuple[Endpoint, ...] = ()
    subset_defined: bool = True  # False: a route names a subset no DestinationRule has (503 NC)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One DestinationRule host entry after same-namespace merging."""

    host: str
    namespace: str
    resource: Resource[Any]
    traffic_policy: Any
    subsets: Mapping[str, Any]  # name -> Subset
    export_to: tuple[str, ...]
    selector: Mapping[str, str] | None



class ClusterTable:
    """Resolves clusters for one client workload; memoised, and immutable in effect."""

    __slots__ = ("_cache", "_client_labels", "_client_ns", "_registry", "_root", "_rules")

    def __init__(
        self,
        destination_rules: Iterable[Resource[Any]],
        registry: Registry,
        *,
        client_namespace: str,
        client_labels: Mapping[str, str],
        root_namespace: str,
    ) -> None:
        merged: dict[tuple[str, str, tuple[tuple[str, str], ...]], _Rule] = {}
        for res in sorted(destination_rules, key=lambda r: (r.metadata.creation_timestamp or "",)):
            spec = res.spec
            host = fqdn(spec.host, res.namespace)
            selector = dict(spec.workload_selector.match_labels) if spec.workload_selector else None
            key = (res.namespace, host, tuple(sorted((selector or {}).items())))
            subsets = {s.name: s for s in spec.subsets}
            have = merged.get(key)
            if have is None:
                merged[key] = _Rule(
                    host, res.namespace, res, spec.traffic_policy, subsets, tuple(spec.export_to), selector
                )
            else:
                union = {**subsets, **have.subsets}  # the older rule's subset wins a name clash
                merged[key] = replace(have, subsets=union, traffic_policy=have.traffic_policy or spec.traffic_policy)
        by_ns: dict[str, list[_Rule]] = defaultdict(list)
        for rule in merged.values():
            by_ns[rule.namespace].append(rule)
        for rules in by_ns.values():
            rules.sort(key=lambda r: more_specific_first(r.host))
        self._rules = dict(by_ns)
        self._registry = registry
        self._client_ns = client_namespace
        self._client_labels = dict(client_labels)
        self._root = root_namespace
        self._cache: dict[ClusterKey, Cluster] = {}

    def destination_rule(self, host: str, service_namespace: str | None) -> _Rule | None:
        """The rule that applies to ``host`` for this client, or None."""
        order = [self._client_ns]
        if service_namespace and service_namespace not in order:
            order.append(service_namespace)
        if self._root not in order:
            order.append(self._root)
        for ns in order:
            for rule in self._rules.get(ns, ()):
                if not matches(rule.host, host):
                    continue
                if rule.selector is not None:
                    mine = all(self._client_labels.get(k) == v for k, v in rule.selector.items())
                    if ns != self._client_ns or not mine:
                        continue
                elif ns != self._client_ns and not exported_to(rule.export_to, rule.namespace, self._client_ns):
                    continue
                return rule
        return None

    def get(self, host: str, subset: str = "", port: int | None = None) -> Cluster:
        service = self._registry.get(host)
        sport = service.port(port) if service is not None else None
        key = ClusterKey(host, subset, port or (sport.number if sport else 0))
        cluster = self._cache.get(key)
        if cluster is None:
            cluster = self._cache[key] = self._build(key, service)
        return cluster

    def _build(self, key: ClusterKey, service: Service | None) -> Cluster:
        ns = service.namespace if service is not None else _namespace_of(key.host)
        rule = self.destination_rule(key.host, ns)
        policy = _NONE
        labels: Mapping[str, str] = {}
        defined = not key.subset
        if rule is not None:
            tp = rule.traffic_policy
            if tp is not None:
                port_tp = tp.for_port(key.port) if key.port else None
                policy = (TrafficPolicy.whole(port_tp, tp.retry_budget) if port_tp is not None
                          else _NONE.override(tp))
            sub = rule.subsets.get(key.subset) if key.subset else None
            if sub is not None:
                defined = True
                labels = dict(sub.labels)
                stp = sub.traffic_policy
                if stp is not None:
                    port_stp = stp.for_port(key.port) if key.port else None
                    budget = stp.retry_budget or policy.retry_budget
                    policy = (TrafficPolicy.whole(port_stp, budget) if port_stp is not None
                              else policy.override(stp))
        endpoints: tuple[Endpoint, ...] = ()
        if service is not None:
            endpoints = tuple(e for e in service.endpoints if e.has_labels(labels))
        return Cluster(
            key=key,
            policy=policy,
            service=service,
            destination_rule=rule.resource if rule else None,
            subset_labels=MappingProxyType(dict(labels)),
            endpoints=endpoints,
            subset_defined=defined,
        )


def _namespace_of(host: str) -> str | None:
    """``name.ns.svc.<domain>`` -> ``ns``."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[1]
    return None
