"""Per-endpoint connection pools, over httpcore directly.

httpx's ``HTTPTransport`` would do, but it needs an ``httpx.URL`` per request, and
building one (parse or ``copy_with``) is the single largest cost of an in-process hop
(about 19 µs of 34 µs measured; ``reference/perf-anchors.md``). httpcore takes the
scheme, host, port and target as bytes, which pymesh has precomputed per endpoint. The
exception mapping below mirrors httpx's so callers see the httpx exceptions they
expect.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncEndpointPool", "EndpointAddress", "EndpointPool", "map_errors"]

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


@contextlib.contextmanager
def map_errors(request: httpx.Request | None = None) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError:
        raise
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc), request=request) from exc  # type: ignore[call-arg]
        raise


@dataclass(frozen=True, slots=True)
class EndpointAddress:
    """Where to dial: precomputed bytes for httpcore."""

    scheme: bytes  # b"http" or b"https"
    host: bytes
    port: int

    @classmethod
    def of(cls, scheme: str, host: str, port: int) -> EndpointAddress:
        return cls(scheme.encode("ascii"), host.encode("idna"), port)

    def __str__(self) -> str:
        return f"{self.scheme.decode()}://{self.host.decode()}:{self.port}"


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with map_errors():
            yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_errors():
            async for chunk in self._stream:
                yield chunk

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
        with map_errors(request):
            resp = self._pool.handle_request(req)
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
        with map_errors(request):
            resp = await self._pool.handle_async_request(req)
        return httpx.Response(resp.status, headers=resp.headers, stream=_AsyncStream(resp.stream),
                              extensions=resp.extensions, request=request)

    async def aclose(self) -> None:
        await self._pool.aclose()
