"""The table of kinds pymesh reads, keyed by (API group, kind)."""

from __future__ import annotations

from pymesh.config import legacy, meshconfig, security
from pymesh.config.networking import destinationrule, gateway, serviceentry, virtualservice
from pymesh.config.resource import KindSpec

__all__ = ["IGNORED_KINDS", "KINDS", "MESH_CONFIG", "lookup"]

MESH_CONFIG = KindSpec("pymesh", "MeshConfig", ("v1",), meshconfig.MeshConfig, namespaced=False)

KINDS: dict[tuple[str, str], KindSpec] = {
    (k.group, k.kind): k
    for k in (
        *virtualservice.KINDS,
        *destinationrule.KINDS,
        *serviceentry.KINDS,
        *gateway.KINDS,
        *security.KINDS,
        *legacy.KINDS,
        MESH_CONFIG,
    )
}

# Kinds that sit beside Istio config in real repositories. pymesh skips them with a
# warning; anything else unknown is skipped the same way, with a hint that it may be a typo.
IGNORED_KINDS = frozenset(
    {
        "Deployment", "Service", "ServiceAccount", "Pod", "StatefulSet", "DaemonSet", "ReplicaSet", "Namespace",
        "Secret", "Ingress", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "HorizontalPodAutoscaler",
        "EnvoyFilter", "Sidecar", "WorkloadGroup", "Telemetry", "WasmPlugin", "ProxyConfig", "ServiceMeshPolicy",
        "QuotaSpec", "QuotaSpecBinding", "quota", "memquota", "metric", "prometheus",
        "attributemanifest", "template", "adapter", "stdio", "logentry", "kubernetesenv", "kubernetes", "redisquota",
        "HTTPAPISpec", "HTTPAPISpecBinding", "CustomResourceDefinition",
    }
)


def lookup(group: str, kind: str) -> KindSpec | None:
    return KINDS.get((group, kind))
