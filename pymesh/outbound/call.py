"""One outbound request's decisions, shared by the sync and async drivers.

The drivers (``transport.py``) only send, sleep and close; everything they are told to do
comes from here:

- ``Planner.decide``        route the request (no I/O)
- ``Call.fault``            the fault verdict: sleep this long, then maybe abort
- ``Call.attempt``          admission (circuit breaking), endpoint pick (avoiding endpoints
                            already tried and ejected ones), the shaped upstream request with
                            its per-try timeout and attempt header; or a local reply
- ``Call.responded`` /
  ``Call.failed``           classify the try, feed outlier detection, and ask the retry state
                            whether to retry (after how long) or stop
- ``Call.answer``           the response to hand the caller: the last try's, or a local reply

A ``Call`` holds the request's resources (pool ticket, active-request count) and releases
each exactly once, when the driver closes the try it belongs to.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from pymesh.errors import (
    MeshRequestError,
    NoHealthyUpstreamError,
    RouteNotFoundError,
    UpstreamConnectError,
    UpstreamOverflowError,
    UpstreamTimeoutError,
)
from pymesh.outbound.deadline import DEADLINE_KEY
from pymesh.outbound.engine import EndpointAddress
from pymesh.outbound.origination import Origination
from pymesh.outbound.pool import ConnectionGate
from pymesh.outbound.request import RequestInfo
from pymesh.outbound.resilience.classify import LOCAL_REPLIES, OVERLOADED_HEADER, classified_headers, classify
from pymesh.outbound.resilience.classify import Outcome as TryOutcome
from pymesh.outbound.resilience.fault import ABORT_BODY, FaultVerdict, decide
from pymesh.outbound.resilience.retry import ATTEMPT_HEADER, Retry, RetryState, Stop
from pymesh.outbound.router import LocalReply, Mirror, Outcome, Target
from pymesh.outbound.runtime import DEFAULT_POOL, ClusterState, PoolSettings
from pymesh.outbound.shaping import NO_OPS, HeaderOps, apply_headers
from pymesh.snapshot.registry import ServicePort

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

__all__ = ["Attempt", "Call", "Planner", "request_info"]

FLAGS_HEADER = "x-pymesh-flags"
_ATTEMPT = ATTEMPT_HEADER.encode("latin-1")
_TIMEOUT_NAMES = ("connect", "read", "write", "pool")
REPLAY_LIMIT = 1024 * 1024  # bytes: Envoy's default per-request buffer; larger bodies are sent once
_UH_BODY = b"no healthy upstream"
_ATTEMPT_HEADERS = tuple((_ATTEMPT, str(n).encode()) for n in range(8))  # tries 1..7 need no formatting


def _attempt_header(attempt: int) -> tuple[bytes, bytes]:
    return _ATTEMPT_HEADERS[attempt] if attempt < len(_ATTEMPT_HEADERS) else (_ATTEMPT, str(attempt).encode())


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Building one costs ~45 ms (it loads the CA bundle): once per process, and only for https.
    return httpx.create_ssl_context()


def request_info(request: httpx.Request, source_ip: str = "") -> RequestInfo:
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
        source_ip=source_ip,
    )


def local_response(reply: LocalReply, request: httpx.Request, ops: HeaderOps = NO_OPS) -> httpx.Response:
    headers = list(reply.headers)
    if reply.flags:
        headers.append((FLAGS_HEADER, reply.flags))
    response = httpx.Response(reply.status, headers=headers, content=reply.body, request=request)
    apply_response_ops(response, ops)
    return response


def apply_response_ops(response: httpx.Response, ops: HeaderOps, extra: tuple[tuple[str, str], ...] = ()) -> None:
    if not ops and not extra:
        return
    drop = ops.remove | {n for n, _ in ops.set}
    raw = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in drop]
    raw.extend((n.encode("latin-1"), v.encode("latin-1")) for n, v in (*ops.set, *ops.add, *extra))
    response.headers = httpx.Headers(raw)


def error_for(reply: LocalReply, request: httpx.Request) -> MeshRequestError:
    cls: type[MeshRequestError]
    flags = set(reply.flags.split(","))
    if "NR" in flags:
        cls = RouteNotFoundError
    elif flags & {"UH", "NC"}:
        cls = NoHealthyUpstreamError
    elif "UT" in flags:
        cls = UpstreamTimeoutError
    elif "UO" in flags:
        cls = UpstreamOverflowError
    else:
        cls = UpstreamConnectError
    return cls(f"{reply.status} {reply.flags}: {reply.reason}", request=request, status=reply.status, flags=reply.flags)


@dataclass(slots=True)
class Attempt:
    """One try, ready to send. ``release`` runs once, when the try's response is closed."""

    address: EndpointAddress
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    extensions: dict[str, Any]
    index: int | None  # endpoint index in the cluster's balancer, when there is one
    ours_timeout: bool  # the read timeout is the mesh's (per-try or route), not the client's
    releases: list[Callable[[], None]] = field(default_factory=list)
    pool: PoolSettings = DEFAULT_POOL
    gate: ConnectionGate | None = None  # the cluster's connection count (tcp.maxConnections)
    tls: Origination | None = None  # TLS the mesh originates (DestinationRule tls, auto-mTLS)

    def release(self) -> None:
        releases, self.releases = self.releases, []
        for fn in releases:
            fn()


class Planner:
    """Per-transport settings and the routing step."""

    def __init__(self, mesh: Mesh, *, raise_errors: bool) -> None:
        self.mesh = mesh
        self.raise_errors = raise_errors

    @property
    def ssl_context(self) -> ssl.SSLContext:
        return _default_ssl_context()

    def decide(self, request: httpx.Request) -> tuple[RequestInfo, Outcome]:
        live = self.mesh._live
        # Outbound, the source is this workload itself (what a sidecar sees as its app's address).
        info = request_info(request, live.snapshot.workload.address or "127.0.0.1")
        return info, live.router.decide(info, self.mesh._runtime.rng)

    def local(self, reply: LocalReply, request: httpx.Request, ops: HeaderOps = NO_OPS) -> httpx.Response:
        if self.raise_errors and reply.flags and reply.status >= 400 and "FI" not in reply.flags:
            raise error_for(reply, request)
        return local_response(reply, request, ops)

    def call(self, request: httpx.Request, info: RequestInfo, outcome: Outcome) -> Call:
        return Call(self, request, info, outcome)

    def passthrough_failure(self, request: httpx.Request, exc: httpx.TransportError) -> httpx.Response:
        """A pass-through request that could not reach its host (no retries: there is no route)."""
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            raise exc  # the caller's own timeout
        flags = "UF" if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) else "UC"
        status, body = LOCAL_REPLIES[flags]
        return self.local(LocalReply(status, body, (), flags, str(exc)), request)


class Call:
    """The state of one routed request across its tries."""

    __slots__ = ("_cluster_state", "_hash_key", "fault_flags", "info", "outcome", "path", "planner", "request",
                 "retry", "route", "set_cookie", "target")

    def __init__(self, planner: Planner, request: httpx.Request, info: RequestInfo, outcome: Outcome) -> None:
        self.planner = planner
        self.request = request
        self.info = info
        self.outcome = outcome
        route = outcome.route
        assert route is not None
        assert outcome.target is not None
        assert outcome.cluster is not None
        self.route = route
        self.target: Target = outcome.target
        self.path = outcome.path if outcome.path is not None else info.path  # as sent upstream
        self.retry: RetryState | None = None
        self.set_cookie: str | None = None
        self._cluster_state: ClusterState | None = None
        self._hash_key: bytes | None = None
        self.fault_flags = ""  # "DI" once a delay was injected: added to whatever answer follows

    # -- before the first try -----------------------------------------------------------

    def fault(self) -> FaultVerdict | None:
        policy = self.route.fault_policy
        if policy is None:
            return None
        verdict = decide(policy, self.planner.mesh._runtime.rng)
        if verdict.delay_seconds is not None:
            self.fault_flags = "DI"
        return verdict

    def abort(self, verdict: FaultVerdict) -> httpx.Response:
        if verdict.grpc_status is not None:
            headers = (("content-type", "application/grpc"), ("grpc-status", str(verdict.grpc_status)),
                       ("grpc-message", ABORT_BODY.decode()))
            reply = LocalReply(200, b"", headers, verdict.flags, "fault abort")
        else:
            status = verdict.abort_status or 503
            reply = LocalReply(status, ABORT_BODY, (("content-type", "text/plain"),), verdict.flags, "fault abort")
        return self.planner.local(reply, self.request, self.route.response_ops)

    def start(self) -> LocalReply | None:
        """Set up the retry state (after any fault delay: the route timeout starts here, as in Envoy)."""
        runtime = self.planner.mesh._runtime
        cluster = self.outcome.cluster
        assert cluster is not None
        if not cluster.subset_defined:
            return LocalReply(503, _UH_BODY, (), "NC", f"subset {cluster.key.subset!r} is not defined")
        state = None
        if cluster.endpoints:
            snap = self.planner.mesh._live.snapshot
            state = runtime.entry(cluster, locality=snap.workload.locality, labels=snap.workload.labels,
                                  mesh_config=snap.mesh_config, identity=self.planner.mesh.identity)
            if state.hash_policy is not None:
                self._hash_key, cookie = state.hash_policy.key(self.info, rng=runtime.rng)
                self.set_cookie = cookie.header_value() if cookie is not None else None
        elif cluster.service is not None and (
            cluster.key.subset or cluster.service.resolution not in ("NONE", "DNS", "DNS_ROUND_ROBIN")
        ):
            return LocalReply(503, _UH_BODY, (), "UH", f"no endpoints for {cluster.key}")
        self._cluster_state = state
        budget = state.budget if state is not None else runtime.default_budget
        budget.deposit()
        stream = self.request.stream  # read(), not .content: a request httpx built for a redirect has no .content
        replayable = isinstance(stream, httpx.ByteStream) and len(self.request.read()) <= REPLAY_LIMIT
        self.retry = RetryState(
            self.route.retry_policy, timeout=self.route.timeout, replayable=replayable, budget=budget,
            limits=state.limits if state is not None else None, clock=runtime.clock, rng=runtime.rng,
        )
        return None

    # -- each try -------------------------------------------------------------------------

    def attempt(self) -> Attempt | LocalReply:
        retry = self.retry
        assert retry is not None
        state = self._cluster_state
        outcome = self.outcome
        releases: list[Callable[[], None]] = []
        index: int | None = None
        if state is None:
            # Not in the registry, or resolved by DNS: dial the host itself, as a sidecar's
            # original-destination or DNS cluster would.
            key = outcome.cluster.key if outcome.cluster is not None else None
            host = key.host if key is not None and not key.host.startswith("*") else self.info.host
            port = outcome.port
        else:
            ticket = state.limits.try_admit()
            if ticket is None:
                return self._overflow()
            releases.append(ticket.release)
            balancer = state.balancer
            exclude = retry.exclude if state.hash_policy is None else ()
            index = balancer.pick(
                hash_key=self._hash_key, exclude=exclude,
                healthy=state.outlier.health_filter() if state.outlier is not None else None,
                retry_remote_localities=retry.policy.retry_remote_localities,
            )
            if index is None:
                ticket.release()
                if balancer.passthrough:
                    host, port = self.info.host, outcome.port
                    releases = []
                else:
                    return LocalReply(503, _UH_BODY, (), "UH", f"no healthy endpoint in {outcome.cluster}")
            else:
                endpoint = balancer.endpoints[index]
                service = state.cluster.service
                sport = service.port(outcome.port) if service is not None else None
                host, port = endpoint.address, endpoint.port_for(sport or ServicePort(outcome.port))
                balancer.start(index)
                releases.append(functools.partial(balancer.finish, index))
        pool = state.pool if state is not None else DEFAULT_POOL
        extensions, ours = self._timeouts(retry, pool.connect_timeout)
        scheme = "https" if self.info.scheme == "https" else "http"
        # The app's own https stays the app's; a plain request gets the cluster's TLS, if any.
        tls = state.tls[index] if state is not None and index is not None and scheme == "http" else None
        if scheme == "https":
            extensions.setdefault("sni_hostname", self.info.host)
        headers = self._headers(retry.attempt)
        if pool.close_after_each:
            headers.append((b"connection", b"close"))  # maxRequestsPerConnection: 1
        return Attempt(EndpointAddress.of(scheme, host, port), self.request.method.encode("ascii"),
                       self.path.encode("ascii"), headers, extensions, index, ours, releases, pool,
                       state.connections if state is not None else None, tls)

    def _overflow(self) -> LocalReply:
        retry = self.retry
        assert retry is not None
        retry.record(classify(None, None, "overflow"), None)
        status, body = LOCAL_REPLIES["UO"]
        return LocalReply(status, body, (OVERLOADED_HEADER,), "UO", "connection pool overflow")

    def _timeouts(self, retry: RetryState, connect_timeout: float) -> tuple[dict[str, Any], bool]:
        extensions = dict(self.request.extensions)
        limit = retry.try_timeout()
        timeouts = dict(extensions.get("timeout") or {})
        connect = timeouts.get("connect")
        if connect is None or connect_timeout < connect:  # DestinationRule tcp.connectTimeout
            timeouts["connect"] = connect_timeout
            extensions["timeout"] = timeouts
        if limit is None:
            return extensions, False
        # A deadline for the whole exchange, not only a per-read cap: a server that drips its
        # answer a byte at a time must not outlast the route timeout (pymesh.outbound.deadline).
        extensions[DEADLINE_KEY] = time.monotonic() + limit
        client_read = timeouts.get("read")
        if client_read is not None and limit >= client_read:
            return extensions, False
        get = timeouts.get
        for name in _TIMEOUT_NAMES:
            current = get(name)
            timeouts[name] = limit if current is None or limit < current else current  # min(current, limit)
        extensions["timeout"] = timeouts
        return extensions, True

    def _headers(self, attempt: int) -> list[tuple[bytes, bytes]]:
        info, outcome = self.info, self.outcome
        ops = self.target.request_ops
        if not ops and self.path == info.path and outcome.authority is None:
            # The common case: the caller's headers go as they are, plus the attempt count.
            return [*self.request.headers.raw, _attempt_header(attempt)]
        headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in self.request.headers.raw]
        if ops:
            headers = apply_headers(headers, ops)
        if self.path != info.path:
            headers.append(("x-envoy-original-path", info.path))  # as Envoy records a rewrite
        if outcome.authority is not None:
            headers = [(n, v) for n, v in headers if n != "host"]
            headers.insert(0, ("host", outcome.authority))
        headers.append((ATTEMPT_HEADER, str(attempt)))
        return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]

    # -- after each try ---------------------------------------------------------------------

    def responded(self, attempt: Attempt, response: httpx.Response) -> Retry | Stop:
        result = classify(response.status_code, classified_headers(response.headers.raw), None)
        return self._record(attempt, result)

    def failed(self, attempt: Attempt, exc: httpx.TransportError) -> tuple[Retry | Stop, TryOutcome]:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            deadline = attempt.extensions.get(DEADLINE_KEY)
            if not attempt.ours_timeout and (deadline is None or time.monotonic() < deadline):
                raise exc  # the caller's own httpx timeout: theirs to handle, as without a mesh
            kind = "timeout"
        elif isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            kind = "connect-failure"
        else:
            kind = "reset"
        result = classify(None, None, kind)  # type: ignore[arg-type]
        return self._record(attempt, result), result

    def _record(self, attempt: Attempt, result: TryOutcome) -> Retry | Stop:
        state = self._cluster_state
        if state is not None and state.outlier is not None and attempt.index is not None:
            state.outlier.record(attempt.index, result)
        retry = self.retry
        assert retry is not None
        return retry.record(result, attempt.index)

    def answer(self, response: httpx.Response, verdict: Stop | None = None) -> httpx.Response:
        """The upstream's answer for the caller, with the flags of how it came to be (DI, URX, UO)."""
        extra: tuple[tuple[str, str], ...] = (("set-cookie", self.set_cookie),) if self.set_cookie is not None else ()
        flags = self.fault_flags
        if verdict is not None and verdict.flags:
            flags = f"{flags},{verdict.flags}" if flags else verdict.flags
        if flags:
            extra = (*extra, (FLAGS_HEADER, flags))
        apply_response_ops(response, self.target.response_ops or self.route.response_ops, extra)
        return response

    def give_up(self, verdict: Stop, result: TryOutcome, exc: Exception | None) -> httpx.Response:
        """The local reply for a last try that ended without a response."""
        reply = result.reply
        status, body = reply if reply is not None else (503, b"")
        flags = ",".join(f for f in (self.fault_flags, verdict.flags or result.flag) if f)
        headers: tuple[tuple[str, str], ...] = (OVERLOADED_HEADER,) if result.flag == "UO" else ()
        reason = f"{verdict.reason}: {exc}" if exc is not None and str(exc) else verdict.reason
        local = LocalReply(status, body, headers, flags, reason)
        if self.planner.raise_errors:
            raise error_for(local, self.request) from exc
        return local_response(local, self.request)

    def close(self) -> None:
        if self.retry is not None:
            self.retry.close()

    # -- mirrors ------------------------------------------------------------------------------

    def mirrors(self) -> list[Attempt]:
        """Shadow tries for the route's mirror policies that win their percentage draw."""
        route = self.route
        if not route.mirrors or not isinstance(self.request.stream, httpx.ByteStream):
            return []  # a streamed body cannot be copied without buffering it for the caller
        runtime = self.planner.mesh._runtime
        out: list[Attempt] = []
        for m in route.mirrors:
            if m.percentage < 100.0 and runtime.rng.random() * 100.0 >= m.percentage:
                continue
            shadow = self._mirror_attempt(m)
            if shadow is not None:
                out.append(shadow)
        return out

    def _mirror_attempt(self, m: Mirror) -> Attempt | None:
        snap = self.planner.mesh._live.snapshot
        service = snap.registry.get(m.host)
        port = m.port or (service.ports[0].number if service is not None and len(service.ports) == 1
                          else self.outcome.port)
        authority = self.outcome.authority or self.request.headers.get("host", "")
        if snap.mesh_config.shadow_host_suffix:  # Istio <= 1.27; later the mirror keeps the host
            host, sep, p = authority.partition(":")
            authority = f"{host}-shadow{sep}{p}"
        shadow = Outcome(kind="forward", host=m.host, port=port, route=self.route, match=self.outcome.match,
                         target=Target(m.host, m.subset, port, 1), cluster=snap.clusters.get(m.host, m.subset, port),
                         path=self.outcome.path, authority=authority)
        call = Call(self.planner, self.request, self.info, shadow)
        if call.start() is not None:
            return None
        attempt = call.attempt()
        return attempt if isinstance(attempt, Attempt) else None

    @staticmethod
    def passthrough(request: httpx.Request) -> Attempt:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        return Attempt(EndpointAddress.of(url.scheme, url.host, port), request.method.encode("ascii"), url.raw_path,
                       list(request.headers.raw), dict(request.extensions), None, False)
