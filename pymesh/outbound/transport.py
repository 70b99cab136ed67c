"""The httpx transports: thin sync and async drivers over one planning step.

The outbound pipeline, in order (each step's reason for its place):

1. read the request into a ``RequestInfo``      every decision reads this, never httpx
2. route (``Router.decide``)                    host -> VirtualService -> first matching route
3. local reply?                                 redirect, direct response, NR, REGISTRY_ONLY: no upstream
4. cluster and endpoint pick (``Runtime``)      after routing, because the route chose the subset/port
5. shape the upstream request                   rewrites and header operations of the chosen destination
6. mirror copies                                submitted before the send so they never wait on it
7. send on the endpoint's pool                  one pool per endpoint address
8. shape the response                           response header operations, hash cookie
(retries, timeouts, faults and limits wrap steps 4-7 in the resilience layer.)

Steps 1-6 and 8 are ``_Planner``; only step 7 differs between the drivers.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from pymesh.errors import MeshRequestError, NoHealthyUpstreamError, RouteNotFoundError, UpstreamConnectError
from pymesh.outbound.balancer import Balancer
from pymesh.outbound.engine import AsyncEndpointPool, EndpointAddress, EndpointPool
from pymesh.outbound.mirror import AsyncMirror, ThreadMirror
from pymesh.outbound.request import RequestInfo
from pymesh.outbound.router import LocalReply, Mirror, Outcome, Target
from pymesh.outbound.shaping import NO_OPS, HeaderOps, apply_headers
from pymesh.snapshot.clusters import Cluster
from pymesh.snapshot.registry import ServicePort

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

__all__ = ["AsyncMeshTransport", "MeshTransport", "request_info"]

FLAGS_HEADER = "x-pymesh-flags"
_UH_BODY = b"no healthy upstream"
_UF_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
_UC_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"


def request_info(request: httpx.Request) -> RequestInfo:
    url = request.url
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers.raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return RequestInfo(
        method=request.method,
        scheme=url.scheme,
        host=url.host.lower(),
        port=url.port,
        path=url.raw_path.decode("ascii"),
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class _Send:
    """Everything the driver needs to put one request on the wire."""

    address: EndpointAddress
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    extensions: dict[str, Any]
    response_ops: HeaderOps
    set_cookie: str | None
    balancer: Balancer | None
    index: int | None


def _local_response(reply: LocalReply, request: httpx.Request, ops: HeaderOps = NO_OPS) -> httpx.Response:
    headers = list(reply.headers)
    if reply.flags:
        headers.append((FLAGS_HEADER, reply.flags))
    response = httpx.Response(reply.status, headers=headers, content=reply.body, request=request)
    _apply_response_ops(response, ops)
    return response


def _apply_response_ops(response: httpx.Response, ops: HeaderOps, extra: tuple[tuple[str, str], ...] = ()) -> None:
    if not ops and not extra:
        return
    drop = ops.remove | {n for n, _ in ops.set}
    raw = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in drop]
    raw.extend((n.encode("latin-1"), v.encode("latin-1")) for n, v in (*ops.set, *ops.add, *extra))
    response.headers = httpx.Headers(raw)


def _error_for(reply: LocalReply, request: httpx.Request) -> MeshRequestError:
    cls: type[MeshRequestError]
    if reply.flags == "NR":
        cls = RouteNotFoundError
    elif reply.flags in ("UH", "NC"):
        cls = NoHealthyUpstreamError
    else:
        cls = UpstreamConnectError
    return cls(f"{reply.status} {reply.flags}: {reply.reason}", request=request, status=reply.status, flags=reply.flags)


class _Planner:
    """Steps 1-6 and 8 of the pipeline, shared by both drivers."""

    def __init__(self, mesh: Mesh, *, raise_errors: bool) -> None:
        self.mesh = mesh
        self.raise_errors = raise_errors
        self._ssl = httpx.create_ssl_context()

    def local(self, reply: LocalReply, request: httpx.Request, ops: HeaderOps = NO_OPS) -> httpx.Response:
        if self.raise_errors and reply.flags:
            raise _error_for(reply, request)
        return _local_response(reply, request, ops)

    def decide(self, request: httpx.Request) -> tuple[RequestInfo, Outcome]:
        live = self.mesh._live
        info = request_info(request)
        return info, live.router.decide(info, self.mesh._runtime.rng)

    def passthrough(self, request: httpx.Request) -> _Send:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        return _Send(EndpointAddress.of(url.scheme, url.host, port), request.method.encode("ascii"), url.raw_path,
                     list(request.headers.raw), dict(request.extensions), NO_OPS, None, None, None)

    def forward(self, request: httpx.Request, info: RequestInfo, outcome: Outcome) -> _Send | LocalReply:
        """Pick the endpoint and shape the upstream request, or say why there is none."""
        cluster = outcome.cluster
        target = outcome.target
        assert cluster is not None
        assert target is not None
        assert outcome.route is not None
        picked = self._endpoint(cluster, info, outcome)
        if isinstance(picked, LocalReply):
            return picked
        host, port, balancer, index, set_cookie = picked
        ops = target.request_ops
        headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in request.headers.raw]
        if ops:
            headers = apply_headers(headers, ops)
        authority = outcome.authority
        if authority is not None:
            headers = [(n, v) for n, v in headers if n != "host"]
            headers.insert(0, ("host", authority))
        extensions = dict(request.extensions)
        scheme = "https" if info.scheme == "https" else "http"
        if scheme == "https":
            extensions.setdefault("sni_hostname", info.host)
        return _Send(
            EndpointAddress.of(scheme, host, port),
            request.method.encode("ascii"),
            outcome.path.encode("ascii"),
            [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
            extensions,
            _merge_ops(outcome.route.response_ops, target.response_ops),
            set_cookie,
            balancer,
            index,
        )

    def _endpoint(
        self, cluster: Cluster, info: RequestInfo, outcome: Outcome
    ) -> tuple[str, int, Balancer | None, int | None, str | None] | LocalReply:
        if not cluster.subset_defined:
            return LocalReply(503, _UH_BODY, (), "NC", f"subset {cluster.key.subset!r} is not defined")
        service = cluster.service
        port = outcome.port
        if not cluster.endpoints:
            if service is None or (service.resolution in ("NONE", "DNS", "DNS_ROUND_ROBIN") and not cluster.key.subset):
                # Not in the registry, or resolved by DNS: dial the host itself, as a sidecar's
                # original-destination or DNS cluster would.
                host = cluster.key.host if not cluster.key.host.startswith("*") else info.host
                return host, port, None, None, None
            return LocalReply(503, _UH_BODY, (), "UH", f"no endpoints for {cluster.key}")
        snap = self.mesh._live.snapshot
        entry = self.mesh._runtime.entry(
            cluster, locality=snap.workload.locality, labels=snap.workload.labels,
            mesh_locality=snap.mesh_config.locality_lb_setting,
        )
        hash_key: bytes | None = None
        set_cookie: str | None = None
        if entry.hash_policy is not None:
            hash_key, cookie = entry.hash_policy.key(info)
            set_cookie = cookie.header_value() if cookie is not None else None
        balancer = entry.balancer
        index = balancer.pick(hash_key=hash_key)
        if index is None:
            if balancer.passthrough:
                return info.host, port, None, None, None
            return LocalReply(503, _UH_BODY, (), "UH", f"no healthy endpoint in {cluster.key}")
        endpoint = balancer.endpoints[index]
        sport = service.port(port) if service is not None else None
        return endpoint.address, endpoint.port_for(sport or ServicePort(port)), balancer, index, set_cookie

    def finish(self, response: httpx.Response, send: _Send) -> httpx.Response:
        extra = (("set-cookie", send.set_cookie),) if send.set_cookie is not None else ()
        _apply_response_ops(response, send.response_ops, extra)
        return response

    def failure(self, exc: httpx.TransportError, request: httpx.Request) -> httpx.Response:
        if isinstance(exc, httpx.ConnectError):
            reply = LocalReply(503, _UF_BODY, (), "UF", f"connect failure: {exc}")
        else:
            reply = LocalReply(503, _UC_BODY, (), "UC", f"upstream reset: {exc}")
        if self.raise_errors:
            raise _error_for(reply, request) from exc
        return _local_response(reply, request)

    def mirror_sends(self, request: httpx.Request, info: RequestInfo, outcome: Outcome) -> list[_Send]:
        """Shadow requests for the route's mirror policies that win their percentage draw."""
        route = outcome.route
        if route is None or not route.mirrors or not isinstance(request.stream, httpx.ByteStream):
            return []  # a streamed body cannot be copied without buffering it for the caller
        rng = self.mesh._runtime.rng
        snap = self.mesh._live.snapshot
        out: list[_Send] = []
        for m in route.mirrors:
            if m.percentage < 100.0 and rng.random() * 100.0 >= m.percentage:
                continue
            send = self._mirror_send(request, info, outcome, m, snap)
            if send is not None:
                out.append(send)
        return out

    def _mirror_send(self, request: httpx.Request, info: RequestInfo, outcome: Outcome, m: Mirror,
                     snap: Any) -> _Send | None:
        service = snap.registry.get(m.host)
        port = m.port or (service.ports[0].number if service is not None and len(service.ports) == 1 else outcome.port)
        cluster = snap.clusters.get(m.host, m.subset, port)
        shadow = Outcome(kind="forward", host=m.host, port=port, route=outcome.route, match=outcome.match,
                         target=Target(m.host, m.subset, port, 1), cluster=cluster, path=outcome.path,
                         authority=self._shadow_authority(request, outcome, snap))
        send = self.forward(request, info, shadow)
        return send if isinstance(send, _Send) else None

    @staticmethod
    def _shadow_authority(request: httpx.Request, outcome: Outcome, snap: Any) -> str:
        authority = outcome.authority or request.headers.get("host", "")
        if not snap.mesh_config.shadow_host_suffix:
            return authority  # Istio >= 1.28: the mirror keeps the original host
        host, sep, port = authority.partition(":")
        return f"{host}-shadow{sep}{port}"


def _merge_ops(route_ops: HeaderOps, dest_ops: HeaderOps) -> HeaderOps:
    # The destination's ops already include the route's (compiled together); prefer them.
    return dest_ops or route_ops


class _Tracked(httpx.SyncByteStream):
    """Counts an active request on its endpoint until the response body is closed."""

    def __init__(self, inner: Any, balancer: Balancer, index: int) -> None:
        self._inner = inner
        self._done: Balancer | None = balancer
        self._index = index

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            if self._done is not None:
                self._done.finish(self._index)
                self._done = None


class _AsyncTracked(httpx.AsyncByteStream):
    def __init__(self, inner: Any, balancer: Balancer, index: int) -> None:
        self._inner = inner
        self._done: Balancer | None = balancer
        self._index = index

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._done is not None:
                self._done.finish(self._index)
                self._done = None


class MeshTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that routes every request through the mesh."""

    def __init__(self, mesh: Mesh, *, raise_errors: bool = False, mirror_capacity: int = 256) -> None:
        self._plan = _Planner(mesh, raise_errors=raise_errors)
        self._pools: dict[EndpointAddress, EndpointPool] = {}
        self._lock = threading.Lock()
        self._mirror = ThreadMirror(capacity=mirror_capacity)

    @property
    def mirror(self) -> ThreadMirror:
        return self._mirror

    def _pool(self, address: EndpointAddress) -> EndpointPool:
        pool = self._pools.get(address)
        if pool is None:
            with self._lock:
                pool = self._pools.get(address)
                if pool is None:
                    ssl_context = self._plan._ssl if address.scheme == b"https" else None
                    pool = self._pools[address] = EndpointPool(address, ssl_context=ssl_context)
        return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        plan = self._plan
        info, outcome = plan.decide(request)
        if outcome.local is not None:
            return plan.local(outcome.local, request, outcome.route.response_ops if outcome.route else NO_OPS)
        if outcome.kind == "passthrough":
            send = plan.passthrough(request)
        else:
            planned = plan.forward(request, info, outcome)
            if isinstance(planned, LocalReply):
                return plan.local(planned, request)
            send = planned
        for shadow in plan.mirror_sends(request, info, outcome):
            self._mirror.submit(functools.partial(self._shadow, shadow, request))
        try:
            response = self._send(send, request)
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
                raise
            return plan.failure(exc, request)
        return plan.finish(response, send)

    def _send(self, send: _Send, request: httpx.Request) -> httpx.Response:
        balancer, index = send.balancer, send.index
        if balancer is not None and index is not None:
            balancer.start(index)
        try:
            response = self._pool(send.address).send(send.method, send.target, send.headers, request.stream,
                                                     send.extensions, request)
        except BaseException:
            if balancer is not None and index is not None:
                balancer.finish(index)
            raise
        if balancer is not None and index is not None:
            response.stream = _Tracked(response.stream, balancer, index)
        return response

    def _shadow(self, send: _Send, request: httpx.Request) -> None:
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=request.content)
        response = self._send(send, copy)
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
        self._plan = _Planner(mesh, raise_errors=raise_errors)
        self._pools: dict[EndpointAddress, AsyncEndpointPool] = {}
        self._mirror = AsyncMirror(capacity=mirror_capacity)

    @property
    def mirror(self) -> AsyncMirror:
        return self._mirror

    def _pool(self, address: EndpointAddress) -> AsyncEndpointPool:
        pool = self._pools.get(address)
        if pool is None:  # one event loop drives this transport: no lock needed
            ssl_context = self._plan._ssl if address.scheme == b"https" else None
            pool = self._pools[address] = AsyncEndpointPool(address, ssl_context=ssl_context)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        plan = self._plan
        info, outcome = plan.decide(request)
        if outcome.local is not None:
            return plan.local(outcome.local, request, outcome.route.response_ops if outcome.route else NO_OPS)
        if outcome.kind == "passthrough":
            send = plan.passthrough(request)
        else:
            planned = plan.forward(request, info, outcome)
            if isinstance(planned, LocalReply):
                return plan.local(planned, request)
            send = planned
        for shadow in plan.mirror_sends(request, info, outcome):
            self._mirror.submit(functools.partial(self._shadow, shadow, request))
        try:
            response = await self._send(send, request)
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
                raise
            return plan.failure(exc, request)
        return plan.finish(response, send)

    async def _send(self, send: _Send, request: httpx.Request) -> httpx.Response:
        balancer, index = send.balancer, send.index
        if balancer is not None and index is not None:
            balancer.start(index)
        try:
            response = await self._pool(send.address).send(send.method, send.target, send.headers, request.stream,
                                                            send.extensions, request)
        except BaseException:
            if balancer is not None and index is not None:
                balancer.finish(index)
            raise
        if balancer is not None and index is not None:
            response.stream = _AsyncTracked(response.stream, balancer, index)
        return response

    async def _shadow(self, send: _Send, request: httpx.Request) -> None:
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=request.content)
        response = await self._send(send, copy)
        try:
            await response.aread()
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._mirror.aclose()
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.aclose() for p in pools), return_exceptions=True)
