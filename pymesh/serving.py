"""``pymesh.serve``: run an ASGI app on uvicorn with the workload's mTLS identity.

    pymesh.serve(app, mesh=mesh, port=8443)

blocks like ``uvicorn.run``. The app is wrapped in ``pymesh.asgi.MeshMiddleware`` unless it
already is one (or is a Starlette app that added it). TLS uses the workload's certificate
(``certificate=``, else read from ``Workload.cert_dir``, else issued by ``ca=``); client
certificates are required under STRICT and optional under PERMISSIVE, where one port
serves plaintext and mTLS clients alike; DISABLE serves plaintext. See
:mod:`pymesh.inbound.server` for how a connection is decided.

:class:`Server` runs the same server on a thread, for tests and demos::

    from pymesh.serving import Server

    with Server(app, mesh=mesh, ca=ca) as server:     # port 0: any free port
        httpx.get(f"http://127.0.0.1:{server.port}/")

(``pymesh.serve`` the attribute is the function; import the other names from this module.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pymesh.errors import MeshError

if TYPE_CHECKING:
    import uvicorn

    from pymesh.inbound.server import ConnectionPolicy
    from pymesh.mesh import Mesh
    from pymesh.security.ca import MeshCA
    from pymesh.security.identity import WorkloadCertificate
    from pymesh.security.rotation import CertificateSource

__all__ = ["Server", "serve", "serve_async"]

log = logging.getLogger("pymesh.inbound")

# uvicorn settings pymesh decides itself: TLS comes from the mesh, the protocol is pymesh's.
_OWNED = frozenset({"ssl_keyfile", "ssl_certfile", "ssl_keyfile_password", "ssl_version", "ssl_cert_reqs",
                    "ssl_ca_certs", "ssl_ciphers", "ssl_context_factory", "http", "fd", "uds", "http2",
                    "proxy_headers", "forwarded_allow_ips"})


def serve(
    app: Any,
    *,
    mesh: Mesh,
    host: str = "127.0.0.1",
    port: int = 8443,
    certificate: WorkloadCertificate | CertificateSource | None = None,
    ca: MeshCA | None = None,
    trusted_proxies: Iterable[str] = (),
    **uvicorn_kwargs: Any,
) -> None:
    """Serve ``app`` until interrupted (SIGINT/SIGTERM), like ``uvicorn.run``."""
    server, sock, _ = _build(app, mesh, host, port, certificate, ca, trusted_proxies, uvicorn_kwargs)
    _announce(sock, server)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


async def serve_async(
    app: Any,
    *,
    mesh: Mesh,
    host: str = "127.0.0.1",
    port: int = 8443,
    certificate: WorkloadCertificate | CertificateSource | None = None,
    ca: MeshCA | None = None,
    trusted_proxies: Iterable[str] = (),
    **uvicorn_kwargs: Any,
) -> None:
    """The same, on the running event loop; returns when the server has shut down."""
    server, sock, _ = _build(app, mesh, host, port, certificate, ca, trusted_proxies, uvicorn_kwargs)
    _announce(sock, server)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


class Server:
    """A ``pymesh.serve`` server on a background thread; a context manager exposing ``port`` and ``url``."""

    def __init__(
        self,
        app: Any,
        *,
        mesh: Mesh,
        host: str = "127.0.0.1",
        port: int = 0,
        certificate: WorkloadCertificate | CertificateSource | None = None,
        ca: MeshCA | None = None,
        trusted_proxies: Iterable[str] = (),
        **uvicorn_kwargs: Any,
    ) -> None:
        uvicorn_kwargs.setdefault("log_level", "warning")
        uvicorn_kwargs.setdefault("lifespan", "auto")
        self._server, self._sock, self.policy = _build(
            app, mesh, host, port, certificate, ca, trusted_proxies, uvicorn_kwargs
        )
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"pymesh-serve-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``https://host:port``; use ``http://`` for a plaintext client of a PERMISSIVE or DISABLE port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Server:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise MeshError(f"pymesh.serve did not start within {timeout}s") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start(); a thread has nobody else to tell
            self._error = exc

    def __repr__(self) -> str:
        return f"<pymesh.serve.Server {self.url}>"


def _build(
    app: Any, mesh: Mesh, host: str, port: int, certificate: WorkloadCertificate | CertificateSource | None,
    ca: MeshCA | None, trusted_proxies: Iterable[str], kwargs: dict[str, Any],
) -> tuple[uvicorn.Server, socket.socket, ConnectionPolicy]:
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the environment
        raise MeshError("pymesh.serve needs uvicorn: pip install 'pymesh-istio[serve]'") from None
    from pymesh.asgi import MeshMiddleware
    from pymesh.inbound.core import Inbound
    from pymesh.inbound.server import ConnectionPolicy, protocol_class

    owned = sorted(_OWNED.intersection(kwargs))
    if owned:
        raise TypeError(f"pymesh.serve sets {', '.join(owned)} itself (TLS comes from the mesh's workload identity)")
    proxies = tuple(trusted_proxies)
    if isinstance(app, MeshMiddleware):
        inbound = app.inbound
    else:
        if not _has_mesh_middleware(app):
            app = MeshMiddleware(app, mesh=mesh, certificate=certificate, ca=ca, trusted_proxies=proxies)
            inbound = app.inbound
        else:
            inbound = Inbound(mesh, certificate=certificate, ca=ca, trusted_proxies=proxies)
    policy = ConnectionPolicy(inbound)
    # uvicorn's proxy-headers middleware would rewrite scope["client"] from X-Forwarded-For before
    # the mesh sees it; the mesh decides whom to believe (trusted_proxies), so it is off.
    config = uvicorn.Config(app, host=host, port=port, http=protocol_class(policy), proxy_headers=False, **kwargs)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=config.backlog)
    return uvicorn.Server(config), sock, policy


def _has_mesh_middleware(app: Any) -> bool:
    """A Starlette/FastAPI app that called ``add_middleware(pymesh.asgi.MeshMiddleware, ...)``."""
    from pymesh.asgi import MeshMiddleware

    return any(getattr(m, "cls", None) is MeshMiddleware for m in getattr(app, "user_middleware", ()) or ())


def _announce(sock: socket.socket, server: uvicorn.Server) -> None:
    host, port = sock.getsockname()[:2]
    log.info("pymesh: serving on %s:%d (mTLS per PeerAuthentication)", host, port)
