"""pymesh: an Istio sidecar inside your Python process.

Routing, load balancing, resilience, mTLS and policy, configured by the Istio YAML you
already write. Start with ``pymesh.Mesh.from_path("mesh/")``.
"""

from __future__ import annotations

import logging

from pymesh.errors import (
    ConfigError,
    Issue,
    MeshError,
    MeshRequestError,
    NoHealthyUpstreamError,
    NoRouteError,
    RouteNotFoundError,
    UpstreamConnectError,
    UpstreamOverflowError,
    UpstreamTimeoutError,
)
from pymesh.mesh import Mesh
from pymesh.outbound.decision import RouteDecision
from pymesh.workload import Workload

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Issue",
    "Mesh",
    "MeshError",
    "MeshRequestError",
    "NoHealthyUpstreamError",
    "NoRouteError",
    "RouteDecision",
    "RouteNotFoundError",
    "UpstreamConnectError",
    "UpstreamOverflowError",
    "UpstreamTimeoutError",
    "Workload",
    "__version__",
]

for _cls in (
    ConfigError,
    Issue,
    Mesh,
    MeshError,
    MeshRequestError,
    NoHealthyUpstreamError,
    NoRouteError,
    RouteDecision,
    RouteNotFoundError,
    UpstreamConnectError,
    UpstreamOverflowError,
    UpstreamTimeoutError,
    Workload,
):
    _cls.__module__ = "pymesh"

logging.getLogger("pymesh").addHandler(logging.NullHandler())
