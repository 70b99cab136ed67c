"""Per-endpoint connection pools, over httpcore directly.

httpx's ``HTTPTransport`` would do, but it needs an ``httpx.URL`` per request, and
building one (parse or ``copy_with``) is the single largest cost of an in-process hop
(about 19 µs of 34 µs measured; ``reference/perf-anchors.md``). httpcore takes the
scheme, host, port and target as bytes, which pymesh has precomputed per endpoint. The
exception mapping below mirrors httpx's so callers see the httpx exceptions they
expect.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncEndpointPool", "EndpointAddress", "EndpointPool"]

# Most specific first: the first isinstance hit wins.
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def _mapped(exc: Exception, request: httpx.Request | None) -> Exception:
    """The httpx exception for an httpcore one (others unchanged)."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(str(exc), request=request)  # type: ignore[call-arg]
    return exc


@dataclass(frozen=True, slots=True)
class EndpointAddress:
    """Where to dial: precomputed bytes for httpcore."""

    scheme: bytes  # b"http" or b"https"
    host: bytes
    port: int

    @classmethod
    def of(cls, scheme: str, host: str, port: int) -> EndpointAddress:
        return _address(scheme, host, port)

    def __str__(self) -> str:
        return f"{self.scheme.decode()}://{self.host.decode()}:{self.port}"


@functools.lru_cache(maxsize=4096)
def _address(scheme: str, host: str, port: int) -> EndpointAddress:
    # Endpoints repeat request after request; IDNA-encoding a host costs ~2 µs each time.
    return EndpointAddress(scheme.encode("ascii"), host.encode("idna"), port)


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except Exception as exc:
            raise _mapped(exc, None) from exc

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            raise _mapped(exc, None) from exc

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


def _pool_kwargs(ssl_context: ssl.SSLContext | None, max_connections: int | None, keepalive: float) -> dict[str, Any]:
    return {
        "ssl_context": ssl_context,
        "max_connections": max_connections,
        "max_keepalive_connections": max_connections,
        "keepalive_expiry": keepalive,
    }


class EndpointPool:
    """Connections to one endpoint (sync)."""

    __slots__ = ("_pool", "address")

    def __init__(
        self, address: EndpointAddress, *, ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None, keepalive_expiry: float = 5.0,
    ) -> None:
        self.address = address
        self._pool = httpcore.ConnectionPool(**_pool_kwargs(ssl_context, max_connections, keepalive_expiry))

    def send(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], stream: Any,
        extensions: dict[str, Any], request: httpx.Request,
    ) -> httpx.Response:
        a = self.address
        req = httpcore.Request(method, httpcore.URL(scheme=a.scheme, host=a.host, port=a.port, target=target),
                               headers=headers, content=stream, extensions=extensions)
        try:
            resp = self._pool.handle_request(req)
        except Exception as exc:
            raise _mapped(exc, request) from exc
        return httpx.Response(resp.status, headers=resp.headers, stream=_SyncStream(resp.stream),
                              extensions=resp.extensions, request=request)

    def close(self) -> None:
        self._pool.close()


class AsyncEndpointPool:
    """Connections to one endpoint (asyncio, through httpcore's anyio backend)."""

    __slots__ = ("_pool", "address")

    def __init__(
        self, address: EndpointAddress, *, ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None, keepalive_expiry: float = 5.0,
    ) -> None:
        self.address = address
        self._pool = httpcore.AsyncConnectionPool(**_pool_kwargs(ssl_context, max_connections, keepalive_expiry))

    async def send(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], stream: Any,
        extensions: dict[str, Any], request: httpx.Request,
    ) -> httpx.Response:
        a = self.address
        req = httpcore.Request(method, httpcore.URL(scheme=a.scheme, host=a.host, port=a.port, target=target),
                               headers=headers, content=stream, extensions=extensions)
        try:
            resp = await self._pool.handle_async_request(req)
        except Exception as exc:
            raise _mapped(exc, request) from exc
        return httpx.Response(resp.status, headers=resp.headers, stream=_AsyncStream(resp.stream),
                              extensions=resp.extensions, request=request)

    async def aclose(self) -> None:
        await self._pool.aclose()
