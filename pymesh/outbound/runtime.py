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
from typing import TYPE_CHECKING, Any

from pymesh.outbound.resilience.budget import RetryBudget
from pymesh.outbound.resilience.limits import Limits, PoolLimits
from pymesh.outbound.resilience.outlier import OutlierDetector, OutlierPolicy
from pymesh.snapshot.clusters import Cluster, ClusterKey

if TYPE_CHECKING:
    from pymesh.outbound.balancer import Balancer, HashPolicy

__all__ = ["ClusterState", "Runtime"]


class ClusterState:
    """One cluster's learned state: balancer, outlier detector, pool limits, retry budget."""

    __slots__ = ("balancer", "budget", "cluster", "fingerprint", "hash_policy", "limits", "outlier")

    def __init__(self, cluster: Cluster, fingerprint: tuple[Any, ...], balancer: Balancer,
                 outlier: OutlierDetector | None, limits: Limits, budget: RetryBudget) -> None:
        self.cluster = cluster
        self.fingerprint = fingerprint
        self.balancer = balancer
        self.hash_policy: HashPolicy | None = balancer.hash_policy
        self.outlier = outlier
        self.limits = limits
        self.budget = budget


class Runtime:
    def __init__(self, *, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rng = rng or random.Random()  # noqa: S311  (load balancing, not cryptography)
        self.clock = clock
        self._entries: dict[ClusterKey, ClusterState] = {}
        # Pass-through and DNS-dialled destinations have no cluster state of their own.
        self.default_budget = RetryBudget(clock=clock)
        self._lock = threading.Lock()

    def entry(self, cluster: Cluster, *, locality: str, labels: Any, mesh_locality: Any) -> ClusterState:
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
        fingerprint = (cluster.endpoints, lb, od, policy.connection_pool)
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
                rng=self.rng, clock=self.clock,
            )
            outlier = (OutlierDetector(outlier_policy, len(cluster.endpoints), clock=self.clock)
                       if outlier_policy is not None else None)
            limits = Limits(PoolLimits.compile(policy.connection_pool))
            budget = entry.budget if entry is not None else RetryBudget(clock=self.clock)
            if entry is not None and entry.fingerprint[:3] == fingerprint[:3]:
                balancer, outlier = entry.balancer, entry.outlier  # only the pool policy changed
            entry = ClusterState(cluster, fingerprint, balancer, outlier, limits, budget)
            self._entries[cluster.key] = entry
            return entry
