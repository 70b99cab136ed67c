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

from pymesh.snapshot.clusters import Cluster, ClusterKey

if TYPE_CHECKING:
    from pymesh.outbound.balancer import Balancer, HashPolicy

__all__ = ["Runtime"]


class _Entry:
    __slots__ = ("balancer", "cluster", "fingerprint", "hash_policy")

    def __init__(self, cluster: Cluster, fingerprint: tuple[Any, ...], balancer: Balancer,
                 hash_policy: HashPolicy | None) -> None:
        self.cluster = cluster
        self.fingerprint = fingerprint
        self.balancer = balancer
        self.hash_policy = hash_policy


class Runtime:
    def __init__(self, *, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rng = rng or random.Random()  # noqa: S311  (load balancing, not cryptography)
        self.clock = clock
        self._entries: dict[ClusterKey, _Entry] = {}
        self._lock = threading.Lock()

    def entry(self, cluster: Cluster, *, locality: str, labels: Any, mesh_locality: Any) -> _Entry:
        """The balancer for ``cluster``: reused while its endpoints and LB settings stay the same."""
        entry = self._entries.get(cluster.key)
        if entry is not None and entry.cluster is cluster:
            return entry
        lb = cluster.policy.load_balancer
        fingerprint = (cluster.endpoints, lb, cluster.policy.outlier_detection is not None)
        from pymesh.outbound.balancer import make_balancer

        with self._lock:
            entry = self._entries.get(cluster.key)
            if entry is not None and entry.fingerprint == fingerprint:
                entry.cluster = cluster
                return entry
            balancer = make_balancer(
                lb, cluster.endpoints, client_locality=locality, client_labels=labels,
                mesh_locality=mesh_locality, outlier_detection=cluster.policy.outlier_detection is not None,
                rng=self.rng, clock=self.clock,
            )
            entry = _Entry(cluster, fingerprint, balancer, balancer.hash_policy)
            self._entries[cluster.key] = entry
            return entry
