"""One memory measurement in a fresh interpreter: ``python -m benchmarks _memory N [--traced]``.

Imports only the standard library before its first reading, so that "pymesh's own" memory is
RSS after importing and using pymesh minus RSS after importing pymesh's dependencies alone.
Then it builds a mesh of N generated services (``routing.service_docs``), routes once to every
host (the first request to a host compiles its routes) and reports the growth, in RSS and,
with ``--traced``, in tracemalloc's count of live Python allocations.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
from typing import Any

__all__ = ["measure"]

DEPENDENCIES = ("httpx", "yaml", "re2", "tenacity", "pybreaker", "jwt", "cryptography.x509", "opentelemetry.trace")


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(count: int, traced: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"interpreter_mb": _rss_mb()}
    for dep in DEPENDENCIES:
        with contextlib.suppress(ImportError):
            importlib.import_module(dep)
    out["deps_mb"] = _rss_mb()
    from pymesh import Mesh
    from pymesh.config.load import Text

    out["pymesh_import_mb"] = _rss_mb()
    from benchmarks import routing  # the generator; httpx and pymesh are already loaded

    one = routing.service_docs(0, 18080)
    with Mesh([Text("---\n".join(one), "<one service>")], namespace=routing.NS) as m, m.client(trust_env=False):
        m.route("GET", routing.target_url(1))
        out["pymesh_used_mb"] = _rss_mb()
    docs = [d for i in range(count) for d in routing.service_docs(i, 18080)]
    sources = [Text("---\n".join(docs[k : k + 3000]), f"<part {k}>") for k in range(0, len(docs), 3000)]
    gc.collect()
    if traced:
        import tracemalloc

        tracemalloc.start()
    before = _rss_mb()
    mesh = Mesh(sources, namespace=routing.NS)
    for i in range(count):
        mesh.route("GET", f"http://{routing.host(i)}:{routing.SERVICE_PORT}/")
    gc.collect()
    out["mesh_rss_mb"] = _rss_mb() - before
    if traced:
        current, peak = tracemalloc.get_traced_memory()
        out["mesh_traced_mb"] = current / 2**20
        out["mesh_traced_peak_mb"] = peak / 2**20
    mesh.close()
    return out
