"""Many AuthorizationPolicies through ``MeshMiddleware``: the path index sees the normalized path
without its query, a DENY sees it without ``;params`` too, and a reload swaps the index with the
policies."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pymesh
from pymesh import asgi
from tests.inbound.helpers import WORKLOAD


def _policy(name: str, action: str, paths: list[str]) -> str:
    return f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: {action}
  rules: [{{to: [{{operation: {{methods: [GET], paths: {paths}}}}}]}}]
---
"""


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def status(mw: asgi.MeshMiddleware, target: str) -> int:
    path, _, query = target.partition("?")
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "scheme": "http", "headers": [(b"host", b"web.shop.svc.cluster.local")], "client": ("10.0.0.9", 5555),
             "server": ("10.0.0.1", 8080)}
    sent: list[int] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    asyncio.run(mw(scope, receive, send))
    return sent[0]


def test_many_policies_then_a_reload(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("".join(_policy(f"p{i}", "ALLOW", [f"/p{i}/*"]) for i in range(300))
                      + _policy("zz-allow-ok", "ALLOW", ["/ok"]) + _policy("deny-secret", "DENY", ["*.secret"]))
    with pymesh.Mesh.from_path(config, workload=WORKLOAD) as mesh:
        mw = asgi.MeshMiddleware(app, mesh=mesh)
        assert {t: status(mw, t) for t in ("/ok?x=1", "/ok/", "/p7/a", "/p299/a?b", "/p300/a", "/p7/a.secret",
                                           "/p7/a.secret;v=1", "/new/x")} == {
            "/ok?x=1": 200, "/ok/": 403, "/p7/a": 200, "/p299/a?b": 200, "/p300/a": 403, "/p7/a.secret": 403,
            "/p7/a.secret;v=1": 403, "/new/x": 403}
        config.write_text(_policy("zz-new", "ALLOW", ["/new/*", "/p7/*"]) + _policy("deny-p7", "DENY", ["/p7/b"]))
        mesh.reload()
        assert {t: status(mw, t) for t in ("/ok", "/p7/a", "/p7/b", "/p8/a", "/new/x", "/new/x.secret")} == {
            "/ok": 403, "/p7/a": 200, "/p7/b": 403, "/p8/a": 403, "/new/x": 200, "/new/x.secret": 200}
