"""Helpers for the inbound tests: policy documents, echo apps, stock servers on threads.

- ``peer_auth(mode, ...)``: one PeerAuthentication document.
- ``who`` (ASGI endpoint) / ``wsgi_who`` (WSGI app): answer with what the middleware handed
  the app: the caller, the TLS extension, the headers.
- ``UvicornThread(app)`` / ``WerkzeugThread(app, ssl_context=None)``: stock servers (not
  ``pymesh.serve``) on threads, as context managers with ``url``.
- ``refused(call)``: did the call fail at the connection (reset, TLS refusal)?
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response as WerkzeugResponse

import pymesh
from pymesh import asgi
from pymesh.inbound.request import Caller
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.tls import client_context

TIMEOUT = 5.0
WORKLOAD = pymesh.Workload(name="web", namespace="shop", labels={"app": "web"}, service_account="web")


def peer_auth(mode: str, *, name: str = "default", namespace: str = "shop", selector: str = "",
              ports: str = "", created: str = "") -> str:
    """A PeerAuthentication document; ``selector`` like ``app: web``, ``ports`` like ``"8080: {mode: STRICT}"``."""
    lines = ["apiVersion: security.istio.io/v1beta1", "kind: PeerAuthentication", "metadata:",
             f"  name: {name}", f"  namespace: {namespace}"]
    if created:
        lines.append(f"  creationTimestamp: '{created}'")
    lines.append("spec:")
    if selector:
        lines += ["  selector:", "    matchLabels:", f"      {selector}"]
    if mode:
        lines += ["  mtls:", f"    mode: {mode}"]
    if ports:
        lines += ["  portLevelMtls:", f"    {ports}"]
    return "\n".join(lines) + "\n---\n"


def caller_json(caller: Caller | None) -> dict[str, Any] | None:
    if caller is None:
        return None
    return {"principal": caller.peer_principal, "spiffe_id": caller.spiffe_id, "namespace": caller.peer_namespace}


async def who(request: Request) -> JSONResponse:
    tls = (request.scope.get("extensions") or {}).get("tls")
    return JSONResponse({
        "caller": caller_json(request.scope.get("pymesh")),
        "tls": None if tls is None else {k: tls[k] for k in ("tls_version", "cipher_suite", "client_cert_name")}
        | {"chain": len(tls["client_cert_chain"])},
        "headers": {k: v for k, v in request.headers.items()},
    })


@WerkzeugRequest.application
def wsgi_who(request: WerkzeugRequest) -> WerkzeugResponse:
    """A Flask-like WSGI app (Werkzeug's request and response objects) echoing what it was handed."""
    body = json.dumps({
        "caller": caller_json(request.environ.get("pymesh")),
        "headers": {k.lower(): v for k, v in request.headers.items()},
    })
    return WerkzeugResponse(body, content_type="application/json")


class UvicornThread:
    """A stock uvicorn server (no pymesh.serve) on a thread, plaintext."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       daemon=True)

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class WerkzeugThread:
    """Werkzeug's server on a thread; TLS when given a context."""

    def __init__(self, app: Any, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True, ssl_context=ssl_context)
        self.port = self.server.server_port
        self.scheme = "https" if ssl_context is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> WerkzeugThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, cert: WorkloadCertificate | None = None, roots: bytes | None = None,
        headers: dict[str, str] | None = None) -> httpx.Response:
    """One request on a fresh connection, closed before returning (so no idle TLS connection outlives it)."""
    verify: ssl.SSLContext | bool = False if roots is None else client_context(cert, roots_pem=roots)
    with httpx.Client(verify=verify, timeout=TIMEOUT) as c:
        return c.get(url, headers=headers)


def refused(call: Callable[[], object]) -> bool:
    """True when the call failed at the connection (reset, closed during TLS, handshake error)."""
    try:
        call()
    except (httpx.TransportError, ssl.SSLError, ConnectionError):
        return True
    return False


def asgi_call(mw: asgi.MeshMiddleware, raw_path: bytes = b"/ok", headers: list[tuple[bytes, bytes]] | None = None,
              *, method: str = "GET", query: bytes = b"", client: str = "10.0.0.9",
              port: int = 8080) -> tuple[int, dict[str, Any]]:
    """One request through ``mw`` around an app that answers 200: (status, the scope the app saw,
    with the response headers under ``response_headers``)."""
    seen: dict[str, Any] = {}
    statuses: list[int] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
            seen["response_headers"] = message["headers"]

    mw.app = app
    scope = {"type": "http", "method": method, "path": raw_path.decode(), "raw_path": raw_path,
             "query_string": query, "scheme": "http",
             "headers": headers if headers is not None else [(b"host", b"web")],
             "client": (client, 5555), "server": ("10.0.0.1", port)}
    asyncio.run(mw(scope, receive, send))
    return statuses[0], seen
