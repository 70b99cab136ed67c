"""State that outlives a config swap: per-cluster load-balancer state, keyed by cluster.

A reload keeps a cluster's balancer (round-robin position, active request counts) when
its endpoints and load-balancer settings did not change, so a config push never resets
what the data path has learned. Later parts (outlier detection, pool limits) keep their
state here the same way.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymesh.outbound.origination import Origination, originations
from pymesh.outbound.pool import ConnectionGate
from pymesh.outbound.resilience.budget import RetryBudget
from pymesh.outbound.resilience.limits import UNLIMITED, Limits, PoolLimits
from pymesh.outbound.resilience.outlier import OutlierDetector, OutlierPolicy
from pymesh.snapshot.clusters import Cluster, ClusterKey

if TYPE_CHECKING:
    from pymesh.config.meshconfig import MeshConfig
    from pymesh.outbound.balancer import Balancer, HashPolicy
    from pymesh.security.rotation import CertificateSource

__all__ = ["DEFAULT_POOL", "ClusterState", "PoolSettings", "Runtime"]


class ClusterState:
    """One cluster's learned state: balancer, outlier detector, pool limits, retry budget."""

    __slots__ = ("balancer", "budget", "cluster", "connections", "fingerprint", "hash_policy", "limits", "outlier",
                 "pool", "tls")

    def __init__(self, cluster: Cluster, fingerprint: tuple[Any, ...], balancer: Balancer,
                 outlier: OutlierDetector | None, limits: Limits, budget: RetryBudget, pool: PoolSettings,
                 connections: ConnectionGate, tls: tuple[Origination | None, ...]) -> None:
        self.cluster = cluster
        self.fingerprint = fingerprint
        self.balancer = balancer
        self.hash_policy: HashPolicy | None = balancer.hash_policy
        self.outlier = outlier
        self.limits = limits
        self.budget = budget
        self.pool = pool
        self.connections = connections  # tcp.maxConnections, counted across the cluster's endpoint pools
        self.tls = tls  # per endpoint index: the TLS to originate, or None for plaintext


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How to size and time the endpoint pools of a cluster (DestinationRule ``connectionPool``)."""

    keepalive_expiry: float = 5.0  # http.idleTimeout; httpx's default when unset (Istio's is 1 h)
    connect_timeout: float = 10.0  # tcp.connectTimeout, else MeshConfig connectTimeout
    max_requests_per_connection: int | None = None  # http.maxRequestsPerConnection; None: unlimited

    @property
    def close_after_each(self) -> bool:
        """``maxRequestsPerConnection: 1``: keep-alive off."""
        return self.max_requests_per_connection == 1

    @classmethod
    def of(cls, pool: Any, mesh_connect_timeout: float) -> PoolSettings:
        tcp = pool.tcp if pool is not None else None
        http = pool.http if pool is not None else None
        return cls(
            keepalive_expiry=http.idle_timeout if http is not None and http.idle_timeout else 5.0,
            connect_timeout=tcp.connect_timeout if tcp is not None and tcp.connect_timeout else mesh_connect_timeout,
            max_requests_per_connection=(http.max_requests_per_connection or None) if http is not None else None,
        )


DEFAULT_POOL = PoolSettings()


class Runtime:
    def __init__(self, *, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rng = rng or random.Random()  # noqa: S311  (load balancing, not cryptography)
        self.clock = clock
        self._entries: dict[ClusterKey, ClusterState] = {}
        # Pass-through and DNS-dialled destinations have no cluster state of their own.
        self.default_budget = RetryBudget(clock=clock)
        self._lock = threading.Lock()

    def live_endpoints(self) -> set[tuple[int, str, int]]:
        """(id of a cluster's connection gate, address, port) for every endpoint of every cluster known
        now: a pool of a gated cluster that is not here belongs to an endpoint a reload removed."""
        live: set[tuple[int, str, int]] = set()
        for state in list(self._entries.values()):
            gate, service = id(state.connections), state.cluster.service
            for e in state.cluster.endpoints:
                ports = set(e.ports.values())
                if service is not None:
                    ports.update(e.port_for(sp) for sp in service.ports)
                live.update((gate, e.address, port) for port in ports)
        return live

    def entry(self, cluster: Cluster, *, locality: str, labels: Any, mesh_config: MeshConfig,
              identity: CertificateSource | None = None) -> ClusterState:
        """The state for ``cluster``: kept while its endpoints and policies stay the same.

        A changed outlier or pool policy rebuilds only that part's state; changed endpoints
        or load-balancer settings rebuild the balancer and the outlier detector (whose
        counters are per endpoint index).
        """
        entry = self._entries.get(cluster.key)
        if entry is not None and entry.cluster is cluster:
            return entry
        policy = cluster.policy
        lb = policy.load_balancer
        od = policy.outlier_detection
        mc = mesh_config
        mesh_locality, connect_timeout = mc.locality_lb_setting, mc.connect_timeout
        mesh_tls = (mc.trust_domain, mc.trust_domain_aliases, mc.enable_auto_mtls)  # what origination reads
        fingerprint = (cluster.endpoints, lb, od, mesh_locality, locality, policy.connection_pool,
                       policy.retry_budget, connect_timeout, policy.tls, identity, mesh_tls)
        from pymesh.outbound.balancer import make_balancer

        with self._lock:
            entry = self._entries.get(cluster.key)
            if entry is not None and entry.fingerprint == fingerprint:
                entry.cluster = cluster
                return entry
            outlier_policy = OutlierPolicy.compile(od) if od is not None else None
            balancer = make_balancer(
                lb, cluster.endpoints, client_locality=locality, client_labels=labels,
                mesh_locality=mesh_locality, outlier_detection=od is not None,
                panic_threshold=outlier_policy.min_health_percent if outlier_policy is not None else 50.0,
                joined_at=entry.balancer.joined_at if entry is not None else None,  # slow start carries over
                rng=self.rng, clock=self.clock,
            )
            outlier = (OutlierDetector(outlier_policy, len(cluster.endpoints), clock=self.clock)
                       if outlier_policy is not None else None)
            limits = Limits(PoolLimits.compile(policy.connection_pool, policy.retry_budget))
            same_budget = entry is not None and entry.fingerprint[6] == policy.retry_budget
            budget = entry.budget if entry is not None and same_budget else RetryBudget.from_istio(
                policy.retry_budget, clock=self.clock)
            if entry is not None and entry.fingerprint[:5] == fingerprint[:5]:
                balancer, outlier = entry.balancer, entry.outlier  # only pool or budget policy changed
            pool = PoolSettings.of(policy.connection_pool, connect_timeout)
            # The gate outlives rebuilds: pools already open keep counting against the same one.
            gate = entry.connections if entry is not None else ConnectionGate()
            gate.limit = limits.policy.max_connections if limits.policy.max_connections < UNLIMITED else None
            key = cluster.key
            tls = originations(
                policy.tls, cluster.service, cluster.endpoints, host=key.host, port=key.port, subset=key.subset,
                identity=identity, trust_domain=mc.trust_domain, aliases=mc.trust_domain_aliases,
                auto_mtls=mc.enable_auto_mtls)
            entry = ClusterState(cluster, fingerprint, balancer, outlier, limits, budget, pool, gate, tls)
            self._entries[cluster.key] = entry
            return entry
