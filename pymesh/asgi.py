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

from pymesh.inbound.core import Compiled, Context, Inbound, Suspended, Verdict
from pymesh.inbound.headers import IDENTITY_HEADERS
from pymesh.inbound.request import Denial, InboundRequest
from pymesh.mesh import Mesh
from pymesh.security.ca import MeshCA
from pymesh.security.identity import PeerIdentity, WorkloadCertificate
from pymesh.security.rotation import CertificateSource

__all__ = ["MeshMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_IDENTITY = frozenset(n.encode("latin-1") for n in IDENTITY_HEADERS)
# Requests with a longer target, Host and keyed headers (each header counted with its tuple and name),
# or with more keyed headers than this, are not remembered: the memo stays a few MB at most.
_MEMO_KEY_BYTES = 4096
_MEMO_KEY_HEADERS = 16


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
        inbound = self.inbound
        compiled = inbound.compiled()
        raw_headers = scope.get("headers") or ()
        if not isinstance(raw_headers, (list, tuple)):  # ASGI allows any iterable: read it once, keep it
            raw_headers = list(raw_headers)
            scope = {**scope, "headers": raw_headers}
        keyed = compiled.keyed_headers
        hosts: list[bytes] = []
        carried: list[tuple[bytes, bytes]] = []  # the other headers memoized steps read
        marked = False  # an identity header arrived: the full pipeline strips it
        for name, value in raw_headers:  # one pass, for the Host, the identity headers and those
            name = name.lower()
            if name == b"host":
                hosts.append(value)
            elif name in _IDENTITY:
                marked = True
            elif name in keyed:
                carried.append((name, value))
        # A second Host header is joined on, as WSGI servers do, so the pipeline refuses the request.
        host = hosts[0] if len(hosts) == 1 else b",".join(hosts)
        peer, peer_error, sni = None, None, None
        tls = (scope.get("extensions") or {}).get("tls")
        if tls is not None:
            peer, peer_error = inbound.verify(_chain(tls.get("client_cert_chain") or ()))
            sni = tls.get("sni")
        key: Any = None
        verdicts = compiled.verdicts
        if (verdicts is not None and verdicts.active() and not marked and peer_error is None
                and not inbound.proxied):
            key = _memo_key(scope, compiled, host, carried, peer, sni)
            try:
                verdict = verdicts.get(key) if key is not None else None
            except TypeError:  # a value ASGI does not allow (a bytearray): no memo for this request
                verdict = key = None
            if verdict is not None and (verdict.recheck is None or verdict.recheck()):
                if verdict.denial is not None:
                    await _deny(kind, receive, send, verdict.denial)
                    return
                scope = dict(scope)
                scope["pymesh"] = verdict.caller
                if verdict.edits_headers:
                    scope["headers"] = _edited(raw_headers, verdict)
                if verdict.path is not None:
                    _set_path(scope, verdict.path)
                await self.app(scope, receive, send)
                return
        request = self._request(scope, host, peer, sni)
        result = inbound.start(request, peer_error, compiled, key)  # synchronous unless a step needs I/O
        while isinstance(result, Suspended):
            result = result.resume(await result.pending.arun())
        if isinstance(result, Denial):
            await _deny(kind, receive, send, result)
            return
        scope = dict(scope)
        _apply(scope, request, result)
        if result.response_headers and kind == "http":
            send = _adding(send, result.response_headers)
        await self.app(scope, receive, send)

    def _request(self, scope: Scope, host: bytes, peer: PeerIdentity | None, sni: str | None) -> InboundRequest:
        raw = scope.get("raw_path") or quote(scope.get("path", "/")).encode("ascii")
        query = scope.get("query_string") or b""
        raw_path = (raw + b"?" + query if query else raw).decode("latin-1")
        client = scope.get("client") or ("", 0)
        server = scope.get("server") or ("", 0)
        return InboundRequest(  # positional: keyword arguments cost three times as much here
            scope.get("method", "GET"),
            raw_path,
            host.decode("latin-1"),
            None,  # headers: decoded from raw_headers only if a step reads them
            scope.get("scheme", "http"),
            str(client[0] or ""),  # source
            int(client[1] or 0),
            str(server[0] or ""),  # destination
            int(server[1] or 0),
            peer,
            sni,
            True,  # port_known: the server's own socket
            scope.get("headers") or (),
        )

    def __repr__(self) -> str:
        return f"pymesh.asgi.MeshMiddleware({self.app!r}, mesh={self.mesh!r})"


def _chain(pems: Iterable[str]) -> tuple[bytes, ...]:
    try:
        return tuple(ssl.PEM_cert_to_DER_cert(pem) for pem in pems)
    except (ValueError, TypeError):
        return (b"",)  # present but unreadable: refused by verification, never ignored


def _memo_key(scope: Scope, compiled: Compiled, host: bytes, carried: list[tuple[bytes, bytes]],
              peer: PeerIdentity | None, sni: str | None) -> tuple[Any, ...] | None:
    """What memoizable steps read (``core.memoizable``), as the server gave it; None: too big to keep."""
    raw = scope.get("raw_path")
    query = scope.get("query_string") or b""
    method = scope.get("method", "GET")
    if not raw or len(carried) > _MEMO_KEY_HEADERS or (
            len(raw) + len(query) + len(host) + len(method) + sum(len(v) + 64 for _, v in carried) > _MEMO_KEY_BYTES):
        return None
    server = scope.get("server") or ("", 0)
    key: tuple[Any, ...] = (method, scope.get("scheme"), raw, query, host, server[1],
                            None if peer is None else peer.spiffe_id.uri, sni, tuple(carried))
    if compiled.reads.addresses:
        key += (str((scope.get("client") or ("",))[0] or ""), str(server[0] or ""))
    return key


def _apply(scope: Scope, request: InboundRequest, ctx: Context) -> None:
    """Hand the app what the pipeline decided: the caller, and any header or path change."""
    scope["pymesh"] = ctx.caller
    if request.headers_changed:
        scope["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
    if ctx.path is not None:
        _set_path(scope, ctx.path)


def _set_path(scope: Scope, target: str) -> None:
    """The normalized target (with ``?query``) as the app reads it."""
    path, _, query = target.partition("?")
    scope["raw_path"] = path.encode("latin-1")
    scope["path"] = unquote(path)
    scope["query_string"] = query.encode("latin-1")


def _edited(raw_headers: Iterable[tuple[bytes, bytes]], verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """The headers the full pipeline hands the app after ``verdict``'s change (names lower case, as
    its latin-1 decoding gives them)."""
    drop = verdict.drop
    out: list[tuple[bytes, bytes]] = []
    for name, value in raw_headers:
        name = name.lower() if name.isascii() else name.decode("latin-1").lower().encode("latin-1")
        if name not in drop:
            out.append((name, value))
    out += verdict.add
    return out


def _adding(send: Send, extra: tuple[tuple[str, str], ...]) -> Send:
    """``send`` with ``extra`` headers added to the response start (a CUSTOM authorizer's)."""
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]

    async def sending(message: Message) -> None:
        if message.get("type") == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *encoded]}
        await send(message)
    return sending


async def _deny(kind: str, receive: Receive, send: Send, denial: Denial) -> None:
    await (_deny_http(send, denial) if kind == "http" else _deny_websocket(receive, send))


async def _deny_http(send: Send, denial: Denial) -> None:
    headers = list(denial.encoded_headers)  # a list of its own: a server may add to it
    await send({"type": "http.response.start", "status": denial.status, "headers": headers})
    await send({"type": "http.response.body", "body": denial.body})


async def _deny_websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403
