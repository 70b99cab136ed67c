"""A cancelled async request gives back its pool lease, whatever it was doing when cancelled."""

from __future__ import annotations

import asyncio

import httpx

from pymesh.outbound.engine import AsyncEndpointPool, EndpointAddress
from pymesh.outbound.pool import ConnectionGate


def test_cancelled_while_a_stale_connection_is_closed_leaves_the_slot_free() -> None:
    # The server closes each keep-alive connection soon after answering: the next request finds a
    # stale idle connection, which the pool closes before dialling; cancelling the request then must
    # not keep the cluster's only connection slot (tcp.maxConnections: 1) for ever.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await asyncio.sleep(0.05)
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        gate = ConnectionGate(limit=1)
        pool = AsyncEndpointPool(EndpointAddress.of("http", "127.0.0.1", port), gate=gate)
        extensions = {"timeout": {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 1.0}}

        async def get() -> int:
            request = httpx.Request("GET", f"http://127.0.0.1:{port}/")
            response = await pool.send(b"GET", b"/", [(b"host", b"x")], httpx.ByteStream(b""), dict(extensions),
                                       request)
            await response.aread()
            await response.aclose()
            return response.status_code

        try:
            assert await get() == 200
            await asyncio.sleep(0.2)  # the server has closed the idle connection by now
            for _ in range(3):
                task = asyncio.create_task(get())
                await asyncio.sleep(0)  # the task runs to its first suspension, then is cancelled
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.05)
            assert (pool.stats()[2], gate.open) == (0, pool.stats()[0])  # nothing waits; the gate counts what is open
            assert await get() == 200  # not a PoolTimeout: the slot came back
        finally:
            await pool.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
