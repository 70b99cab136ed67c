"""The connection layer of ``pymesh.serve``: mTLS per PeerAuthentication, through uvicorn's extension points.

uvicorn is given a listening socket (``Server.serve(sockets=...)``) and a protocol class
(``Config(http=...)``). That class, :class:`MeshProtocol`, decides each connection before
uvicorn's own HTTP/1.1 protocol sees a byte:

- the mode is the PeerAuthentication mode of the port the connection arrived on, read from
  the live snapshot, so a reload applies to the next connection;
- DISABLE: plaintext HTTP, no TLS;
- STRICT and PERMISSIVE: the first byte is peeked (never consumed) within a timeout. ``0x16``
  opens a TLS handshake (``loop.start_tls``) with client certificates required (STRICT) or
  optional (PERMISSIVE); anything else is plaintext, served under PERMISSIVE and reset
  under STRICT, as a sidecar's listener does (unless it comes from a trusted proxy's
  address: the middleware then requires the identity the proxy forwards);
- after the handshake the client's certificate is checked by SPIFFE's rules
  (``verify_peer``); a refused certificate resets the connection before a request is read;
- the HTTP protocol (:class:`MeshH11Protocol`, uvicorn's h11 protocol) fills the ASGI TLS
  extension, ``scope["extensions"]["tls"]``, with the client's chain, which uvicorn does not.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from pymesh.inbound.core import Inbound
from pymesh.inbound.peer import Mode
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.verify import peer_chain

__all__ = ["ConnectionPolicy", "MeshH11Protocol", "MeshProtocol", "client_chain", "protocol_class", "tls_extension"]

log = logging.getLogger("pymesh.inbound")

TLS_HANDSHAKE_RECORD = 0x16
FIRST_BYTE_TIMEOUT = 10.0  # a client that opens a connection and sends nothing is dropped (slowloris)
HANDSHAKE_TIMEOUT = 10.0
# After sending its close_notify, asyncio waits for the client's; an idle pooled client never
# answers, so shutting down would wait 30 s per connection without a bound.
TLS_SHUTDOWN_TIMEOUT = 1.0

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_CIPHERS = {c["name"]: c["id"] & 0xFFFF for c in ssl.create_default_context().get_ciphers()}

ASGIApp = Callable[..., Any]


class ConnectionPolicy:
    """What one ``pymesh.serve`` needs per connection: the mode of a port and the TLS contexts."""

    __slots__ = ("first_byte_timeout", "inbound")

    def __init__(self, inbound: Inbound, *, first_byte_timeout: float = FIRST_BYTE_TIMEOUT) -> None:
        self.inbound = inbound
        self.first_byte_timeout = first_byte_timeout

    def mode(self, port: int) -> Mode:
        return self.inbound.compiled().peer.mode_for(port)

    def context(self, *, strict: bool) -> tuple[ssl.SSLContext, WorkloadCertificate] | None:
        """The server context (client certificate required or optional) and the certificate it
        presents now; None when the workload has none. The context is stable for the server's life:
        :class:`~pymesh.security.rotation.CertificateSource` switches each handshake to the
        current certificate."""
        identity = self.inbound.identity
        cert = identity.current()
        if cert is None or identity.source is None:
            return None
        return identity.source.server_context(require_client_cert=strict), cert


class _Holder(asyncio.Protocol):
    """Stands in for the HTTP protocol while ``start_tls`` finishes, keeping any early bytes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class MeshH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the ASGI TLS extension for the connection's client chain."""

    server_cert: str | None = None  # this workload's leaf, PEM, for the extension's ``server_cert``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = _with_tls(self.app, tls_extension(ssl_object, self.server_cert))


def _with_tls(app: ASGIApp, tls: dict[str, Any]) -> ASGIApp:
    async def with_tls(scope: Any, receive: Any, send: Any) -> None:
        scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
        await app(scope, receive, send)

    return with_tls


def client_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The chain the client sent (leaf first, DER); empty when it sent no certificate.

    On the server side CPython's ``get_unverified_chain`` yields ``[None]`` for a client
    without a certificate, so the leaf is checked first.
    """
    if not ssl_object.getpeercert(binary_form=True):
        return ()
    return peer_chain(ssl_object)


def tls_extension(ssl_object: ssl.SSLObject, server_cert: str | None = None) -> dict[str, Any]:
    """The ASGI TLS extension (asgiref ``specs/tls.rst``) for one TLS connection."""
    chain = client_chain(ssl_object)
    name = None
    if chain:
        from cryptography import x509

        name = x509.load_der_x509_certificate(chain[0]).subject.rfc4514_string()
    cipher = ssl_object.cipher()
    return {
        "server_cert": server_cert,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der) for der in chain],
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _CIPHERS.get(cipher[0]) if cipher else None,
        "sni": getattr(ssl_object, "pymesh_sni", None),  # pymesh's addition: the SNI the client sent
    }


class MeshProtocol(asyncio.Protocol):
    """Decides plaintext or TLS for one connection, then hands it to :class:`MeshH11Protocol`.

    uvicorn builds it like any HTTP protocol; :func:`protocol_class` binds the policy.
    """

    policy: ClassVar[ConnectionPolicy]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.connections = server_state.connections
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        port = int(sock.getsockname()[1]) if sock is not None else 0
        mode = self.policy.mode(port)
        if mode == "DISABLE":
            self._hand_over(transport)
            return
        chosen = self.policy.context(strict=mode == "STRICT")
        if chosen is None:
            if mode == "STRICT":
                log.warning("pymesh: STRICT on port %d but this workload has no certificate; connection reset", port)
                transport.abort()
            else:
                self._hand_over(transport)
            return
        transport.pause_reading()  # nothing is read before the first byte has been peeked
        self.connections.add(self)  # type: ignore[arg-type]  # uvicorn calls shutdown() on each
        self.task = self.loop.create_task(self._sniff(transport, sock, mode, *chosen))

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def shutdown(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _hand_over(self, transport: asyncio.Transport, early: bytes = b"", server_cert: str | None = None) -> None:
        protocol = MeshH11Protocol(
            config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
        )
        protocol.server_cert = server_cert
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if early:
            protocol.data_received(early)

    async def _sniff(
        self, transport: asyncio.Transport, sock: Any, mode: Mode, ctx: ssl.SSLContext, cert: WorkloadCertificate
    ) -> None:
        try:
            await self._decide(transport, sock, mode, ctx, cert)
        except Exception:  # a connection that cannot be decided is dropped, never left hanging
            log.exception("pymesh: deciding a connection failed")
            self.connections.discard(self)
            transport.abort()

    async def _decide(
        self, transport: asyncio.Transport, sock: Any, mode: Mode, ctx: ssl.SSLContext, cert: WorkloadCertificate
    ) -> None:
        try:
            first = await asyncio.wait_for(self._peek(sock), self.policy.first_byte_timeout)
        except (TimeoutError, OSError):
            first = None
        if first is None:
            self.connections.discard(self)
            transport.abort()
            return
        if first != TLS_HANDSHAKE_RECORD:
            self.connections.discard(self)
            if mode == "STRICT" and not self._from_trusted_proxy(transport):
                log.info("pymesh: plaintext connection refused on a STRICT port")
                transport.abort()  # as a sidecar's STRICT listener: reset, never served
                return
            self._hand_over(transport)
            transport.resume_reading()
            return
        holder = _Holder()
        try:
            tls = await self.loop.start_tls(
                transport, holder, ctx, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("pymesh: TLS handshake refused: %s", exc)
            self.connections.discard(self)
            transport.abort()
            return
        self.connections.discard(self)
        if tls is None or holder.lost:
            return
        ssl_object = tls.get_extra_info("ssl_object")
        _, error = self.policy.inbound.verify(client_chain(ssl_object))
        if error is not None:
            tls.abort()  # the certificate verified as X.509 but is no acceptable SPIFFE identity
            transport.abort()
            return
        # The certificate this handshake presented: the source's current one (it may have rotated since).
        self._hand_over(tls, bytes(holder.buffer), _leaf_pem(self.policy.inbound.identity.current() or cert))

    def _from_trusted_proxy(self, transport: asyncio.Transport) -> bool:
        """A trusted proxy (by address) that terminated mTLS itself may send plaintext; the middleware
        then requires the identity it forwards (XFCC) and refuses the request without one."""
        proxies = self.policy.inbound.proxies
        peer = transport.get_extra_info("peername")
        return bool(proxies) and isinstance(peer, tuple) and proxies.trusts(str(peer[0]), None)

    async def _peek(self, sock: Any) -> int | None:
        """The first byte the client sent, without consuming it; None at end of stream."""
        dup: socket.socket = sock.dup()
        try:
            ready = self.loop.create_future()

            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            self.loop.add_reader(dup.fileno(), readable)
            try:
                await ready
            finally:
                self.loop.remove_reader(dup.fileno())
            data = dup.recv(1, socket.MSG_PEEK)
            return data[0] if data else None
        finally:
            dup.close()


def _leaf_pem(cert: WorkloadCertificate) -> str:
    text = cert.cert_chain_pem.decode("ascii")
    end = "-----END CERTIFICATE-----"
    return text[: text.index(end) + len(end)] + "\n"


def protocol_class(policy: ConnectionPolicy) -> type[MeshProtocol]:
    """A :class:`MeshProtocol` bound to one server's policy, for ``uvicorn.Config(http=...)``."""
    return type("MeshProtocol", (MeshProtocol,), {"policy": policy, "__module__": __name__})
