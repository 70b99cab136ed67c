"""The service registry: services and their endpoints, from ServiceEntry and WorkloadEntry.

This is what Istio builds from ServiceEntry for workloads outside Kubernetes. Hosts are
stored as FQDNs (short names expanded in the namespace of the ServiceEntry that names
them); wildcard hosts are kept apart and searched most specific first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pymesh.config.hosts import candidates, fqdn, matches, more_specific_first
from pymesh.config.resource import Resource, Source, exported_to

__all__ = ["Endpoint", "Registry", "Service", "ServicePort"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    name: str = ""
    protocol: str = ""  # upper case; "" when the ServiceEntry did not say
    target_port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One workload instance that serves a service."""

    address: str
    ports: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # service port name -> port
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    locality: str = ""
    weight: int = 1
    network: str = ""
    service_account: str = ""
    origin: str = ""  # "ServiceEntry ns/name" or "WorkloadEntry ns/name"

    def port_for(self, port: ServicePort) -> int:
        """The port to dial for a service port: by name, else the target port, else the same number."""
        mapped = self.ports.get(port.name) if port.name else None
        return mapped or port.target_port or port.number

    def has_labels(self, selector: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    host: str  # FQDN, or a wildcard such as "*.googleapis.com"
    namespace: str
    ports: tuple[ServicePort, ...] = ()
    resolution: str = "NONE"
    location: str = "MESH_EXTERNAL"
    endpoints: tuple[Endpoint, ...] = ()
    addresses: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    source: Source | None = None

    def port(self, number: int | None) -> ServicePort | None:
        """The service port a request addressed; with none given, the only port if there is one."""
        if number is None:
            return self.ports[0] if len(self.ports) == 1 else None
        for p in self.ports:
            if p.number == number:
                return p
        return None

    def visible_to(self, namespace: str) -> bool:
        return exported_to(self.export_to, self.namespace, namespace)


class Registry:
    """Services by FQDN; immutable once built."""

    __slots__ = ("_exact", "_wildcards")

    def __init__(self, services: Iterable[Service]) -> None:
        exact: dict[str, Service] = {}
        wildcards: dict[str, Service] = {}
        for svc in services:
            target = wildcards if svc.host.startswith("*") else exact
            previous = target.get(svc.host)
            target[svc.host] = _merge(previous, svc) if previous else svc
        self._exact: Mapping[str, Service] = MappingProxyType(exact)
        self._wildcards = tuple(sorted(wildcards.values(), key=lambda s: more_specific_first(s.host)))

    def __len__(self) -> int:
        return len(self._exact) + len(self._wildcards)

    def __iter__(self) -> Any:
        yield from self._exact.values()
        yield from self._wildcards

    def get(self, host: str) -> Service | None:
        """The service for an FQDN: exact first, else the most specific wildcard."""
        svc = self._exact.get(host)
        if svc is not None:
            return svc
        for wild in self._wildcards:
            if matches(wild.host, host):
                return wild
        return None

    def resolve(self, host: str, namespace: str) -> Service | None:
        """The service a request's host means, for a caller in ``namespace``."""
        for name in candidates(host, namespace):
            svc = self.get(name)
            if svc is not None and svc.visible_to(namespace):
                return svc
        return None


def _merge(a: Service, b: Service) -> Service:
    # Two ServiceEntries for one host: Istio merges their endpoints; the first one's ports stand.
    from dataclasses import replace

    return replace(a, endpoints=a.endpoints + b.endpoints)


def build_services(
    service_entries: Iterable[Resource[Any]], workload_entries: Iterable[Resource[Any]]
) -> list[Service]:
    """Services from ServiceEntry documents, with endpoints inline or from WorkloadEntries."""
    wes = list(workload_entries)
    services: list[Service] = []
    for res in service_entries:
        spec = res.spec
        ports = tuple(
            ServicePort(p.number, p.name, (p.protocol or "").upper(), p.target_port or None) for p in spec.ports
        )
        origin = f"ServiceEntry {res.namespace}/{res.name}"
        endpoints = [_endpoint(we, origin) for we in spec.endpoints]
        selector = spec.workload_selector.labels if spec.workload_selector is not None else None
        if selector is not None:
            for we in wes:
                if we.namespace == res.namespace and all(we.spec.labels.get(k) == v for k, v in selector.items()):
                    endpoints.append(_endpoint(we.spec, f"WorkloadEntry {we.namespace}/{we.name}"))
        for host in spec.hosts:
            name = fqdn(host, res.namespace)
            eps = tuple(endpoints)
            if not eps and spec.resolution in ("DNS", "DNS_ROUND_ROBIN") and not name.startswith("*"):
                eps = (Endpoint(address=name, origin=origin),)  # resolve the host itself
            services.append(
                Service(
                    host=name,
                    namespace=res.namespace,
                    ports=ports,
                    resolution=spec.resolution,
                    location=spec.location,
                    endpoints=eps,
                    addresses=tuple(spec.addresses),
                    export_to=tuple(spec.export_to),
                    subject_alt_names=tuple(spec.subject_alt_names),
                    source=res.source,
                )
            )
    return services


def _endpoint(we: Any, origin: str) -> Endpoint:
    return Endpoint(
        address=we.address,
        ports=MappingProxyType(dict(we.ports)),
        labels=MappingProxyType(dict(we.labels)),
        locality=we.locality,
        weight=we.weight or 1,
        network=we.network,
        service_account=we.service_account,
        origin=origin,
    )
