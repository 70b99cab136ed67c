"""A connection that originates TLS and checks who answered before it sends anything.

httpcore's ``HTTPConnection`` dials and handshakes inside ``handle_request`` and writes the
request at once; ISTIO_MUTUAL must judge the server's SPIFFE identity between the handshake
and the first byte of the request (Python's ``ssl`` has no verification callback to do it
during the handshake). So this dials with httpcore's network backend, starts TLS, runs the
origination's check, and only then hands the verified stream to httpcore's HTTP/1.1
connection. To the endpoint pool it looks like any other connection.
"""

from __future__ import annotations

from typing import Any

import httpcore

from pymesh.outbound.deadline import DeadlineBackend
from pymesh.outbound.origination import Origination

__all__ = ["AsyncTLSConnection", "TLSConnection"]

_SYNC = DeadlineBackend()  # the mesh's timeouts bound the handshake and the head, as on plaintext
_ASYNC = httpcore.AnyIOBackend()


def _connect_timeout(request: httpcore.Request) -> float | None:
    timeouts = request.extensions.get("timeout") or {}
    value = timeouts.get("connect")
    return float(value) if value is not None else None


def _refused(exc: Exception) -> httpcore.ConnectError:
    # A wrong server is a failed connection attempt (503 UF after retries), as in Envoy.
    return httpcore.ConnectError(f"TLS error: {exc}")


class TLSConnection:
    __slots__ = ("_conn", "_failed", "_keepalive", "_origin", "_tls")

    def __init__(self, origin: httpcore.Origin, tls: Origination, *, keepalive_expiry: float | None) -> None:
        self._origin = origin
        self._tls = tls
        self._keepalive = keepalive_expiry
        self._conn: httpcore.HTTP11Connection | None = None
        self._failed = False

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._conn is None:
            self._conn = self._dial(request)
        return self._conn.handle_request(request)

    def _dial(self, request: httpcore.Request) -> httpcore.HTTP11Connection:
        timeout = _connect_timeout(request)
        origin = self._origin
        try:
            context = self._tls.context()  # first: without an identity, not even a TCP connection is opened
            stream = _SYNC.connect_tcp(origin.host.decode("ascii"), origin.port, timeout=timeout)
            try:
                stream = stream.start_tls(context, server_hostname=self._tls.sni, timeout=timeout)
                self._tls.check(stream.get_extra_info("ssl_object"))
            except BaseException:
                stream.close()
                raise
        except OSError as exc:  # a wrong server (ServerRefusedError), no identity, unreadable files
            self._failed = True
            raise _refused(exc) from exc
        except BaseException:
            self._failed = True
            raise
        return httpcore.HTTP11Connection(origin, stream, keepalive_expiry=self._keepalive)

    def is_idle(self) -> bool:
        return self._conn is not None and self._conn.is_idle()

    def has_expired(self) -> bool:
        return self._conn.has_expired() if self._conn is not None else self._failed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class AsyncTLSConnection:
    __slots__ = ("_conn", "_failed", "_keepalive", "_origin", "_tls")

    def __init__(self, origin: httpcore.Origin, tls: Origination, *, keepalive_expiry: float | None) -> None:
        self._origin = origin
        self._tls = tls
        self._keepalive = keepalive_expiry
        self._conn: httpcore.AsyncHTTP11Connection | None = None
        self._failed = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._conn is None:
            self._conn = await self._dial(request)
        return await self._conn.handle_async_request(request)

    async def _dial(self, request: httpcore.Request) -> httpcore.AsyncHTTP11Connection:
        timeout = _connect_timeout(request)
        origin = self._origin
        try:
            context = self._tls.context()
            stream: Any = await _ASYNC.connect_tcp(origin.host.decode("ascii"), origin.port, timeout=timeout)
            try:
                stream = await stream.start_tls(context, server_hostname=self._tls.sni, timeout=timeout)
                self._tls.check(stream.get_extra_info("ssl_object"))
            except BaseException:
                await stream.aclose()
                raise
        except OSError as exc:
            self._failed = True
            raise _refused(exc) from exc
        except BaseException:
            self._failed = True
            raise
        return httpcore.AsyncHTTP11Connection(origin, stream, keepalive_expiry=self._keepalive)

    def is_idle(self) -> bool:
        return self._conn is not None and self._conn.is_idle()

    def has_expired(self) -> bool:
        return self._conn.has_expired() if self._conn is not None else self._failed

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
