"""``pymesh.wsgi.MeshMiddleware``: the inbound pipeline in front of a WSGI app.

    flask_app.wsgi_app = pymesh.wsgi.MeshMiddleware(flask_app.wsgi_app, mesh=mesh)

The peer chain is read where the server exposes it, and verified here against this
workload's roots: the TLS socket in ``environ["gunicorn.socket"]`` or
``environ["werkzeug.socket"]`` (the whole chain the client sent), else
``environ["SSL_CLIENT_CERT"]`` (Werkzeug, Apache mod_ssl; with mod_ssl's
``SSL_CLIENT_CERT_CHAIN_n``). The destination port is the socket's own port when the
server exposes the socket (gunicorn's ``SERVER_PORT`` comes from the ``Host`` header).

A refused request is answered with the step's status and body. PEP 3333 forbids an app
to send hop-by-hop headers, so unlike the ASGI middleware no ``connection: close`` is sent.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from pymesh.inbound.core import Context, Inbound
from pymesh.inbound.request import Denial, InboundRequest
from pymesh.mesh import Mesh
from pymesh.security.ca import MeshCA
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.rotation import CertificateSource
from pymesh.security.verify import peer_chain

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MeshMiddleware"]

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailers", "transfer-encoding", "upgrade"})
_CGI_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


class MeshMiddleware:
    """Enforce the mesh's inbound policy and put the verified ``pymesh.Caller`` in ``environ["pymesh"]``."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        mesh: Mesh,
        trusted_proxies: Iterable[str] = (),
        certificate: WorkloadCertificate | CertificateSource | None = None,
        ca: MeshCA | None = None,
        port: int | None = None,
    ) -> None:
        self.app = app
        self.mesh = mesh
        self.port = port  # the port the server listens on, for servers that do not expose their socket
        self.inbound = Inbound(mesh, certificate=certificate, ca=ca, trusted_proxies=trusted_proxies)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request, peer_error = self._request(environ)
        result = self.inbound.handle(request, peer_error)
        if isinstance(result, Denial):
            return _deny(start_response, result)
        _apply(environ, request, result)
        extra = result.response_headers
        if extra:
            def start_with(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                return start_response(status, [*headers, *extra], exc_info)
            return self.app(environ, start_with)
        return self.app(environ, start_response)

    def _request(self, environ: WSGIEnvironment) -> tuple[InboundRequest, str | None]:
        headers: list[tuple[str, str]] = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].replace("_", "-").lower(), value))
            elif key in _CGI_HEADERS and value:
                headers.append((_CGI_HEADERS[key], value))
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if not raw:
            path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=@:+!$&'()*,~")
            query = environ.get("QUERY_STRING", "")
            raw = f"{path}?{query}" if query else path
        sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        destination: tuple[Any, ...] = ()
        if sock is not None:
            try:
                destination = sock.getsockname()
            except (OSError, AttributeError):
                destination = ()
        dest_ip = str(destination[0]) if destination else environ.get("SERVER_NAME", "")
        # The socket's port, else the one given to the middleware; SERVER_PORT may come from the
        # client's Host header (mod_wsgi, uWSGI), so it never picks a port-level mTLS mode.
        if destination:
            dest_port, port_known = int(destination[1]), True
        elif self.port is not None:
            dest_port, port_known = self.port, True
        else:
            dest_port, port_known = int(environ.get("SERVER_PORT") or 0), False
        peer, error = self.inbound.verify(_chain(environ, sock))
        request = InboundRequest(
            method=environ.get("REQUEST_METHOD", "GET"),
            raw_path=raw,
            host=environ.get("HTTP_HOST", ""),
            headers=tuple(headers),
            scheme=environ.get("wsgi.url_scheme", "http"),
            source_ip=environ.get("REMOTE_ADDR", ""),
            source_port=int(environ.get("REMOTE_PORT") or 0),
            destination_ip=dest_ip,
            destination_port=dest_port,
            peer=peer,
            port_known=port_known,
        )
        return request, error

    def __repr__(self) -> str:
        return f"pymesh.wsgi.MeshMiddleware({self.app!r}, mesh={self.mesh!r})"


def _chain(environ: WSGIEnvironment, sock: Any) -> tuple[bytes, ...]:
    """The client's chain (leaf first, DER), from the TLS socket or the server's PEM variables."""
    if isinstance(sock, ssl.SSLSocket):
        try:
            return peer_chain(sock)
        except (ValueError, OSError):
            return ()
    leaf = environ.get("SSL_CLIENT_CERT")
    if not leaf:
        return ()
    pems = [leaf]
    index = 0
    while (more := environ.get(f"SSL_CLIENT_CERT_CHAIN_{index}")) is not None:
        pems.append(more)
        index += 1
    try:
        return tuple(ssl.PEM_cert_to_DER_cert(p) for p in pems if p)
    except ValueError:
        return (b"",)  # present but unreadable: refused by verification, never ignored


def _apply(environ: WSGIEnvironment, request: InboundRequest, ctx: Context) -> None:
    environ["pymesh"] = ctx.caller
    if request.headers_changed:
        wanted: dict[str, list[str]] = {}
        for name, value in request.headers:
            wanted.setdefault(name, []).append(value)
        for key in [k for k in environ if k.startswith("HTTP_") or k in _CGI_HEADERS]:
            name = _CGI_HEADERS.get(key) or key[5:].replace("_", "-").lower()
            if name not in wanted:
                del environ[key]
        for name, values in wanted.items():
            key = next((k for k, v in _CGI_HEADERS.items() if v == name), None) or "HTTP_" + name.upper().replace(
                "-", "_")
            environ[key] = ", ".join(values)
    if ctx.path is not None:
        path, _, query = ctx.path.partition("?")
        environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
        environ["SCRIPT_NAME"] = ""
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = environ["REQUEST_URI"] = ctx.path


def _deny(start_response: StartResponse, denial: Denial) -> list[bytes]:
    try:
        phrase = HTTPStatus(denial.status).phrase
    except ValueError:
        phrase = ""
    headers = [(k, v) for k, v in denial.headers if k.lower() not in _HOP_BY_HOP]
    headers.append(("Content-Length", str(len(denial.body))))
    start_response(f"{denial.status} {phrase}".rstrip(), headers)
    return [denial.body]
