"""``AsyncH11Connection`` (``pymesh/outbound/aio.py``) against real loopback servers.

``Upstream`` for ordinary exchanges (and TLS with ``MeshCA`` certificates); a tiny raw asyncio
server, on the test's own event loop, for what a well-behaved server never does: closing after
the headers, chunked and slow bodies, ``Connection: close``, 1xx, silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpcore
import pytest

from pymesh.outbound import engine
from pymesh.outbound.aio import AsyncH11Connection
from pymesh.outbound.engine import AsyncEndpointPool, EndpointAddress
from pymesh.outbound.origination import Origination
from pymesh.security import MeshCA, client_context, server_context, verify_server
from pymesh.testing.upstream import Upstream

TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def request(port: int, method: bytes = b"GET", target: bytes = b"/", *, content: Any = b"",
            headers: list[tuple[bytes, bytes]] | None = None, timeout: dict[str, float] | None = None,
            scheme: bytes = b"http") -> httpcore.Request:
    return httpcore.Request(method, httpcore.URL(scheme=scheme, host=b"127.0.0.1", port=port, target=target),
                            headers=[(b"Host", b"svc"), *(headers or [])], content=content,
                            extensions={"timeout": timeout or TIMEOUTS})


def connection(port: int, **kw: Any) -> AsyncH11Connection:
    return AsyncH11Connection(httpcore.Origin(b"http", b"127.0.0.1", port), keepalive_expiry=kw.pop("expiry", 5.0),
                              **kw)


async def read_all(response: httpcore.Response) -> bytes:
    stream: Any = response.stream
    try:
        return b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()


async def exchange(conn: AsyncH11Connection, req: httpcore.Request) -> tuple[httpcore.Response, bytes]:
    response = await conn.handle_async_request(req)
    return response, await read_all(response)


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    """A loopback server running ``handler`` per connection, on the running loop; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def answer(*replies: bytes, then_close: bool = False) -> Handler:
    """A handler answering successive requests (head only, no body) with ``replies``."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_head(reader)
            writer.write(reply)
            await writer.drain()
        if not then_close:
            await reader.read()  # until the client closes
    return handler


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream("svc-v1").start()
    yield up
    up.stop()


# -- ordinary exchanges ----------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(upstream: Upstream) -> None:
    async def main() -> None:
        conn = connection(upstream.port)
        assert not conn.is_idle()  # not dialled yet
        assert not conn.has_expired()
        assert not conn.is_closed()
        for i in range(3):
            response, body = await exchange(conn, request(upstream.port, target=f"/n{i}".encode()))
            assert response.status == 200
            assert json.loads(body)["path"] == f"/n{i}"
            assert response.headers[0][0] == b"Server"  # original case kept
            assert response.extensions["http_version"] == b"HTTP/1.1"
            assert response.extensions["reason_phrase"] == b"OK"
            assert conn.is_idle()
            assert not conn.has_expired()
        await conn.aclose()
        assert conn.is_closed()
        assert conn.has_expired()
        assert not conn.is_idle()

    asyncio.run(main())
    assert upstream.accepted() == 1


def test_request_bodies_with_content_length_and_chunked(upstream: Upstream) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"def"

    seen: list[bytes] = []

    async def echo_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        seen.append(head + await reader.readuntil(b"0\r\n\r\n"))
        writer.write(OK)
        await reader.read()

    async def main() -> None:
        conn = connection(upstream.port)
        _, body = await exchange(conn, request(upstream.port, b"POST", content=b"hello",
                                               headers=[(b"Content-Length", b"5")]))
        assert json.loads(body)["body"] == "hello"
        _, body = await exchange(conn, request(upstream.port, b"PUT", content=chunks(),
                                               headers=[(b"Content-Length", b"6")]))
        assert json.loads(body)["body"] == "abcdef"
        await conn.aclose()
        async with raw_server(echo_raw) as port:
            conn = connection(port)
            _, body = await exchange(conn, request(port, b"POST", content=chunks(),
                                                   headers=[(b"Transfer-Encoding", b"chunked")]))
            assert body == b"ok"
            await conn.aclose()

    asyncio.run(main())
    assert seen[0].endswith(b"\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")


def test_a_large_body_both_ways(upstream: Upstream) -> None:
    blob = bytes(range(256)) * 8192  # 2 MiB: several write batches, reading paused and resumed

    async def main() -> None:
        conn = connection(upstream.port)
        _, body = await exchange(conn, request(upstream.port, b"POST", content=blob,
                                               headers=[(b"Content-Length", str(len(blob)).encode())]))
        assert json.loads(body)["body"] == blob.decode("utf-8", "replace")
        assert conn.is_idle()
        await conn.aclose()

    asyncio.run(main())


def test_chunked_response_in_pieces_then_reuse() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"lo\r\n6\r\n world\r\n0\r\n\r\n")
        await read_head(reader)
        writer.write(OK)
        await reader.read()

    async def main() -> None:
        async with raw_server(handler) as port:
            conn = connection(port)
            _, body = await exchange(conn, request(port))
            assert body == b"hello world"
            assert conn.is_idle()
            _, body = await exchange(conn, request(port))
            assert body == b"ok"
            await conn.aclose()

    asyncio.run(main())


def test_informational_responses_are_skipped() -> None:
    async def main() -> None:
        async with raw_server(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as port:
            conn = connection(port)
            response, body = await exchange(conn, request(port))
            assert (response.status, body) == (200, b"ok")
            assert conn.is_idle()
            await conn.aclose()

    asyncio.run(main())


# -- the server ends the connection ------------------------------------------------------------------


def test_connection_close_in_the_response_closes_it() -> None:
    async def main() -> None:
        async with raw_server(answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")) as port:
            conn = connection(port)
            _, body = await exchange(conn, request(port))
            assert body == b"ok"
            assert conn.is_closed()
            assert not conn.is_idle()
            assert conn.has_expired()

    asyncio.run(main())


def test_has_expired_once_the_server_closes_an_idle_connection() -> None:
    async def main() -> None:
        async with raw_server(answer(OK, then_close=True)) as port:
            conn = connection(port)
            _, body = await exchange(conn, request(port))
            assert body == b"ok"
            for _ in range(200):
                if conn.has_expired():
                    break
                await asyncio.sleep(0.01)
            assert conn.has_expired()
            await conn.aclose()

    asyncio.run(main())


def test_has_expired_sees_a_close_the_event_loop_has_not_run_for(upstream: Upstream) -> None:
    async def main() -> None:
        conn = connection(upstream.port)
        await exchange(conn, request(upstream.port))
        assert not conn.has_expired()
        upstream.stop()  # from this thread: the FIN reaches the kernel while the loop is not running
        time.sleep(0.1)  # noqa: ASYNC251 - on purpose: the loop must not run meanwhile
        assert conn.has_expired()  # the socket is readable (EOF) though no callback has run yet
        await conn.aclose()

    asyncio.run(main())


def test_has_expired_after_the_keepalive_expiry(upstream: Upstream) -> None:
    async def main() -> None:
        conn = connection(upstream.port, expiry=0.05)
        await exchange(conn, request(upstream.port))
        assert not conn.has_expired()
        await asyncio.sleep(0.1)
        assert conn.has_expired()
        await conn.aclose()

    asyncio.run(main())


def test_a_server_that_closes_after_the_headers() -> None:
    async def main() -> None:
        async with raw_server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", then_close=True)) as port:
            conn = connection(port)
            response = await conn.handle_async_request(request(port))
            with pytest.raises(httpcore.RemoteProtocolError):
                await read_all(response)
            assert conn.is_closed()

    asyncio.run(main())


def test_a_server_that_closes_without_answering() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)

    async def main() -> None:
        async with raw_server(handler) as port:
            conn = connection(port)
            with pytest.raises(httpcore.RemoteProtocolError, match="without sending a response"):
                await conn.handle_async_request(request(port))
            assert conn.is_closed()

    asyncio.run(main())


def test_a_malformed_response_is_a_remote_protocol_error() -> None:
    async def main() -> None:
        async with raw_server(answer(b"NOT HTTP AT ALL\r\n\r\n")) as port:
            conn = connection(port)
            with pytest.raises(httpcore.RemoteProtocolError):
                await conn.handle_async_request(request(port))
            assert conn.is_closed()

    asyncio.run(main())


def test_a_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        async with raw_server(answer()) as port:
            pass  # closed: nothing listens on the port any more
        conn = connection(port)
        with pytest.raises(httpcore.ConnectError):
            await conn.handle_async_request(request(port))
        assert conn.is_closed()
        assert conn.has_expired()

    asyncio.run(main())


# -- timeouts and cancellation -------------------------------------------------------------------


def test_read_timeout_waiting_for_the_head_and_in_a_slow_body() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        await reader.read()

    quick = {**TIMEOUTS, "read": 0.1}

    async def main() -> None:
        async with raw_server(silent) as port:
            conn = connection(port)
            with pytest.raises(httpcore.ReadTimeout):
                await conn.handle_async_request(request(port, timeout=quick))
            assert conn.is_closed()
        async with raw_server(slow_body) as port:
            conn = connection(port)
            response = await conn.handle_async_request(request(port, timeout=quick))
            with pytest.raises(httpcore.ReadTimeout):
                await read_all(response)
            assert conn.is_closed()

    asyncio.run(main())


def test_connect_timeout_during_a_stalled_tls_handshake() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts TCP, never answers the ClientHello

    async def main() -> None:
        async with raw_server(silent) as port:
            conn = connection(port, ssl_context=ssl.create_default_context())
            with pytest.raises(httpcore.ConnectTimeout):
                await conn.handle_async_request(request(port, timeout={**TIMEOUTS, "connect": 0.1}))
            assert conn.is_closed()

    asyncio.run(main())


def test_write_timeout_when_the_server_reads_nothing() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def endless() -> AsyncIterator[bytes]:
        block = b"x" * (1 << 20)
        for _ in range(256):
            yield block

    async def main() -> None:
        async with raw_server(deaf) as port:
            conn = connection(port)
            with pytest.raises(httpcore.WriteTimeout):
                await conn.handle_async_request(request(port, b"POST", content=endless(),
                                                        headers=[(b"Content-Length", str(256 << 20).encode())],
                                                        timeout={**TIMEOUTS, "write": 0.2}))
            assert conn.is_closed()

    asyncio.run(main())


def _closed_by_client() -> tuple[Handler, asyncio.Event, asyncio.Event]:
    """A handler sending half a body and then waiting; the events: head sent, client gone."""
    sent, gone = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        sent.set()
        await reader.read()  # EOF once the client's side is closed
        gone.set()

    return handler, sent, gone


def test_cancellation_mid_body_closes_the_connection() -> None:
    async def main() -> None:
        handler, sent, gone = _closed_by_client()
        async with raw_server(handler) as port:
            conn = connection(port)
            response = await conn.handle_async_request(request(port))
            task = asyncio.create_task(read_all(response))
            await sent.wait()
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert conn.is_closed()
            assert not conn.is_idle()
            await asyncio.wait_for(gone.wait(), 2)  # the socket was closed, not left open

    asyncio.run(main())


def test_cancellation_before_the_head_closes_the_connection() -> None:
    async def main() -> None:
        gone = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            gone.set()

        async with raw_server(silent) as port:
            conn = connection(port)
            task = asyncio.create_task(conn.handle_async_request(request(port)))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert conn.is_closed()
            await asyncio.wait_for(gone.wait(), 2)

    asyncio.run(main())


def test_closing_a_half_read_response_closes_the_connection() -> None:
    async def main() -> None:
        handler, _, gone = _closed_by_client()
        async with raw_server(handler) as port:
            conn = connection(port)
            response = await conn.handle_async_request(request(port))
            stream: Any = response.stream
            await stream.aclose()  # nothing read
            assert conn.is_closed()
            assert not conn.is_idle()
            await asyncio.wait_for(gone.wait(), 2)

    asyncio.run(main())


def test_a_busy_connection_refuses_a_second_request(upstream: Upstream) -> None:
    async def main() -> None:
        conn = connection(upstream.port)
        response = await conn.handle_async_request(request(upstream.port))
        with pytest.raises(httpcore.ConnectionNotAvailable):
            await conn.handle_async_request(request(upstream.port))
        await read_all(response)
        assert conn.is_idle()
        await conn.aclose()

    asyncio.run(main())


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.init("cluster.local")


@pytest.fixture
def tls_upstream(ca: MeshCA) -> Iterator[Upstream]:
    ctx = server_context(ca.issue("ns1", "svc"), require_client_cert=True, roots_pem=ca.cert_pem)
    up = Upstream("svc-v1", ssl_context=ctx).start()
    yield up
    up.stop()


def test_mutual_tls_with_the_check_run_on_the_handshake(ca: MeshCA, tls_upstream: Upstream) -> None:
    checked: list[str] = []

    def check(ssl_object: Any) -> None:
        peer = verify_server(ssl_object, ca.cert_pem, trust_domains=("cluster.local",),
                             expected=("spiffe://cluster.local/ns/ns1/sa/svc",))
        checked.append(str(peer))

    def context() -> ssl.SSLContext:
        return client_context(ca.issue("ns1", "caller"), roots_pem=ca.cert_pem)

    async def main() -> None:
        conn = connection(tls_upstream.port, ssl_context=context, server_hostname="svc.ns1", check=check)
        for _ in range(3):
            response, body = await exchange(conn, request(tls_upstream.port, b"POST", content=b"secret",
                                                          headers=[(b"Content-Length", b"6")]))
            assert (response.status, json.loads(body)["body"]) == (200, "secret")
        await conn.aclose()

    asyncio.run(main())
    assert len(checked) == 1  # one handshake, checked once
    assert tls_upstream.accepted() == 1
    assert tls_upstream.received[0].peer_cert is not None


def test_the_check_refuses_before_a_byte_is_sent(ca: MeshCA, tls_upstream: Upstream) -> None:
    def wrong_name(ssl_object: Any) -> None:  # what ISTIO_MUTUAL's secure naming does for another identity
        verify_server(ssl_object, ca.cert_pem, trust_domains=("cluster.local",),
                      expected=("spiffe://cluster.local/ns/ns1/sa/someone-else",))

    def refuse(ssl_object: Any) -> None:
        raise ssl.SSLError("not the server we wanted")

    origination = Origination("ISTIO_MUTUAL", "svc", lambda: client_context(ca.issue("ns1", "caller"),
                                                                             roots_pem=ca.cert_pem), wrong_name)

    async def main() -> None:
        for check in (origination.check, refuse):
            conn = connection(tls_upstream.port, ssl_context=origination.context, server_hostname=origination.sni,
                              check=check)
            with pytest.raises(httpcore.ConnectError, match="TLS error"):
                await conn.handle_async_request(request(tls_upstream.port, b"POST", content=b"x",
                                                        headers=[(b"Content-Length", b"1")]))
            assert conn.is_closed()
        await asyncio.sleep(0.1)  # time for the server to read a request, had one been sent

    asyncio.run(main())
    assert tls_upstream.accepted() == 2  # both handshakes completed...
    assert tls_upstream.received == []  # ...and not one byte of a request followed


def test_tls_failures_are_connect_errors(ca: MeshCA, tls_upstream: Upstream) -> None:
    def missing() -> ssl.SSLContext:
        raise ssl.SSLError("no identity")

    async def main() -> None:
        conn = connection(tls_upstream.port, ssl_context=missing)
        with pytest.raises(httpcore.ConnectError, match=r"TLS error: .*no identity"):
            await conn.handle_async_request(request(tls_upstream.port))
        other = MeshCA.init("cluster.local")  # a server from another CA fails verification
        conn = connection(tls_upstream.port, ssl_context=client_context(other.issue("ns1", "caller"),
                                                                          roots_pem=other.cert_pem))
        with pytest.raises(httpcore.ConnectError, match="TLS error"):
            await conn.handle_async_request(request(tls_upstream.port))
        assert conn.is_closed()

    asyncio.run(main())
    assert tls_upstream.received == []


# -- the engine choice -----------------------------------------------------------------------------


def test_the_async_pools_dial_this_connection_unless_told_otherwise() -> None:
    pool = AsyncEndpointPool(EndpointAddress.of("http", "127.0.0.1", 1))
    made = pool.dial()
    if engine._ASYNC_ENGINE == "httpcore":  # PYMESH_ASYNC_ENGINE=httpcore
        assert isinstance(made, httpcore.AsyncHTTPConnection)
    else:
        assert isinstance(made, AsyncH11Connection)


def test_a_finished_or_closed_body_yields_nothing_more(upstream: Upstream) -> None:
    async def main() -> None:
        conn = connection(upstream.port)
        response = await conn.handle_async_request(request(upstream.port))
        stream: Any = response.stream
        assert [c async for c in stream]
        assert [c async for c in stream] == []  # after the end: nothing, and the connection is fine
        await stream.aclose()
        assert conn.is_idle()
        await exchange(conn, request(upstream.port))  # in use by the next request...
        assert [c async for c in stream] == []  # ...which the old body cannot touch
        assert conn.is_idle()
        await conn.aclose()

    asyncio.run(main())
