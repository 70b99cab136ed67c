"""The compiled, immutable view of a mesh's config that every request reads.

Built once per load or reload, beside the old one; the mesh swaps one reference, so a
request sees the old snapshot or the new one, never a mix. Nothing here does I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from pymesh.config.load import Config
from pymesh.config.meshconfig import MeshConfig
from pymesh.config.resource import Resource
from pymesh.snapshot import legacy
from pymesh.snapshot.clusters import ClusterTable
from pymesh.snapshot.policies import PolicyIndex, WorkloadPolicies
from pymesh.snapshot.registry import Registry, build_services
from pymesh.snapshot.routes import RouteTable
from pymesh.workload import Workload

__all__ = ["Snapshot", "build"]

_generations = itertools.count(1)

_SECURITY = ("PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy")


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    generation: int
    config: Config
    workload: Workload
    registry: Registry
    routes: RouteTable
    clusters: ClusterTable
    policies: PolicyIndex
    local_policies: WorkloadPolicies  # what applies to this mesh's own workload
    legacy: legacy.LegacyPolicies

    @property
    def mesh_config(self) -> MeshConfig:
        return self.config.mesh_config

    @property
    def trust_domain(self) -> str:
        return self.workload.trust_domain or self.config.mesh_config.trust_domain

    def resources(self, kind: str) -> list[Resource[Any]]:
        return self.config.of_kind(kind)


def build(config: Config, workload: Workload) -> Snapshot:
    """Compile a validated config for ``workload``; raises nothing for valid config."""
    mesh = config.mesh_config
    registry = Registry(build_services(config.of_kind("ServiceEntry"), config.of_kind("WorkloadEntry")))
    translated = legacy.translate(config.resources, mesh)
    security = [r for r in config.resources if r.kind in _SECURITY] + list(translated.resources)
    policies = PolicyIndex(security, mesh.root_namespace)
    return Snapshot(
        generation=next(_generations),
        config=config,
        workload=workload,
        registry=registry,
        routes=RouteTable(config.of_kind("VirtualService"), workload.namespace),
        clusters=ClusterTable(
            config.of_kind("DestinationRule"),
            registry,
            client_namespace=workload.namespace,
            client_labels=workload.labels,
            root_namespace=mesh.root_namespace,
        ),
        policies=policies,
        local_policies=policies.for_workload(workload.namespace, workload.name, workload.labels),
        legacy=translated,
    )
