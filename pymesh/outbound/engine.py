"""Per-endpoint connection pools: ``pool.py``'s bookkeeping over httpcore's single connections.

httpx's ``HTTPTransport`` would do the sending, but it needs an ``httpx.URL`` per request,
and building one (parse or ``copy_with``) is the single largest cost of an in-process hop
(about 19 µs of 34 µs measured; ``reference/perf-anchors.md``). httpcore's connections take
the scheme, host, port and target as bytes, which pymesh has precomputed per endpoint;
``pool.py`` says why the pooling is pymesh's own. The exception mapping below mirrors
httpx's so callers see the httpx exceptions they expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from pymesh.outbound import deadline as _deadline
from pymesh.outbound.aio import AsyncH11Connection
from pymesh.outbound.origination import Origination
from pymesh.outbound.pool import CLOSED, OPEN, ConnectionGate, PoolState, ThreadWaiter, Waiter
from pymesh.outbound.tls_connection import AsyncTLSConnection, TLSConnection

__all__ = ["AsyncEndpointPool", "EndpointAddress", "EndpointPool", "in_background"]

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


class _Conn:
    """One upstream connection (httpcore's, which speaks HTTP/1.1 over one socket) and its use count."""

    __slots__ = ("core", "uses")

    def __init__(self, core: Any) -> None:
        self.core = core
        self.uses = 0

    def expired(self) -> bool:
        # Past its idle timeout, or readable while idle (the server closed it): httpcore's own test,
        # safe here because the connection is ours alone while we look.
        return bool(self.core.has_expired())


def _reusable(conn: _Conn, max_uses: int | None) -> bool:
    conn.uses += 1
    return bool(conn.core.is_idle()) and (max_uses is None or conn.uses < max_uses)


def _pool_timeout(extensions: dict[str, Any]) -> float | None:
    timeout = extensions.get("timeout")
    return timeout.get("pool") if timeout else None


def _overflowed(request: httpx.Request) -> httpx.PoolTimeout:
    return httpx.PoolTimeout("timed out waiting for a connection to the endpoint", request=request)


def _closed(request: httpx.Request) -> httpx.TransportError:
    return httpx.TransportError("the transport was closed while the request waited for a connection",
                                request=request)


class _SyncStream(httpx.SyncByteStream):
    """The response body; closing it gives the connection back to its pool."""

    __slots__ = ("_done", "_stream")

    def __init__(self, stream: Any, done: Callable[[], None]) -> None:
        self._stream = stream
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except Exception as exc:
            raise _mapped(exc, None) from exc

    def close(self) -> None:
        try:
            close = getattr(self._stream, "close", None)  # a plain iterable body has none
            if close is not None:
                close()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()


class _AsyncStream(httpx.AsyncByteStream):
    __slots__ = ("_done", "_stream")

    def __init__(self, stream: Any, done: Callable[[], Any]) -> None:
        self._stream = stream
        self._done: Callable[[], Any] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            raise _mapped(exc, None) from exc

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            done, self._done = self._done, None
            if done is not None:
                await done()


class EndpointPool:
    """Connections to one endpoint (sync)."""

    __slots__ = ("_max_uses", "_origin", "_state", "address", "dial")

    def __init__(
        self, address: EndpointAddress, *, ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = 5.0, gate: ConnectionGate | None = None,
        max_requests_per_connection: int | None = None, tls: Origination | None = None,
    ) -> None:
        self.address = address
        self._origin = httpcore.Origin(address.scheme, address.host, address.port)
        self._max_uses = max_requests_per_connection
        self._state: PoolState[_Conn] = PoolState(gate)
        #: Makes a new, not yet connected connection (it dials on its first request). Swappable:
        #: the benchmarks put an in-memory connection here to time the mesh without sockets.
        self.dial: Callable[[], Any] = (
            functools.partial(TLSConnection, self._origin, tls, keepalive_expiry=keepalive_expiry) if tls else
            functools.partial(httpcore.HTTPConnection, self._origin, ssl_context=ssl_context,
                              keepalive_expiry=keepalive_expiry, network_backend=_DEADLINE_BACKEND))

    def stats(self) -> tuple[int, int, int]:
        """(connections, idle, waiting requests)."""
        return self._state.stats()

    def _lease(self, request: httpx.Request, extensions: dict[str, Any]) -> _Conn:
        state = self._state
        lease, stale = state.checkout(ThreadWaiter)
        _close_all(stale)
        if isinstance(lease, ThreadWaiter):
            if not lease.wait(_pool_timeout(extensions)):
                _close_all(state.abandon(lease))
                raise _overflowed(request)
            lease = lease.granted  # type: ignore[assignment]
        if lease is CLOSED:
            raise _closed(request)
        return _Conn(self.dial()) if lease is OPEN else lease  # type: ignore[return-value]

    def send(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], stream: Any,
        extensions: dict[str, Any], request: httpx.Request, released: Callable[[], None] | None = None,
    ) -> httpx.Response:
        """Send on a pooled connection; ``released`` runs after the connection is given back, when
        the response body is closed (the caller's per-try resources: limits ticket, balancer count)."""
        a = self.address
        req = httpcore.Request(method, httpcore.URL(scheme=a.scheme, host=a.host, port=a.port, target=target),
                               headers=headers, content=stream, extensions=extensions)
        conn = self._lease(request, extensions)
        deadline = extensions.get(_deadline.DEADLINE_KEY)
        token = _deadline.active.set(deadline) if deadline is not None else None
        try:
            resp = conn.core.handle_request(req)
        except BaseException as exc:
            _close_all(self._state.checkin(conn, reusable=False))
            if isinstance(exc, Exception):
                raise _mapped(exc, request) from exc
            raise
        finally:
            if token is not None:
                _deadline.active.reset(token)  # the body is read later, at the caller's pace
        return httpx.Response(resp.status, headers=resp.headers, stream=_SyncStream(resp.stream, functools.partial(
            self._done, conn, released)), extensions=resp.extensions, request=request)

    def _done(self, conn: _Conn, released: Callable[[], None] | None) -> None:
        try:
            _close_all(self._state.checkin(conn, reusable=_reusable(conn, self._max_uses)))
        finally:
            if released is not None:
                released()

    def close(self) -> None:
        _close_all(self._state.close())


_DEADLINE_BACKEND = _deadline.DeadlineBackend()


def _close_all(conns: list[_Conn]) -> None:
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.core.close()


class _AsyncWaiter(Waiter):
    __slots__ = ("_future",)

    def __init__(self) -> None:
        super().__init__()
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _signal(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    async def wait(self, limit: float | None) -> None:
        async with asyncio.timeout(limit):
            await self._future


#: Which connections the async pools dial. ``PYMESH_ASYNC_ENGINE=httpcore`` selects httpcore's
#: (``AsyncHTTPConnection`` / ``AsyncTLSConnection``, I/O through anyio); the default, ``asyncio``,
#: is ``aio.AsyncH11Connection`` (h11 over an asyncio protocol), which costs less CPU per request.
#: Read once, at import.
_ASYNC_ENGINE = os.environ.get("PYMESH_ASYNC_ENGINE", "asyncio").strip().lower() or "asyncio"
if _ASYNC_ENGINE not in ("asyncio", "httpcore"):
    raise ValueError(f"PYMESH_ASYNC_ENGINE must be 'asyncio' or 'httpcore', not {_ASYNC_ENGINE!r}")


class AsyncEndpointPool:
    """Connections to one endpoint (asyncio; ``aio.py``'s connections, or httpcore's: ``_ASYNC_ENGINE``)."""

    __slots__ = ("_max_uses", "_origin", "_state", "address", "dial")

    def __init__(
        self, address: EndpointAddress, *, ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = 5.0, gate: ConnectionGate | None = None,
        max_requests_per_connection: int | None = None, tls: Origination | None = None,
    ) -> None:
        self.address = address
        self._origin = httpcore.Origin(address.scheme, address.host, address.port)
        self._max_uses = max_requests_per_connection
        self._state: PoolState[_Conn] = PoolState(gate)
        self.dial: Callable[[], Any]
        if _ASYNC_ENGINE == "httpcore":
            self.dial = (
                functools.partial(AsyncTLSConnection, self._origin, tls, keepalive_expiry=keepalive_expiry) if tls
                else functools.partial(httpcore.AsyncHTTPConnection, self._origin, ssl_context=ssl_context,
                                       keepalive_expiry=keepalive_expiry))
        elif tls:  # the context is asked for at each dial: a rotated identity takes effect on new connections
            self.dial = functools.partial(AsyncH11Connection, self._origin, ssl_context=tls.context,
                                          server_hostname=tls.sni, check=tls.check, keepalive_expiry=keepalive_expiry)
        else:
            self.dial = functools.partial(AsyncH11Connection, self._origin, ssl_context=ssl_context,
                                          keepalive_expiry=keepalive_expiry)

    def stats(self) -> tuple[int, int, int]:
        return self._state.stats()

    async def _lease(self, request: httpx.Request, extensions: dict[str, Any]) -> _Conn:
        state = self._state
        lease, stale = state.checkout(_AsyncWaiter)
        _close_later(stale)  # not awaited here: a cancellation at that await would lose the lease
        if isinstance(lease, _AsyncWaiter):
            try:
                await lease.wait(_pool_timeout(extensions))
            except BaseException as exc:  # a timeout or a cancellation: hand back what came meanwhile
                _close_later(state.abandon(lease))
                if isinstance(exc, TimeoutError):
                    raise _overflowed(request) from None
                raise
            lease = lease.granted  # type: ignore[assignment]
        if lease is CLOSED:
            raise _closed(request)
        return _Conn(self.dial()) if lease is OPEN else lease  # type: ignore[return-value]

    async def send(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], stream: Any,
        extensions: dict[str, Any], request: httpx.Request, released: Callable[[], None] | None = None,
    ) -> httpx.Response:
        a = self.address
        req = httpcore.Request(method, httpcore.URL(scheme=a.scheme, host=a.host, port=a.port, target=target),
                               headers=headers, content=stream, extensions=extensions)
        conn = await self._lease(request, extensions)
        try:
            resp = await conn.core.handle_async_request(req)
        except BaseException as exc:  # cancellation included: httpcore has closed the connection
            await _aclose_all(self._state.checkin(conn, reusable=False))
            if isinstance(exc, Exception):
                raise _mapped(exc, request) from exc
            raise
        return httpx.Response(resp.status, headers=resp.headers, stream=_AsyncStream(resp.stream, functools.partial(
            self._done, conn, released)), extensions=resp.extensions, request=request)

    async def _done(self, conn: _Conn, released: Callable[[], None] | None) -> None:
        try:
            await _aclose_all(self._state.checkin(conn, reusable=_reusable(conn, self._max_uses)))
        finally:
            if released is not None:
                released()

    async def aclose(self) -> None:
        await _aclose_all(self._state.close())


_BACKGROUND: set[asyncio.Task[None]] = set()  # strong references: a pending task is otherwise collectable


def in_background(closing: Coroutine[Any, Any, None]) -> None:
    """Run ``closing`` in a task of its own, so the caller's cancellation cannot interrupt the
    bookkeeping around it (the pool already forgot what is being closed)."""
    task = asyncio.get_running_loop().create_task(closing)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _close_later(conns: list[_Conn]) -> None:
    if conns:
        in_background(_aclose_all(conns))


async def _aclose_all(conns: list[_Conn]) -> None:
    for conn in conns:
        with contextlib.suppress(Exception):
            await conn.core.aclose()
