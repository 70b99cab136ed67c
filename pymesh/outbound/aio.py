"""One HTTP/1.1 connection over asyncio: h11 speaks the protocol, an ``asyncio.Protocol`` moves the bytes.

httpcore's async connections reach the socket through anyio's streams and take anyio locks
on every request. Here the event loop calls ``_Wire.data_received`` directly, the bytes wait
in a list until the one request on the connection asks for them, and a wait is a bare future
with a timer only when the data is not there yet. Measured over loopback, one task: a pymesh
async GET costs ~340 µs of client CPU instead of ~490 µs; the connection alone ~125 µs instead
of ~240 µs, of which h11 is now most. The raw exchange (no parsing) costs the same over an
``asyncio.Protocol`` as over ``asyncio.open_connection``'s streams, but a read timeout as a
bare timer on a future is ~8 µs cheaper than ``asyncio.timeout`` around a stream read.

The connection looks to ``engine.py``'s pool exactly like httpcore's (``handle_async_request``,
``is_idle``, ``has_expired``, ``is_closed``, ``aclose``) and raises httpcore's exceptions, so the
pool's exception mapping turns them into httpx's. It dials on its first request; with an SSL
context it handshakes, and ``check`` (ISTIO_MUTUAL's secure naming) judges the server before a
byte of the request is written. A request that fails or is cancelled at any point closes the
connection: it is never reused half done.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import Callable
from typing import Any

import h11
import httpcore

from pymesh.outbound.deadline import DEADLINE_KEY, bounded

__all__ = ["AsyncH11Connection"]

_READ_HIGH_WATER = 256 * 1024  # unread bytes held before the socket's reading is paused
_WRITE_BATCH = 64 * 1024  # request bytes gathered into one write (small requests: one syscall)
_MAX_INFORMATIONAL = 32  # 1xx responses skipped before the next real one; more is a misbehaving server

ContextSource = ssl.SSLContext | Callable[[], ssl.SSLContext]


def _timed_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Wire(asyncio.Protocol):
    """The socket's side: holds what arrived and wakes the one task waiting for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.eof = False  # no more bytes will come: the peer finished, or the connection is gone
        self.error: Exception | None = None  # why the connection was lost, if not cleanly
        self.write_paused = False
        self._reading_paused = False
        self._waiter: asyncio.Future[bool] | None = None

    # -- called by the event loop --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > _READ_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.write_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    # -- called by the connection --------------------------------------------------------------

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.size = 0
        if self._reading_paused and self.transport is not None and not self.eof:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, limit: float | None) -> bool:
        """Until something happens (data, EOF, loss, room to write); False if ``limit`` seconds passed first."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(limit, _timed_out, waiter) if limit is not None else None
        try:
            return bool(await waiter)
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


class _Body:
    """The response body, chunk by chunk; closing it ends the exchange (``AsyncH11Connection._finish``)."""

    __slots__ = ("_conn", "_timeout")

    def __init__(self, conn: AsyncH11Connection, timeout: float | None) -> None:
        self._conn: AsyncH11Connection | None = conn  # None once the body ended or was closed
        self._timeout = timeout

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        chunk = await conn._next_chunk(self._timeout) if conn is not None else None
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:  # once: the connection may be serving another request after
            conn._finish()


def _timeouts(request: httpcore.Request) -> dict[str, float | None]:
    value: dict[str, float | None] = request.extensions.get("timeout") or {}
    return value


class AsyncH11Connection:
    """One HTTP/1.1 connection to ``origin`` (TLS when ``ssl_context`` is given, or the scheme is https).

    ``ssl_context`` may be a function returning the context, called at each dial (a rotated
    identity gives a new one); an ``OSError`` from it or from ``check(ssl_object)`` fails the
    dial as ``httpcore.ConnectError("TLS error: ...")``.
    """

    __slots__ = ("_busy", "_check", "_closed", "_context", "_expires_at", "_fed_eof", "_h11", "_keepalive",
                 "_origin", "_poll", "_sni", "_transport", "_wire")

    def __init__(
        self, origin: httpcore.Origin, *, ssl_context: ContextSource | None = None, server_hostname: str | None = None,
        check: Callable[[Any], None] | None = None, keepalive_expiry: float | None = None,
    ) -> None:
        self._origin = origin
        self._context = ssl_context
        self._sni = server_hostname
        self._check = check
        self._keepalive = keepalive_expiry
        self._h11 = h11.Connection(h11.CLIENT)
        self._wire: _Wire | None = None
        self._transport: asyncio.Transport | None = None
        self._poll: Any = None  # select.poll over the plaintext socket, for has_expired
        self._busy = False  # a request owns the connection, from handle_async_request to its body's close
        self._closed = False
        self._fed_eof = False
        self._expires_at: float | None = None

    def __repr__(self) -> str:
        o = self._origin
        state = "closed" if self._closed else "busy" if self._busy else "idle" if self._wire else "new"
        return f"<AsyncH11Connection {o.scheme.decode()}://{o.host.decode()}:{o.port} {state}>"

    # -- what the pool asks ------------------------------------------------------------------------

    def is_idle(self) -> bool:
        return self._wire is not None and not self._busy and not self._closed

    def is_closed(self) -> bool:
        return self._closed

    def has_expired(self) -> bool:
        """Closed, idle past the keep-alive expiry, or readable while idle (the server closed it)."""
        if self._closed:
            return True
        wire = self._wire
        if wire is None or self._busy:
            return False
        if wire.eof or wire.chunks:
            return True
        if self._expires_at is not None and time.monotonic() > self._expires_at:
            return True
        # The event loop may not have seen a FIN that the kernel already has: ask the socket.
        return self._poll is not None and bool(self._poll.poll(0))

    async def aclose(self) -> None:
        self._abort()

    # -- one exchange --------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._closed or self._busy:
            raise httpcore.ConnectionNotAvailable()
        self._busy = True
        timeouts = _timeouts(request)
        deadline: float | None = request.extensions.get(DEADLINE_KEY)  # the mesh's timeout, for the whole head
        try:
            if self._wire is None:
                await self._connect(request, bounded(timeouts.get("connect"), deadline))
            await self._send(request, bounded(timeouts.get("write"), deadline))
            head = await self._receive_head(timeouts.get("read"), deadline)
        except BaseException:  # cancellation included: a half-done exchange never stays open
            self._abort()
            raise
        return httpcore.Response(
            head.status_code, headers=head.headers.raw_items(), content=_Body(self, timeouts.get("read")),
            extensions={"http_version": b"HTTP/" + head.http_version, "reason_phrase": head.reason})

    async def _connect(self, request: httpcore.Request, limit: float | None) -> None:
        origin = self._origin
        host = origin.host.decode("ascii")
        context = self._context
        if context is None and origin.scheme == b"https":
            import httpx  # the default context, as httpx's own transport would make it

            context = self._context = httpx.create_ssl_context()
        sni: str | None = None
        if context is not None:
            try:
                if not isinstance(context, ssl.SSLContext):
                    context = context()  # TLS origination: the current identity
            except OSError as exc:
                raise httpcore.ConnectError(f"TLS error: {exc}") from exc
            sni = self._sni or request.extensions.get("sni_hostname") or host
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                transport, wire = await loop.create_connection(
                    _Wire, host, origin.port, ssl=context, server_hostname=sni,
                    # our own timeout (above) should fire first, as a ConnectTimeout
                    ssl_handshake_timeout=None if context is None or limit is None else limit + 1.0)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{origin.port} timed out") from exc
        except ssl.SSLError as exc:
            raise httpcore.ConnectError(f"TLS error: {exc}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        self._transport = transport
        self._wire = wire
        if context is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self._poll = select.poll()
                self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        if self._check is not None:
            try:
                self._check(transport.get_extra_info("ssl_object"))
            except OSError as exc:  # a wrong server (ServerRefusedError): a failed connection, as in Envoy
                raise httpcore.ConnectError(f"TLS error: {exc}") from exc

    async def _send(self, request: httpcore.Request, limit: float | None) -> None:
        h = self._h11
        wire = self._wire
        transport = self._transport
        assert wire is not None
        assert transport is not None
        try:
            pending = [h.send(h11.Request(method=request.method, target=request.url.target,
                                          headers=request.headers))]
            size = 0
            stream: Any = request.stream
            async for chunk in stream:
                if not chunk:
                    continue
                pieces = h.send_with_data_passthrough(h11.Data(data=chunk))
                if pieces:
                    pending += pieces
                    size += len(chunk)
                if size >= _WRITE_BATCH:
                    if not await self._write(pending, limit):
                        return  # the server answered already and closed: read what it said
                    pending, size = [], 0
            pending.append(h.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            raise httpcore.LocalProtocolError(str(exc)) from exc
        await self._write(pending, limit)

    async def _write(self, pieces: list[Any], limit: float | None) -> bool:
        """Writes ``pieces``; False if the connection is gone but an answer has arrived."""
        wire = self._wire
        transport = self._transport
        assert wire is not None
        assert transport is not None
        if wire.eof:
            if wire.chunks:
                return False
            raise httpcore.WriteError(str(wire.error) if wire.error else "the server closed the connection")
        transport.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        while wire.write_paused:
            if not await wire.wait(limit):
                raise httpcore.WriteTimeout("timed out writing the request")
            if wire.eof:
                if wire.chunks:
                    return False
                raise httpcore.WriteError(str(wire.error) if wire.error else "the server closed the connection")
        return True

    async def _receive_head(self, limit: float | None, deadline: float | None = None) -> h11.Response:
        h = self._h11
        informational = 0
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpcore.RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                await self._fill(bounded(limit, deadline))
            elif type(event) is h11.Response:
                return event
            elif type(event) is not h11.InformationalResponse:  # 1xx are skipped; 101 (PAUSED) unsupported
                raise httpcore.RemoteProtocolError(f"unexpected {event!r} while reading the response")
            else:
                informational += 1
                if informational > _MAX_INFORMATIONAL:  # a server could otherwise keep a try alive forever
                    raise httpcore.RemoteProtocolError(f"more than {_MAX_INFORMATIONAL} 1xx responses")

    async def _fill(self, limit: float | None) -> None:
        """Feeds h11 what has arrived, waiting for it if nothing has."""
        wire = self._wire
        assert wire is not None
        h = self._h11
        while not wire.chunks:
            if wire.eof:
                if wire.error is not None:
                    raise httpcore.ReadError(str(wire.error) or type(wire.error).__name__)
                if h.their_state is h11.SEND_RESPONSE:
                    raise httpcore.RemoteProtocolError("Server disconnected without sending a response.")
                if self._fed_eof:  # h11 asked again after EOF: its next_event raises or ends the body
                    raise httpcore.RemoteProtocolError("Server disconnected mid-response.")
                self._fed_eof = True
                h.receive_data(b"")
                return
            if not await wire.wait(limit):
                raise httpcore.ReadTimeout("timed out reading the response")
        h.receive_data(wire.take())

    async def _next_chunk(self, limit: float | None) -> bytes | None:
        if self._closed:
            raise httpcore.ReadError("the connection was closed")
        h = self._h11
        if h.their_state is h11.DONE:  # asked again after the end
            return None
        try:
            while True:
                try:
                    event = h.next_event()
                except h11.RemoteProtocolError as exc:
                    raise httpcore.RemoteProtocolError(str(exc)) from exc
                if event is h11.NEED_DATA:
                    await self._fill(limit)
                elif type(event) is h11.Data:
                    return bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    return None
                else:
                    raise httpcore.RemoteProtocolError(f"unexpected {event!r} in the response body")
        except BaseException:
            self._abort()
            raise

    def _finish(self) -> None:
        """The response is closed: back to idle if the exchange completed and both sides keep the connection."""
        if self._closed:
            return
        h = self._h11
        wire = self._wire
        if (h.our_state is h11.DONE and h.their_state is h11.DONE and wire is not None
                and not wire.eof and not wire.chunks):
            h.start_next_cycle()
            if not h.trailing_data[0]:  # nothing unasked-for arrived after the response
                self._busy = False
                self._expires_at = time.monotonic() + self._keepalive if self._keepalive is not None else None
                return
        self._abort()

    def _abort(self) -> None:
        self._closed = True
        self._busy = False
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()  # no lingering shutdown; TLS without close_notify, as httpcore's streams do
