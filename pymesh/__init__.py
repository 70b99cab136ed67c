"""pymesh: an Istio sidecar inside your Python process.

Routing, load balancing, resilience, mTLS and policy, configured by the Istio YAML you
already write. Start with ``pymesh.Mesh.from_path("mesh/")``.
"""

from __future__ import annotations

import logging
import typing as _typing

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
from pymesh.inbound.request import Caller
from pymesh.mesh import Mesh
from pymesh.outbound.decision import RouteDecision
from pymesh.workload import Workload

if _typing.TYPE_CHECKING:
    from pymesh import asgi as asgi
    from pymesh import wsgi as wsgi
    from pymesh.serving import serve as serve

__version__ = "0.1.0"

__all__ = [
    "Caller",
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
    "serve",
]

for _cls in (
    Caller,
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


def __getattr__(name: str) -> _typing.Any:
    # ``pymesh.asgi``, ``pymesh.wsgi`` and ``pymesh.serve`` (from ``pymesh.serving``) load on first
    # use, so ``import pymesh`` stays light: no asyncio server, no TLS stack until a service asks.
    import importlib

    if name in ("asgi", "wsgi"):
        return importlib.import_module(f"pymesh.{name}")
    if name == "serve":
        function = importlib.import_module("pymesh.serving").serve
        globals()["serve"] = function
        return function
    raise AttributeError(f"module 'pymesh' has no attribute {name!r}")
