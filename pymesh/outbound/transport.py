"""The httpx transports: thin sync and async drivers over ``call.py``'s decisions.

The outbound pipeline, in order (each step's reason for its place):

1. read the request into a ``RequestInfo``     every decision reads this, never httpx
2. route (``Router.decide``)                   host -> VirtualService -> first matching route
3. local reply?                                redirect, direct response, NR, REGISTRY_ONLY: no upstream
4. fault injection                             delay, then maybe abort: before anything is sent
5. retry loop, capped by the route timeout     retries wrap the pick, so a retry can choose another endpoint
   a. admission (connection-pool limits)       an overflow answers 503 UO at once, never queued
   b. endpoint pick                            healthy (outlier detection), not tried before
   c. shaped upstream request                  rewrites, header operations, attempt header, per-try timeout
   d. send on the endpoint's pool              one pool per endpoint address
   e. classify, record outlier, decide         one classifier feeds retry and outlier detection
6. mirror copies                               submitted with the first try, never waited on
7. shape the response                          response header operations, hash cookie

Only the sending, sleeping and closing differ between the two drivers.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

from pymesh.forking import after_fork_in_child
from pymesh.outbound.call import Attempt, Call, Planner, request_info
from pymesh.outbound.engine import AsyncEndpointPool, EndpointAddress, EndpointPool, in_background
from pymesh.outbound.mirror import AsyncMirror, ThreadMirror
from pymesh.outbound.origination import Origination
from pymesh.outbound.pool import ConnectionGate
from pymesh.outbound.resilience.retry import Retry
from pymesh.outbound.router import LocalReply
from pymesh.outbound.runtime import PoolSettings
from pymesh.outbound.shaping import NO_OPS

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

__all__ = ["AsyncMeshTransport", "MeshTransport", "request_info"]


_DRAIN_LIMIT = 64 * 1024  # read a retried answer up to this, so its connection can be reused


def _small(response: httpx.Response) -> bool:
    length = response.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= _DRAIN_LIMIT


def _drain(response: httpx.Response) -> None:
    """Close a try's answer before the next try; read it first when small (httpcore reuses the
    connection only after the body was read)."""
    try:
        if _small(response):
            response.read()
    except httpx.HTTPError:
        pass
    finally:
        response.close()


async def _adrain(response: httpx.Response) -> None:
    try:
        if _small(response):
            await response.aread()
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()


#: One pool per endpoint of each cluster: its address, pool settings, connection gate and TLS.
PoolKey = tuple[EndpointAddress, PoolSettings, ConnectionGate | None, Origination | None]


class _Pruner:
    """Finds pools of endpoints a reload removed from their cluster, so they can be closed and their
    idle connections stop holding the cluster's ``maxConnections`` slots. Asked when a new pool is
    made (which is when endpoints change), and looks at most once a second: it walks every endpoint."""

    EVERY = 1.0

    def __init__(self, plan: Planner) -> None:
        self._plan = plan
        self._last = 0.0

    def stale(self, pools: dict[PoolKey, Any]) -> list[PoolKey]:
        now = time.monotonic()
        if now - self._last < self.EVERY:
            return []
        self._last = now
        live = self._plan.mesh._runtime.live_endpoints()
        return [key for key in pools
                if key[2] is not None and (id(key[2]), key[0].host.decode("ascii"), key[0].port) not in live]


class MeshTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that routes every request through the mesh."""

    def __init__(self, mesh: Mesh, *, raise_errors: bool = False, mirror_capacity: int = 256) -> None:
        self._plan = Planner(mesh, raise_errors=raise_errors)
        self._pools: dict[PoolKey, EndpointPool] = {}
        self._lock = threading.Lock()
        self._pruner = _Pruner(self._plan)
        self._mirror = ThreadMirror(capacity=mirror_capacity)
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # The pooled sockets are the parent's: forgotten here (closing them would be the
        # parent's business), and the mirror's worker threads did not come along.
        self._pools = {}
        self._lock = threading.Lock()
        self._mirror = ThreadMirror(capacity=self._mirror.capacity)

    @property
    def mirror(self) -> ThreadMirror:
        return self._mirror

    def _pool(self, attempt: Attempt) -> EndpointPool:
        key = (attempt.address, attempt.pool, attempt.gate, attempt.tls)  # per endpoint of each cluster, as Envoy's
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    for stale in self._pruner.stale(self._pools):
                        self._pools.pop(stale).close()
                    address, settings, gate, tls = key
                    ssl_context = self._plan.ssl_context if address.scheme == b"https" else None
                    pool = self._pools[key] = EndpointPool(
                        address, ssl_context=ssl_context, keepalive_expiry=settings.keepalive_expiry, gate=gate,
                        max_requests_per_connection=settings.max_requests_per_connection, tls=tls)
        return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        plan = self._plan
        info, outcome = plan.decide(request)
        if outcome.local is not None:
            return plan.local(outcome.local, request, outcome.route.response_ops if outcome.route else NO_OPS)
        if outcome.kind == "passthrough":
            try:
                return self._send(Call.passthrough(request), request)
            except httpx.TransportError as exc:
                return plan.passthrough_failure(request, exc)
        call = plan.call(request, info, outcome)
        verdict = call.fault()
        if verdict is not None and verdict.delay_seconds:
            time.sleep(verdict.delay_seconds)
        if verdict is not None and verdict.aborts:
            return call.abort(verdict)
        refused = call.start()
        if refused is not None:
            return plan.local(refused, request)
        try:
            for shadow in call.mirrors():
                self._mirror.submit(functools.partial(self._shadow, shadow, request), shadow.release)
            return self._tries(call, request)
        finally:
            call.close()

    def _tries(self, call: Call, request: httpx.Request) -> httpx.Response:
        while True:
            attempt = call.attempt()
            if isinstance(attempt, LocalReply):
                return self._plan.local(attempt, request)
            try:
                response = self._send(attempt, request)
            except httpx.TransportError as exc:
                attempt.release()
                verdict, result = call.failed(attempt, exc)
                if isinstance(verdict, Retry):
                    time.sleep(verdict.delay)
                    continue
                return call.give_up(verdict, result, exc)
            except BaseException:
                attempt.release()
                raise
            verdict_ = call.responded(attempt, response)
            if isinstance(verdict_, Retry):
                _drain(response)
                time.sleep(verdict_.delay)
                continue
            return call.answer(response, verdict_)

    def _send(self, attempt: Attempt, request: httpx.Request) -> httpx.Response:
        return self._pool(attempt).send(attempt.method, attempt.target, attempt.headers, request.stream,
                                        attempt.extensions, request, attempt.release if attempt.releases else None)

    def _shadow(self, attempt: Attempt, request: httpx.Request) -> None:
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=request.content)
        try:
            response = self._send(attempt, copy)
        except BaseException:
            attempt.release()
            raise
        try:
            response.read()
        finally:
            response.close()

    def close(self) -> None:
        self._mirror.close()
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that routes every request through the mesh."""

    def __init__(self, mesh: Mesh, *, raise_errors: bool = False, mirror_capacity: int = 256) -> None:
        self._plan = Planner(mesh, raise_errors=raise_errors)
        self._pools: dict[PoolKey, AsyncEndpointPool] = {}
        self._pruner = _Pruner(self._plan)
        self._mirror = AsyncMirror(capacity=mirror_capacity)
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        self._pools = {}  # the parent's connections, bound to the parent's event loop
        self._mirror = AsyncMirror(capacity=self._mirror.capacity)

    @property
    def mirror(self) -> AsyncMirror:
        return self._mirror

    def _pool(self, attempt: Attempt) -> AsyncEndpointPool:
        key = (attempt.address, attempt.pool, attempt.gate, attempt.tls)
        pool = self._pools.get(key)
        if pool is None:  # one event loop drives this transport: no lock needed
            for stale in self._pruner.stale(self._pools):
                in_background(self._pools.pop(stale).aclose())
            address, settings, gate, tls = key
            ssl_context = self._plan.ssl_context if address.scheme == b"https" else None
            pool = self._pools[key] = AsyncEndpointPool(
                address, ssl_context=ssl_context, keepalive_expiry=settings.keepalive_expiry, gate=gate,
                max_requests_per_connection=settings.max_requests_per_connection, tls=tls)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        plan = self._plan
        info, outcome = plan.decide(request)
        if outcome.local is not None:
            return plan.local(outcome.local, request, outcome.route.response_ops if outcome.route else NO_OPS)
        if outcome.kind == "passthrough":
            try:
                return await self._send(Call.passthrough(request), request)
            except httpx.TransportError as exc:
                return plan.passthrough_failure(request, exc)
        call = plan.call(request, info, outcome)
        verdict = call.fault()
        if verdict is not None and verdict.delay_seconds:
            await asyncio.sleep(verdict.delay_seconds)
        if verdict is not None and verdict.aborts:
            return call.abort(verdict)
        refused = call.start()
        if refused is not None:
            return plan.local(refused, request)
        try:
            for shadow in call.mirrors():
                self._mirror.submit(functools.partial(self._shadow, shadow, request), shadow.release)
            return await self._tries(call, request)
        finally:
            call.close()

    async def _tries(self, call: Call, request: httpx.Request) -> httpx.Response:
        while True:
            attempt = call.attempt()
            if isinstance(attempt, LocalReply):
                return self._plan.local(attempt, request)
            try:
                response = await self._send(attempt, request)
            except httpx.TransportError as exc:
                attempt.release()
                verdict, result = call.failed(attempt, exc)
                if isinstance(verdict, Retry):
                    await asyncio.sleep(verdict.delay)
                    continue
                return call.give_up(verdict, result, exc)
            except BaseException:  # cancellation included: the try's resources go back
                attempt.release()
                raise
            verdict_ = call.responded(attempt, response)
            if isinstance(verdict_, Retry):
                await _adrain(response)
                await asyncio.sleep(verdict_.delay)
                continue
            return call.answer(response, verdict_)

    async def _send(self, attempt: Attempt, request: httpx.Request) -> httpx.Response:
        return await self._pool(attempt).send(attempt.method, attempt.target, attempt.headers, request.stream,
                                              attempt.extensions, request,
                                              attempt.release if attempt.releases else None)

    async def _shadow(self, attempt: Attempt, request: httpx.Request) -> None:
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=request.content)
        try:
            response = await self._send(attempt, copy)
        except BaseException:
            attempt.release()
            raise
        try:
            await response.aread()
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._mirror.aclose()
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.aclose() for p in pools), return_exceptions=True)
