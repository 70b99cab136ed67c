"""``pymesh.asgi.MeshMiddleware``: the inbound pipeline in front of an ASGI app, pure ASGI.

    app.add_middleware(pymesh.asgi.MeshMiddleware, mesh=mesh)      # Starlette / FastAPI

The peer comes from the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``),
verified again here against this workload's roots; ``pymesh.serve`` fills that extension,
which servers such as uvicorn do not. A refused request is answered by the middleware
(401 ``Peer authentication failed.`` with ``connection: close`` for a peer refused by
PeerAuthentication; other steps answer with their own statuses) and never reaches the app.
WebSocket handshakes go through the same pipeline and are closed before ``accept`` when
refused (the server then answers 403). Other scope types (lifespan) pass through untouched.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

from pymesh.inbound.core import Context, Inbound, Suspended
from pymesh.inbound.request import Denial, InboundRequest
from pymesh.mesh import Mesh
from pymesh.security.ca import MeshCA
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.rotation import CertificateSource

__all__ = ["MeshMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MeshMiddleware:
    """Enforce the mesh's inbound policy and put the verified ``pymesh.Caller`` in ``scope["pymesh"]``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        mesh: Mesh,
        trusted_proxies: Iterable[str] = (),
        certificate: WorkloadCertificate | CertificateSource | None = None,
        ca: MeshCA | None = None,
    ) -> None:
        self.app = app
        self.mesh = mesh
        self.inbound = Inbound(mesh, certificate=certificate, ca=ca, trusted_proxies=trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        request, peer_error = self._request(scope)
        result = self.inbound.start(request, peer_error)  # synchronous unless a step needs I/O
        while isinstance(result, Suspended):
            result = result.resume(await result.pending.arun())
        if isinstance(result, Denial):
            await (_deny_http(send, result) if kind == "http" else _deny_websocket(receive, send))
            return
        scope = dict(scope)
        _apply(scope, request, result)
        if result.response_headers and kind == "http":
            send = _adding(send, result.response_headers)
        await self.app(scope, receive, send)

    def _request(self, scope: Scope) -> tuple[InboundRequest, str | None]:
        raw_headers = scope.get("headers") or ()
        # A second Host header is joined on, as WSGI servers do, so the pipeline refuses the request.
        host = b",".join([v for k, v in raw_headers if k.lower() == b"host"]).decode("latin-1")
        raw = scope.get("raw_path") or quote(scope.get("path", "/")).encode("ascii")
        query = scope.get("query_string") or b""
        raw_path = (raw + b"?" + query if query else raw).decode("latin-1")
        client = scope.get("client") or ("", 0)
        server = scope.get("server") or ("", 0)
        peer, error = None, None
        tls = (scope.get("extensions") or {}).get("tls")
        if tls is not None:
            peer, error = self.inbound.verify(_chain(tls.get("client_cert_chain") or ()))
        request = InboundRequest(  # positional: keyword arguments cost three times as much here
            scope.get("method", "GET"),
            raw_path,
            host,
            None,  # headers: decoded from raw_headers only if a step reads them
            scope.get("scheme", "http"),
            str(client[0] or ""),  # source
            int(client[1] or 0),
            str(server[0] or ""),  # destination
            int(server[1] or 0),
            peer,
            tls.get("sni") if tls is not None else None,
            True,  # port_known: the server's own socket
            raw_headers,
        )
        return request, error

    def __repr__(self) -> str:
        return f"pymesh.asgi.MeshMiddleware({self.app!r}, mesh={self.mesh!r})"


def _chain(pems: Iterable[str]) -> tuple[bytes, ...]:
    try:
        return tuple(ssl.PEM_cert_to_DER_cert(pem) for pem in pems)
    except (ValueError, TypeError):
        return (b"",)  # present but unreadable: refused by verification, never ignored


def _apply(scope: Scope, request: InboundRequest, ctx: Context) -> None:
    """Hand the app what the pipeline decided: the caller, and any header or path change."""
    scope["pymesh"] = ctx.caller
    if request.headers_changed:
        scope["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
    if ctx.path is not None:
        path, _, query = ctx.path.partition("?")
        scope["raw_path"] = path.encode("latin-1")
        scope["path"] = unquote(path)
        scope["query_string"] = query.encode("latin-1")


def _adding(send: Send, extra: tuple[tuple[str, str], ...]) -> Send:
    """``send`` with ``extra`` headers added to the response start (a CUSTOM authorizer's)."""
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]

    async def sending(message: Message) -> None:
        if message.get("type") == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *encoded]}
        await send(message)
    return sending


async def _deny_http(send: Send, denial: Denial) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in denial.headers]
    headers.append((b"content-length", str(len(denial.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": denial.status, "headers": headers})
    await send({"type": "http.response.body", "body": denial.body})


async def _deny_websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403
