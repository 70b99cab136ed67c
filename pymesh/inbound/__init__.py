"""The inbound side: what the mesh enforces on requests to this workload.

:mod:`pymesh.inbound.core` lists the pipeline in order; :mod:`pymesh.asgi` and
:mod:`pymesh.wsgi` adapt it to frameworks; :mod:`pymesh.inbound.server` is the connection
layer of ``pymesh.serve``.
"""

from __future__ import annotations

from pymesh.inbound.request import Caller, Denial, InboundRequest

__all__ = ["Caller", "Denial", "InboundRequest"]
