"""Which VirtualService owns a host, as a sidecar sees it.

For sidecars (gateway ``mesh``) duplicate hosts do not merge: the oldest VirtualService
(creation time, then name, then namespace) owns the host and later ones are dropped for
it. Across wildcards the most specific host wins. Delegates (no hosts) are indexed by
``namespace/name`` for the routes that delegate to them. Gateway-bound services are
indexed per gateway for the ingress gateway.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pymesh.config.hosts import candidates, fqdn, matches, more_specific_first
from pymesh.config.resource import Resource, exported_to

__all__ = ["RouteTable", "VirtualHost"]


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """A host and the VirtualService that routes it."""

    host: str  # FQDN or wildcard
    service: Resource[Any]


def _gateway_ref(name: str, namespace: str) -> str:
    """``name``/``./name`` -> ``ns/name``; legacy ``name.ns.svc.cluster.local`` -> ``ns/name``."""
    if name == "mesh":
        return name
    if "/" in name:
        ns, _, short = name.partition("/")
        return f"{namespace if ns == '.' else ns}/{short}"
    if "." in name:
        short, ns, *_ = name.split(".")
        return f"{ns}/{short}"
    return f"{namespace}/{name}"


class RouteTable:
    """Hosts to VirtualServices for one viewing namespace; immutable once built."""

    __slots__ = ("_delegates", "_exact", "_gateways", "_wildcards")

    def __init__(self, services: Iterable[Resource[Any]], viewer_namespace: str) -> None:
        exact: dict[str, VirtualHost] = {}
        wild: dict[str, VirtualHost] = {}
        delegates: dict[str, Resource[Any]] = {}
        gateways: dict[str, list[Resource[Any]]] = defaultdict(list)
        for res in sorted(services, key=lambda r: r.age):
            if not res.spec.hosts:
                delegates[f"{res.namespace}/{res.name}"] = res
                continue
            refs = {_gateway_ref(g, res.namespace) for g in res.spec.gateways} or {"mesh"}
            for ref in refs - {"mesh"}:
                gateways[ref].append(res)
            if "mesh" not in refs or not exported_to(tuple(res.spec.export_to), res.namespace, viewer_namespace):
                continue
            for host in res.spec.hosts:
                name = fqdn(host, res.namespace)
                table = wild if name.startswith("*") else exact
                table.setdefault(name, VirtualHost(name, res))  # oldest wins
        self._exact: Mapping[str, VirtualHost] = MappingProxyType(exact)
        self._wildcards = tuple(sorted(wild.values(), key=lambda v: more_specific_first(v.host)))
        self._delegates: Mapping[str, Resource[Any]] = MappingProxyType(delegates)
        self._gateways: Mapping[str, tuple[Resource[Any], ...]] = MappingProxyType(
            {k: tuple(v) for k, v in gateways.items()}
        )

    def __len__(self) -> int:
        return len(self._exact) + len(self._wildcards)

    def hosts(self) -> list[str]:
        return [*self._exact, *(v.host for v in self._wildcards)]

    def get(self, host: str) -> VirtualHost | None:
        """The virtual host for an FQDN: exact, else the most specific wildcard."""
        vh = self._exact.get(host)
        if vh is not None:
            return vh
        for wild in self._wildcards:
            if matches(wild.host, host):
                return wild
        return None

    def resolve(self, host: str, namespace: str) -> VirtualHost | None:
        """The virtual host for a request's host as a caller in ``namespace`` wrote it."""
        for name in candidates(host, namespace):
            vh = self.get(name)
            if vh is not None:
                return vh
        return None

    def delegate(self, name: str, namespace: str) -> Resource[Any] | None:
        return self._delegates.get(f"{namespace}/{name}")

    def for_gateway(self, ref: str) -> tuple[Resource[Any], ...]:
        """VirtualServices bound to gateway ``ns/name``, oldest first (gateways merge them)."""
        return self._gateways.get(ref, ())
