"""Routing benchmarks: the cost of one routing decision, and of a routed GET against bare httpx.

Run from the repository root::

    python -m benchmarks.routing            # full: 1, 100, 1,000 and 10,000 VirtualServices
    python -m benchmarks.routing --quick    # about 30 s: 1, 100 and 1,000
    python -m benchmarks.routing --pin      # client and upstream pinned to one CPU
    python -m benchmarks.routing --json out.json
    python -m benchmarks.routing --profile 5000   # cProfile hot spots of the pymesh client path

(a) Decision. For each count N a mesh is generated with N services, each its own host
    with a ServiceEntry (two endpoints, v1 and v2), a DestinationRule (subsets v1, v2)
    and a VirtualService of three http routes: a header match (``x-canary: true``), a
    uri prefix match (``/api/v2/``) and a weighted catch-all (v1 90 / v2 10). The request
    targets the host in the middle (index N // 2). Three request variants exercise the
    three routes; ``catch-all`` is the longest path (two failed matches, then a weighted
    pick). Timed: ``mesh._live.router.decide(info, rng)`` with a prebuilt ``RequestInfo``,
    and the public ``mesh.route(method, url, headers)``, which also parses the URL and
    builds a ``RouteDecision``. Each figure is the median over many batches of the mean
    ns per call within a batch; the counts run in interleaved rounds so drift hits all
    of them. Target (perf-anchors T1): <= 1 µs at every count, flat in N.

(b) Routed GET. One upstream (``benchmarks._upstream``, its own process) serves both
    paths. ``pymesh``: ``mesh.client().get("http://svc-<mid>.bench.svc.cluster.local:8080/")``
    with the 1,000-service mesh, i.e. host lookup, route match, weighted subset pick,
    round-robin endpoint pick and header shaping, then httpcore. ``bare``:
    ``httpx.Client().get("http://localhost:<port>/")`` (``--bare-host``: a host name, as
    the mesh URL is, since httpx spends ~12 µs more per request on a name than on an IP
    literal). ``raw``: a blocking-socket
    keep-alive client, only to show that the upstream is never the bottleneck. Rounds
    alternate A B / B A; many short rounds, so a burst of other work on a shared machine
    lands on both paths of a round. Targets (perf-anchors T2): rps ratio >= 0.93, added
    p50 <= 25 µs, added client CPU <= 20 µs/request.

(c) The same GET in memory. Both clients again, with the httpcore connection pool in each
    replaced by a stub that answers at once: what is left between them is pymesh's own
    work per request, without the socket and scheduler noise of (b).

``--profile N`` skips the benchmark and profiles N pymesh GETs instead (in memory by
default, ``--profile-network`` for loopback; ``--profiler pyinstrument`` if installed).

Everything started (the upstream process, clients, pools) is stopped at the end, on
error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from benchmarks._harness import (
    Aggregate,
    Round,
    aggregate,
    compare,
    interleave,
    machine,
    per_call_ns,
    pick_cpu,
    pin,
    table,
    write_json,
)
from benchmarks._upstream import RESPONSE, UpstreamProcess
from pymesh import Mesh
from pymesh.config.load import Text

if TYPE_CHECKING:
    from pymesh.outbound.request import RequestInfo


def request_info(request: httpx.Request) -> RequestInfo:
    """pymesh's internal request description (imported late: internals may move; callers guard)."""
    from pymesh.outbound.transport import request_info as build

    return build(request)

NS = "bench"
SERVICE_PORT = 8080
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "routing.json"
_DOCS_PER_SOURCE = 3000  # keeps each generated source well under the loader's per-file limits

# request variant -> (path, extra headers, the route it must hit)
VARIANTS: dict[str, tuple[str, dict[str, str], str]] = {
    "catch-all": ("/", {}, "default"),
    "header": ("/", {"x-canary": "true"}, "canary-header"),
    "uri": ("/api/v2/items?id=7", {}, "api-v2"),
}

TARGETS = {
    "decision_ns_max": 1000.0,
    "decision_flatness_max": 1.5,  # N=1000 vs N=1 (T1)
    "rps_ratio_min": 0.93,
    "added_p50_us_max": 25.0,
    "added_p99_us_max": 50.0,
    "added_cpu_us_max": 20.0,
}


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    counts: tuple[int, ...]
    decision_rounds: int
    decision_batch: int
    decision_batches: int  # per (count, variant), across all rounds
    route_batch: int
    route_batches: int
    http_services: int
    http_rounds: int
    http_requests: int  # per scenario per round
    raw_requests: int
    http_warmup: int
    round_cap_s: float
    memory_rounds: int
    memory_batch: int
    clock: str = "cpu"

    @classmethod
    def for_mode(cls, quick: bool, clock: str = "cpu") -> Settings:
        if quick:
            return cls(True, (1, 100, 1000), 3, 500, 30, 100, 12, 1000, 20, 250, 1000, 300, 3.0, 12, 100, clock)
        return cls(False, (1, 100, 1000, 10_000), 5, 500, 150, 200, 60, 1000, 100, 400, 4000, 500, 10.0, 40, 200,
                   clock)


# -- generated configuration --------------------------------------------------------------


def host(i: int) -> str:
    return f"svc-{i}.{NS}.svc.cluster.local"


def service_docs(i: int, endpoint_port: int) -> list[str]:
    """ServiceEntry, DestinationRule and VirtualService of generated service ``i``."""
    h = host(i)
    return [
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: {NS}}}
spec:
  hosts: [{h}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {SERVICE_PORT}, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {endpoint_port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {endpoint_port}}}, labels: {{version: v2}}}}
""",
        f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-{i}, namespace: {NS}}}
spec:
  host: {h}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
""",
        f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: {NS}}}
spec:
  hosts: [{h}]
  http:
  - name: canary-header
    match: [{{headers: {{x-canary: {{exact: "true"}}}}}}]
    route: [{{destination: {{host: {h}, subset: v2}}}}]
  - name: api-v2
    match: [{{uri: {{prefix: /api/v2/}}}}]
    route: [{{destination: {{host: {h}, subset: v2}}}}]
  - name: default
    route:
    - {{destination: {{host: {h}, subset: v1}}, weight: 90}}
    - {{destination: {{host: {h}, subset: v2}}, weight: 10}}
""",
    ]


def build_mesh(count: int, endpoint_port: int) -> tuple[Mesh, float]:
    """A mesh of ``count`` generated services, and the seconds it took to load."""
    docs = [d for i in range(count) for d in service_docs(i, endpoint_port)]
    step = _DOCS_PER_SOURCE
    sources = [Text("---\n".join(docs[k : k + step]), f"<generated {count} services, part {k // step}>")
               for k in range(0, len(docs), step)]
    t0 = time.perf_counter()
    mesh = Mesh(sources, namespace=NS)
    return mesh, time.perf_counter() - t0


def target_url(count: int, path: str = "/") -> str:
    return f"http://{host(count // 2)}:{SERVICE_PORT}{path}"


def bare_url(bare_host: str, port: int) -> str:
    """The bare client's URL for the upstream (``bare_host`` must reach 127.0.0.1)."""
    return f"http://{bare_host}:{port}/"


# -- (a) routing decision -----------------------------------------------------------------


def _noop2(_a: object, _b: object) -> None:
    return None


def _noop3(_a: object, _b: object, _c: object) -> None:
    return None


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _spread(values: Sequence[float]) -> tuple[float, float]:
    """The 10th and 90th percentile of the batch means."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    q = statistics.quantiles(values, n=10)
    return q[0], q[-1]


def _check_outcome(mesh: Mesh, info: RequestInfo, route_name: str) -> None:
    outcome = mesh._live.router.decide(info, mesh._runtime.rng)
    got = outcome.route.name if outcome.route is not None else None
    if outcome.kind != "forward" or got != route_name:
        raise RuntimeError(f"{info.host}{info.path}: expected a forward on route {route_name!r}, "
                           f"got {outcome.kind} on {got!r} ({outcome.local})")


def bench_decision(meshes: dict[int, Mesh], load_s: dict[int, float], s: Settings, log: Callable[[str], None]
                   ) -> dict[str, Any]:
    builder = httpx.Client(trust_env=False)  # only builds requests, never sends one
    infos: dict[tuple[int, str], RequestInfo] = {}
    urls: dict[tuple[int, str], tuple[str, dict[str, str] | None]] = {}
    first_call_us: dict[int, float] = {}
    try:
        for count, mesh in meshes.items():
            for variant, (path, headers, route_name) in VARIANTS.items():
                url = target_url(count, path)
                info = request_info(builder.build_request("GET", url, headers=headers))
                if variant == "catch-all":  # the first request to a host resolves it and compiles its routes
                    t0 = time.perf_counter_ns()
                    mesh._live.router.decide(info, mesh._runtime.rng)
                    first_call_us[count] = (time.perf_counter_ns() - t0) / 1000
                _check_outcome(mesh, info, route_name)
                infos[count, variant] = info
                urls[count, variant] = (url, dict(headers) if headers else None)
    finally:
        builder.close()

    per_round = max(1, s.decision_batches // s.decision_rounds)
    route_per_round = max(1, s.route_batches // s.decision_rounds)
    decide_ns: dict[tuple[int, str], list[float]] = {k: [] for k in infos}
    route_ns: dict[tuple[int, str], list[float]] = {k: [] for k in infos}
    floor2: list[float] = []
    floor3: list[float] = []
    counts = list(meshes)
    for r in range(s.decision_rounds):
        order = counts if r % 2 == 0 else counts[::-1]
        for count in order:
            mesh = meshes[count]
            decide = mesh._live.router.decide
            rng = mesh._runtime.rng
            for variant in VARIANTS:
                decide_ns[count, variant] += per_call_ns(decide, (infos[count, variant], rng),
                                                         batch=s.decision_batch, batches=per_round, clock=s.clock)
                url, route_headers = urls[count, variant]
                route_ns[count, variant] += per_call_ns(mesh.route, ("GET", url, route_headers),
                                                        batch=s.route_batch, batches=route_per_round, warmup=100,
                                                        clock=s.clock)
        floor2 += per_call_ns(_noop2, (None, None), batch=s.decision_batch, batches=per_round, clock=s.clock)
        floor3 += per_call_ns(_noop3, (None, None, None), batch=s.decision_batch, batches=per_round,
                              clock=s.clock)
        log(f"  decision round {r + 1}/{s.decision_rounds} done")

    rows: list[dict[str, Any]] = []
    for count in counts:
        row: dict[str, Any] = {"virtual_services": count, "load_s": round(load_s[count], 3),
                               "first_call_us": round(first_call_us[count], 1), "decide_ns": {}, "route_ns": {}}
        for variant in VARIANTS:
            for key, values in (("decide_ns", decide_ns[count, variant]), ("route_ns", route_ns[count, variant])):
                lo, hi = _spread(values)
                row[key][variant] = {"median": round(_median(values), 1), "p10": round(lo, 1), "p90": round(hi, 1),
                                     "batches": len(values)}
        rows.append(row)
    flatness = {}
    for variant in VARIANTS:
        medians = [r["decide_ns"][variant]["median"] for r in rows]
        by_count = {r["virtual_services"]: r["decide_ns"][variant]["median"] for r in rows}
        flatness[variant] = {
            "max_over_min": round(max(medians) / min(medians), 3),
            "n1000_over_n1": round(by_count[1000] / by_count[1], 3) if 1 in by_count and 1000 in by_count else None,
        }
    return {
        "method": f"median over batches of {s.decision_batch} calls (mesh.route: {s.route_batch}), GC on, "
                  f"{s.decision_rounds} interleaved rounds over the counts, {s.clock} clock",
        "clock": s.clock,
        "floor_ns": {"call_2_args": round(_median(floor2), 1), "call_3_args": round(_median(floor3), 1)},
        "rows": rows,
        "flatness": flatness,
    }


def print_decision(result: dict[str, Any]) -> None:
    print(f"\n(a) Routing decision, median {result['clock']} ns per call  [p10-p90 of batch means]")
    headers = ["VirtualServices", "load s", "1st call µs"]
    headers += [f"decide {v}" for v in VARIANTS] + [f"mesh.route {v}" for v in VARIANTS]
    rows = []
    for r in result["rows"]:
        cells: list[object] = [f"{r['virtual_services']:,}", r["load_s"], r["first_call_us"]]
        for key in ("decide_ns", "route_ns"):
            for v in VARIANTS:
                m = r[key][v]
                cells.append(f"{m['median']:,.0f} [{m['p10']:,.0f}-{m['p90']:,.0f}]")
        rows.append(cells)
    print(table(headers, rows, align="<" + ">" * (len(headers) - 1)))
    f = result["floor_ns"]
    print(f"floor (loop + call of a no-op, same arity): {f['call_2_args']:.0f} ns (decide), "
          f"{f['call_3_args']:.0f} ns (mesh.route); included in the figures above")
    flat = ", ".join(
        f"{v} {x['max_over_min']:.2f}x" + (f" (N=1000/N=1 {x['n1000_over_n1']:.2f}x)" if x["n1000_over_n1"] else "")
        for v, x in result["flatness"].items()
    )
    print(f"flatness of decide, slowest/fastest count: {flat}")


# -- (b) routed GET vs bare httpx ---------------------------------------------------------


class _RawClient:
    """A blocking keep-alive socket client: the floor of one loopback request to the upstream."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._request = f"GET / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()
        self._length = len(RESPONSE)

    def __call__(self) -> None:
        sock = self._sock
        sock.sendall(self._request)
        data = sock.recv(4096)
        while len(data) < self._length:
            more = sock.recv(4096)
            if not more:
                raise RuntimeError("upstream closed the connection")
            data += more

    def close(self) -> None:
        self._sock.close()


def _getter(client: httpx.Client, url: str) -> Callable[[], None]:
    get = client.get

    def call() -> None:
        response = get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.headers} {response.text[:200]!r}")

    return call


def bench_http(mesh: Mesh, services: int, upstream: UpstreamProcess, s: Settings, stack: contextlib.ExitStack,
               log: Callable[[str], None], bare_host: str) -> dict[str, Any]:
    mesh_client = stack.enter_context(mesh.client(trust_env=False))
    bare_client = stack.enter_context(httpx.Client(trust_env=False))
    raw = _RawClient(upstream.port)
    stack.callback(raw.close)
    mesh_url = target_url(services)
    first = mesh_client.get(mesh_url)
    if first.status_code != 200 or first.content != b"ok":
        raise RuntimeError(f"pymesh GET {mesh_url}: {first.status_code} {first.text[:200]!r}")
    routed = mesh.route("GET", mesh_url)
    bare = bare_url(bare_host, upstream.port)
    scenarios = [("bare", _getter(bare_client, bare)), ("pymesh", _getter(mesh_client, mesh_url))]

    every = max(1, s.http_rounds // 10)

    def progress(rnd: Round) -> None:
        if (rnd.index + 1) % every == 0 or rnd.capped:
            log(f"  http round {rnd.index + 1}/{s.http_rounds} {rnd.scenario:<6} {rnd.n} req  {rnd.rps:,.0f} rps"
                + ("  (time cap)" if rnd.capped else ""))

    results = interleave(scenarios, rounds=s.http_rounds, n=s.http_requests, warmup=s.http_warmup,
                         time_cap_s=s.round_cap_s, other_cpu=upstream.cpu_ns, on_round=progress)
    raw_rounds = interleave([("raw", raw)], rounds=10, n=s.raw_requests,
                            warmup=s.http_warmup, time_cap_s=s.round_cap_s, other_cpu=upstream.cpu_ns)
    aggs: dict[str, Aggregate] = {name: aggregate(rounds) for name, rounds in {**results, **raw_rounds}.items()}
    cmp = compare(results["pymesh"], results["bare"])
    return {
        "method": f"closed loop, 1 connection, {s.http_rounds} rounds alternating bare/pymesh order, "
                  f"{s.http_requests} requests per scenario per round (cap {s.round_cap_s:g} s), "
                  f"{s.http_warmup} warm-up; raw floor measured after, in its own rounds",
        "mesh_services": services,
        "pymesh_url": mesh_url,
        "pymesh_cluster": routed.cluster,
        "bare_url": bare,
        "scenarios": {name: agg.as_json() for name, agg in aggs.items()},
        "pymesh_vs_bare": cmp.as_json(),
        "upstream_headroom": round(aggs["raw"].rps / aggs["pymesh"].rps, 1),
    }


def print_http(result: dict[str, Any]) -> None:
    print(f"\n(b) Routed GET: pymesh ({result['mesh_services']:,}-service mesh, {result['pymesh_cluster']}) "
          f"vs bare httpx.Client ({result['bare_url']}), same upstream, same run")
    rows = []
    labels = {"bare": "bare httpx.Client", "pymesh": "pymesh mesh.client()", "raw": "raw socket (floor)"}
    for name, sc in result["scenarios"].items():
        lat = sc["latency_us"]
        rows.append([labels.get(name, name), f"{sc['n']:,}", sc["rps"], lat["p50"], lat["p90"], lat["p99"],
                     lat["p999"], sc["client_cpu_us_per_req"], sc["upstream_cpu_us_per_req"]])
    print(table(["scenario", "requests", "req/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "client CPU µs/req",
                 "upstream CPU µs/req"], rows))
    c = result["pymesh_vs_bare"]
    ratios = c["rps_ratio_rounds"]
    cpus = c["added_client_cpu_us_per_req_rounds"]
    p50s = c["added_p50_us_rounds"]
    print(f"pymesh vs bare: throughput ratio {c['rps_ratio']:.3f} (median of rounds; rounds {min(ratios):.3f} to "
          f"{max(ratios):.3f})")
    print(f"  added latency (pooled): p50 {c['added_p50_us']:+.1f} µs, p90 {c['added_p90_us']:+.1f} µs, "
          f"p99 {c['added_p99_us']:+.1f} µs; per-round p50 deltas {min(p50s):+.1f} to {max(p50s):+.1f} µs "
          f"(median {statistics.median(p50s):+.1f})")
    print(f"  added client CPU {c['added_client_cpu_us_per_req']:+.1f} µs/req (per round {min(cpus):+.1f} to "
          f"{max(cpus):+.1f}, median {statistics.median(cpus):+.1f})")
    print(f"upstream headroom: raw client reaches {result['upstream_headroom']:.1f}x pymesh's req/s")


# -- (c) the same GET in memory: where pymesh's per-request time goes ----------------------


class _StubPool:
    """Stands in for an httpcore connection pool: reads the request body, answers ``200 ok`` at once.

    Both clients get one, so what is left between them is pymesh's own work per request,
    free of the socket and scheduler noise that dominates (b) on a shared machine.
    """

    _HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [(b"content-type", b"text/plain"), (b"content-length", b"2")]

    def handle_request(self, request: Any) -> Any:
        import httpcore

        for _ in request.stream:
            pass
        return httpcore.Response(200, headers=self._HEADERS, content=b"ok")

    def close(self) -> None:
        return None

    def __enter__(self) -> _StubPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass(frozen=True, slots=True)
class InMemory:
    """No-I/O callables: each sends the benchmark's GET through a stubbed httpcore pool."""

    pymesh_get: Callable[[], None]  # mesh.client().get(url)
    bare_get: Callable[[], None]  # httpx.Client().get(url)
    pymesh_transport: Callable[[], None]  # MeshTransport.handle_request(request), body read, closed
    bare_transport: Callable[[], None]  # httpx.HTTPTransport.handle_request(request), body read, closed


def _handler(transport: httpx.BaseTransport, request: httpx.Request) -> Callable[[], None]:
    handle = transport.handle_request

    def call() -> None:
        response = handle(request)
        try:
            response.read()
        finally:
            response.close()
        if response.status_code != 200:
            raise RuntimeError(f"{request.url}: {response.status_code}")

    return call


class _Body:
    """A response body that can be closed, as a connection's stream can."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"ok"

    def close(self) -> None:
        return None


class _StubConnection(_StubPool):
    """Stands in for one httpcore connection of a pymesh ``EndpointPool`` (its ``dial`` seam)."""

    def handle_request(self, request: Any) -> Any:
        import httpcore

        for _ in request.stream:
            pass
        return httpcore.Response(200, headers=self._HEADERS, content=_Body())

    def has_expired(self) -> bool:
        return False

    def is_idle(self) -> bool:
        return True

    # what httpcore's own ConnectionPool asks of its connections
    def can_handle_request(self, origin: Any) -> bool:
        return True

    def is_available(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return False


def _stub_pools(transport: Any) -> None:
    """Swap the httpcore pool(s) of a MeshTransport or an HTTPTransport for ``_StubPool``.

    pymesh's endpoint pools expose ``dial`` (what makes a new connection) for this; the
    connections they already hold are dropped so that the next request dials a stub.
    """
    pools = getattr(transport, "_pools", None)
    if isinstance(pools, dict):
        if pools and all(hasattr(p, "dial") and hasattr(p, "_state") for p in pools.values()):
            for pool in pools.values():
                old = pool._state
                for conn in list(getattr(old, "_idle", ())):
                    conn.core.close()
                pool._state = type(old)(getattr(old, "_gate", None))
                pool.dial = _StubConnection
            return
        if not pools or not all(hasattr(p, "_pool") for p in pools.values()):
            raise LookupError("MeshTransport._pools[...]: neither .dial nor ._pool found")
        for pool in pools.values():
            pool._pool.close()
            pool._pool = _StubPool()
        return
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "create_connection"):
        raise LookupError(f"{type(transport).__name__}._pool.create_connection not found")
    # httpx's transport keeps its httpcore ConnectionPool (its bookkeeping is part of the bare path's
    # cost, as pymesh's own pool is part of pymesh's); only the connections it dials are stubs.
    pool.close()
    pool.create_connection = lambda origin: _StubConnection()


@contextlib.contextmanager
def in_memory(mesh: Mesh, services: int, upstream_port: int, bare_host: str = "localhost") -> Iterator[InMemory]:
    """Both paths with their httpcore pools replaced by ``_StubPool``, at client and at transport level.

    Each pymesh transport first sends real requests, so that it creates every
    endpoint's pool; then those pools' connections are swapped. Raises ``LookupError``
    when the transport's internals no longer look as expected.
    """
    url = target_url(services)
    bare = bare_url(bare_host, upstream_port)
    with contextlib.ExitStack() as stack:
        mesh_client = stack.enter_context(mesh.client(trust_env=False))
        bare_client = stack.enter_context(httpx.Client(trust_env=False))
        mesh_transport = stack.enter_context(mesh.transport())
        bare_transport = stack.enter_context(httpx.HTTPTransport())
        request = mesh_client.build_request("GET", url)
        bare_request = bare_client.build_request("GET", bare)
        pymesh_transport = _handler(mesh_transport, request)
        mesh_get = _getter(mesh_client, url)
        for _ in range(200):  # create every endpoint pool over the network (the 90/10 split picks both subsets)
            pymesh_transport()
            mesh_get()
        for transport in (mesh_transport, bare_transport, mesh_client._transport, bare_client._transport):
            _stub_pools(transport)
        yield InMemory(_getter(mesh_client, url), _getter(bare_client, bare), pymesh_transport,
                       _handler(bare_transport, bare_request))


def _paired(a: Callable[[], None], b: Callable[[], None], rounds: int, batch: int, clock: str
            ) -> tuple[list[float], list[float]]:
    """Per-round ns per call of ``a`` and ``b``, alternating which goes first; each the median of 3 batches."""
    out_a: list[float] = []
    out_b: list[float] = []
    for r in range(rounds):
        pair = [(out_a, a), (out_b, b)]
        for out, fn in pair if r % 2 == 0 else pair[::-1]:
            out.append(_median(per_call_ns(fn, batch=batch, batches=3, warmup=20, clock=clock)))
    return out_a, out_b


def bench_in_memory(mesh: Mesh, services: int, upstream_port: int, s: Settings, bare_host: str) -> dict[str, Any]:
    """pymesh vs bare with no I/O, at transport and at client level, in interleaved rounds; two steps alone."""
    levels: dict[str, Any] = {}
    try:
        with in_memory(mesh, services, upstream_port, bare_host) as mem:
            for level, a, b in (("transport", mem.pymesh_transport, mem.bare_transport),
                                ("client", mem.pymesh_get, mem.bare_get)):
                mesh_ns, bare_ns = _paired(a, b, s.memory_rounds, s.memory_batch, s.clock)
                deltas = [x - y for x, y in zip(mesh_ns, bare_ns, strict=True)]
                lo, hi = _spread(deltas)
                levels[level] = {
                    "pymesh_us": round(_median(mesh_ns) / 1000, 2),
                    "bare_us": round(_median(bare_ns) / 1000, 2),
                    "added_us": round(_median(deltas) / 1000, 2),
                    "added_us_p10_p90": [round(lo / 1000, 2), round(hi / 1000, 2)],
                }
    except LookupError as exc:
        return {"missing": str(exc)}

    builder = httpx.Client(trust_env=False)
    try:
        request = builder.build_request("GET", target_url(services))
        info = request_info(request)
        router = mesh._live.router
        rng = mesh._runtime.rng
        steps = {
            "request_info(request)": _median(per_call_ns(request_info, (request,), batch=s.route_batch,
                                                         batches=s.route_batches, clock=s.clock)),
            "router.decide(info, rng)": _median(per_call_ns(router.decide, (info, rng), batch=s.route_batch,
                                                            batches=s.route_batches, clock=s.clock)),
        }
    finally:
        builder.close()
    return {
        "method": f"connections stubbed inside both paths' pools (each pool's own bookkeeping still runs); "
                  f"{s.memory_rounds} rounds alternating order, "
                  f"each the median of 3 batches of {s.memory_batch} requests; GC on; {s.clock} clock. "
                  "transport: handle_request + read + close of a prebuilt request; client: Client.get(url)",
        "clock": s.clock,
        **levels,
        "steps_us": {k: round(v / 1000, 2) for k, v in steps.items()},
    }


def print_in_memory(result: dict[str, Any]) -> None:
    print("\n(c) The same GET in memory (httpcore pool stubbed on both paths): pymesh's own work per request, "
          f"{result.get('clock', '')} µs")
    if "missing" in result:
        print(f"skipped: {result['missing']}")
        return
    rows = []
    for level, label in (("transport", "transport.handle_request"), ("client", "Client.get")):
        r = result[level]
        lo, hi = r["added_us_p10_p90"]
        rows.append([label, r["bare_us"], r["pymesh_us"], f"{r['added_us']:+.1f}", f"{lo:+.1f} to {hi:+.1f}"])
    print(table(["level", "bare µs", "pymesh µs", "added µs (median of rounds)", "p10 to p90 of rounds"], rows))
    print("steps alone: " + ", ".join(f"{k} {v:.1f} µs" for k, v in result["steps_us"].items()))


def profile_client(mesh: Mesh, services: int, upstream_port: int, requests: int, profiler: str, network: bool,
                   out: Path) -> None:
    """Profile ``requests`` pymesh GETs (in memory unless ``network``) and print the hot spots."""
    with contextlib.ExitStack() as stack:
        if network:
            client = stack.enter_context(mesh.client(trust_env=False))
            get = _getter(client, target_url(services))
        else:
            get = stack.enter_context(in_memory(mesh, services, upstream_port)).pymesh_get
        for _ in range(300):
            get()
        where = "over loopback" if network else "in memory (httpcore pool stubbed)"
        if profiler == "pyinstrument":
            from pyinstrument import Profiler

            prof = Profiler(interval=0.0001)
            prof.start()
            for _ in range(requests):
                get()
            prof.stop()
            print(f"pyinstrument, {requests:,} GETs through mesh.client() {where}")
            print(prof.output_text(unicode=True, color=False, show_all=False))
            return
        import cProfile
        import pstats

        cprof = cProfile.Profile()
        cprof.enable()
        for _ in range(requests):
            get()
        cprof.disable()
    out.parent.mkdir(parents=True, exist_ok=True)
    cprof.dump_stats(str(out))
    stats = pstats.Stats(str(out))
    print(f"\ncProfile of {requests:,} GETs through mesh.client() {where}; saved to {out}. cProfile adds its "
          "own cost to every call: compare entries with each other, not with (b) or (c)")
    print("\n-- pymesh's own functions, by internal time --")
    stats.sort_stats("tottime").print_stats(r"pymesh[/\\]", 25)
    print("-- pymesh's own functions, by cumulative time --")
    stats.sort_stats("cumulative").print_stats(r"pymesh[/\\]", 25)
    print("-- everything, by internal time --")
    stats.sort_stats("tottime").print_stats(20)


# -- targets ------------------------------------------------------------------------------


def check_targets(decision: dict[str, Any] | None, http: dict[str, Any] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, limit: float, ok: bool, unit: str, robust: float | None = None) -> None:
        out.append({"target": name, "value": round(value, 3), "limit": limit, "unit": unit, "pass": ok,
                    "median_of_rounds": None if robust is None else round(robust, 3)})

    if decision is not None:
        worst = max(r["decide_ns"][v]["median"] for r in decision["rows"] for v in VARIANTS)
        add("decide median, worst count and variant", worst, TARGETS["decision_ns_max"],
            worst <= TARGETS["decision_ns_max"], "ns")
        for v, flat in decision["flatness"].items():
            if flat["n1000_over_n1"] is not None:
                add(f"decide {v}: N=1000 / N=1", flat["n1000_over_n1"], TARGETS["decision_flatness_max"],
                    flat["n1000_over_n1"] <= TARGETS["decision_flatness_max"], "x")
    if http is not None:
        c = http["pymesh_vs_bare"]
        add("throughput ratio pymesh/bare", c["rps_ratio"], TARGETS["rps_ratio_min"],
            c["rps_ratio"] >= TARGETS["rps_ratio_min"], "x")
        add("added p50", c["added_p50_us"], TARGETS["added_p50_us_max"],
            c["added_p50_us"] <= TARGETS["added_p50_us_max"], "µs", c["added_p50_us_median_of_rounds"])
        add("added p99", c["added_p99_us"], TARGETS["added_p99_us_max"],
            c["added_p99_us"] <= TARGETS["added_p99_us_max"], "µs")
        add("added client CPU", c["added_client_cpu_us_per_req"], TARGETS["added_cpu_us_max"],
            c["added_client_cpu_us_per_req"] <= TARGETS["added_cpu_us_max"], "µs/req",
            c["added_client_cpu_us_median_of_rounds"])
    return out


def print_targets(targets: list[dict[str, Any]]) -> None:
    print("\nTargets (reference/perf-anchors.md section 4; judged on the pooled figure)")
    rows = [[t["target"], f"{t['value']:g} {t['unit']}",
             "-" if t["median_of_rounds"] is None else f"{t['median_of_rounds']:g} {t['unit']}",
             ("≥ " if "ratio" in t["target"] else "≤ ") + f"{t['limit']:g} {t['unit']}",
             "PASS" if t["pass"] else "MISS"] for t in targets]
    print(table(["target", "measured", "median of rounds", "limit", ""], rows, align="<>>><"))


# -- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.routing", description=__doc__.splitlines()[0]
                                if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer counts and samples; about 30 s in all")
    p.add_argument("--pin", nargs="?", type=int, const=-1, default=None, metavar="CPU",
                   help="pin the client and the upstream to one CPU (default: the highest allowed)")
    p.add_argument("--upstream-cpu", type=int, default=None, metavar="CPU",
                   help="pin the upstream to this CPU instead (with or without --pin)")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT, metavar="PATH", help=f"default: {DEFAULT_OUT}")
    p.add_argument("--counts", type=lambda t: tuple(int(x) for x in t.split(",")), default=None,
                   help="VirtualService counts for (a), comma-separated (default 1,100,1000[,10000])")
    p.add_argument("--bare-host", default="localhost", metavar="HOST",
                   help="host in the bare client's URL (default localhost: like the mesh URL, a name httpx must "
                        "parse as one; 127.0.0.1 as in perf-anchors); it must reach 127.0.0.1")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="clock for the per-call timings of (a) and (c): thread CPU time (default) or wall time")
    p.add_argument("--part", choices=("all", "decision", "http", "memory"), default="all")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="instead of benchmarking, profile N pymesh GETs (in memory) and print the hot spots")
    p.add_argument("--profile-network", action="store_true", help="profile GETs over loopback instead")
    p.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = Settings.for_mode(args.quick, args.clock)
    counts = tuple(sorted(set(args.counts))) if args.counts else s.counts
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    where = machine(("pymesh-istio", "pyyaml", "google-re2"))  # before pinning narrows the CPU set
    client_cpu = upstream_cpu = None
    if args.pin is not None:
        client_cpu = pick_cpu() if args.pin < 0 else args.pin
        pin(client_cpu)
        upstream_cpu = client_cpu
    if args.upstream_cpu is not None:
        upstream_cpu = args.upstream_cpu

    payload: dict[str, Any] = {
        "benchmark": "routing",
        "mode": "quick" if s.quick else "full",
        "argv": sys.argv,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": where,
        "placement": {"client_cpu": client_cpu, "upstream_cpu": upstream_cpu, "pinned": args.pin is not None},
        "targets_spec": TARGETS,
        "loadavg_start": os.getloadavg(),
    }
    decision = http = memory = None
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(UpstreamProcess(cpu=upstream_cpu))
        log(f"upstream pid {upstream.pid} on port {upstream.port}"
            + (f", pinned to CPU {upstream_cpu}" if upstream_cpu is not None else ""))
        meshes: dict[int, Mesh] = {}
        load_s: dict[int, float] = {}
        need: set[int] = set()
        if args.part in ("all", "decision") and not args.profile:
            need |= set(counts)
        if args.part != "decision" or args.profile:
            need.add(s.http_services)
        for count in sorted(need):
            log(f"loading {count:,} services ({3 * count:,} resources)")
            meshes[count], load_s[count] = build_mesh(count, upstream.port)
            stack.callback(meshes[count].close)
            log(f"  loaded in {load_s[count]:.2f} s")
        http_mesh = meshes.get(s.http_services)
        if args.profile:
            assert http_mesh is not None
            profile_client(http_mesh, s.http_services, upstream.port, args.profile, args.profiler,
                           args.profile_network, args.json.with_suffix(".prof"))
            return payload
        if args.part in ("all", "decision"):
            log("(a) routing decision")
            decision = bench_decision({c: meshes[c] for c in counts}, load_s, s, log)
        # Keep only the mesh the requests use: a bigger live heap makes every GC pass slower,
        # which both clients would pay alike but which blurs the comparison.
        meshes.clear()
        gc.collect()
        if args.part in ("all", "http"):
            assert http_mesh is not None
            log("(b) routed GET vs bare httpx")
            http = bench_http(http_mesh, s.http_services, upstream, s, stack, log, args.bare_host)
        if args.part in ("all", "memory"):
            assert http_mesh is not None
            log("(c) the same GET in memory")
            memory = bench_in_memory(http_mesh, s.http_services, upstream.port, s, args.bare_host)
    payload["decision"] = decision
    payload["http"] = http
    payload["in_memory"] = memory
    payload["loadavg_end"] = os.getloadavg()
    payload["targets"] = check_targets(decision, http)
    payload["duration_s"] = round(time.perf_counter() - started, 1)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            payload = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started has been stopped", file=sys.stderr)
        return 130
    if args.profile:
        return 0
    print(f"\npymesh routing benchmark ({payload['mode']}), {payload['machine']['cpu_model']}, "
          f"{payload['machine']['cpus_online']} CPUs, Python {payload['machine']['python']}, "
          f"httpx {payload['machine']['versions']['httpx']}; placement: "
          + (f"client CPU {payload['placement']['client_cpu']}, upstream CPU {payload['placement']['upstream_cpu']}"
             if payload["placement"]["pinned"] or payload["placement"]["upstream_cpu"] is not None else "unpinned"))
    if payload["decision"] is not None:
        print_decision(payload["decision"])
    if payload["http"] is not None:
        print_http(payload["http"])
    if payload["in_memory"] is not None:
        print_in_memory(payload["in_memory"])
    print_targets(payload["targets"])
    load = payload["loadavg_start"][0], payload["loadavg_end"][0]
    cpus = payload["machine"]["cpus_online"] or 1
    if max(load) > 0.5 * cpus:
        print(f"\nnote: load average {load[0]:.2f} at start, {load[1]:.2f} at end on {cpus} CPUs: other work was "
              "running; absolute figures are inflated, same-run comparisons less so")
    out = write_json(args.json, payload)
    print(f"\nwrote {out} ({payload['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
