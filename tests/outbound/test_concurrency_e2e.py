"""End to end, the mesh under concurrency, cancellation and chaos, against real loopback upstreams.

Covered: 200 threads on one sync client and 1,000 concurrent asyncio tasks on one async client,
with no errors and no leaked sockets (open socket descriptors of the process counted before
and after, the in-process upstreams' included); a cancellation storm (1,000 async requests
cancelled at random points: waiting for a pool slot behind ``maxConnections``, in flight to a
slow upstream, sleeping in backoff against a failing one) after which the pools, limit counters
and balancer counters are clean, no task is left behind and the next 100 requests all succeed
with no ``PoolTimeout`` (encode/httpcore#1093 is the known way this goes wrong); and a chaos run
(slow, failing and dead endpoints, outlier detection and a request limit, under concurrent load
for about 3 s) checking that every caller is answered within the route timeout, that no request
body is lost, altered or sent more often than the retry policy allows, and that sockets and
counters return to baseline.

Sockets are counted from ``/proc/self/fd`` (no psutil); the count is allowed to settle for a
few seconds after a client closes, since the upstreams' handler threads close their side when
they see the client's FIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

import pymesh
from pymesh.outbound.transport import AsyncMeshTransport, MeshTransport
from pymesh.testing.upstream import Received, Reply, Upstream, service_yaml
from tests.outbound.conftest import Connect, MakeMesh, Mode, StartUpstream, docs, echo, served_by
from tests.outbound.test_resilience_e2e import (
    ATTEMPT,
    FLAGS,
    Script,
    dead_service_yaml,
    dest_rule,
    free_port,
    listen_wide,
    route_vs,
)

pytestmark = pytest.mark.timeout(90)


def open_sockets() -> int:
    """Socket descriptors this process holds (clients and the in-process upstreams alike)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while listing
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n


def settle(baseline: int, timeout: float = 8.0) -> int:
    """Wait until the socket count is back to ``baseline`` (or ``timeout``); the count then."""
    deadline = time.monotonic() + timeout
    while True:
        now = open_sockets()
        if now <= baseline or time.monotonic() >= deadline:
            return now
        time.sleep(0.05)


def assert_counters_clean(mesh: pymesh.Mesh) -> None:
    """Every limit ticket and balancer active-request count came back."""
    for state in mesh._runtime._entries.values():
        assert (state.limits.active, state.limits.active_retries) == (0, 0), state.cluster.key
        assert all(a == 0 for a in state.balancer._active), (state.cluster.key, state.balancer._active)


def assert_pools_idle(transport: MeshTransport | AsyncMeshTransport) -> None:
    """No request is queued in or holding any endpoint pool's connection."""
    for pool in transport._pools.values():
        connections, idle, waiting = pool.stats()
        assert (waiting, idle) == (0, connections), (pool.address, pool.stats())


@pytest.fixture
def quiet_threads() -> Iterator[None]:
    """Silence the upstreams' handler threads that outlive a test (broken pipes after cancels)."""
    hook = threading.excepthook
    threading.excepthook = lambda args: None
    yield
    threading.excepthook = hook


# -- many threads, many tasks ---------------------------------------------------------------------


def test_200_threads_on_one_sync_client(servers: StartUpstream, make_mesh: MakeMesh) -> None:
    ups = [listen_wide(servers(f"svc-{i}")) for i in range(3)]
    mesh = make_mesh(docs(service_yaml("svc", "ns1", ups), route_vs()))
    baseline = open_sockets()
    client = mesh.client(timeout=30.0)
    threads, per_thread = 200, 5
    barrier = threading.Barrier(threads)

    def worker(t: int) -> list[tuple[str, int]]:
        barrier.wait()
        seen = []
        for k in range(per_thread):
            body = f"thread {t} request {k}".encode()
            r = client.post("http://svc:8080/c", content=body, headers={"x-id": f"{t}-{k}"})
            assert r.status_code == 200, (r.status_code, r.text)
            assert echo(r)["body"] == body.decode()
            seen.append((served_by(r), k))
        return seen

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(worker, range(threads)))
    assert sum(len(x) for x in results) == threads * per_thread
    ids = Counter(x.headers["x-id"] for up in ups for x in up.received)
    assert len(ids) == threads * per_thread
    assert set(ids.values()) == {1}  # each delivered exactly once
    assert all(up.count() > 0 for up in ups)
    transport = client._transport
    assert isinstance(transport, MeshTransport)
    assert_pools_idle(transport)
    assert_counters_clean(mesh)
    assert all(p.stats()[0] <= threads for p in transport._pools.values())  # idle ones serve their endpoint only
    client.close()
    assert settle(baseline) <= baseline


def test_1000_tasks_on_one_async_client(servers: StartUpstream, make_mesh: MakeMesh) -> None:
    # tcp.maxConnections bounds the cluster's connections (with Istio's unbounded default, 1,000
    # tasks would open 1,000 connections: a test of the kernel's accept queue, not of the mesh).
    ups = [listen_wide(servers(f"svc-{i}")) for i in range(4)]
    per_cluster = 16
    mesh = make_mesh(docs(service_yaml("svc", "ns1", ups), route_vs(),
                          dest_rule(f"{{connectionPool: {{tcp: {{maxConnections: {per_cluster}}}}}}}")))
    loop = asyncio.new_event_loop()
    try:
        baseline = open_sockets()
        tasks = 1000

        async def run() -> None:
            client = mesh.async_client(timeout=30.0)

            async def one(i: int) -> str:
                body = f"task {i}".encode()
                r = await client.post("http://svc:8080/c", content=body, headers={"x-id": str(i)})
                assert r.status_code == 200, (r.status_code, r.text)
                assert echo(r)["body"] == body.decode()
                return served_by(r)

            names = await asyncio.gather(*(one(i) for i in range(tasks)))
            assert len(names) == tasks
            assert set(names) == {u.name for u in ups}
            transport = client._transport
            assert isinstance(transport, AsyncMeshTransport)
            assert_pools_idle(transport)
            assert sum(p.stats()[0] for p in transport._pools.values()) <= per_cluster
            await client.aclose()
            assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        loop.run_until_complete(run())
        ids = Counter(x.headers["x-id"] for up in ups for x in up.received)
        assert len(ids) == tasks
        assert set(ids.values()) == {1}
        assert_counters_clean(mesh)
        assert settle(baseline) <= baseline
    finally:
        loop.close()


# -- the cancellation storm -----------------------------------------------------------------------


def _storm_config(slow: Upstream, failing: Upstream, narrow: Upstream) -> str:
    return docs(
        service_yaml("slow", "ns1", [slow]), service_yaml("failing", "ns1", [failing]),
        service_yaml("narrow", "ns1", [narrow]),
        route_vs(host="slow"),
        route_vs("retries: {attempts: 5, retryOn: 5xx, backoff: 0.2s}", host="failing"),
        route_vs(host="narrow"),
        # Counted limits everywhere (a generous http2MaxRequests), so leaked tickets would show.
        dest_rule("{connectionPool: {http: {http2MaxRequests: 100000, maxRetries: 100000}}}", host="slow"),
        dest_rule("{connectionPool: {http: {http2MaxRequests: 100000, maxRetries: 100000}}}", host="failing"),
        # Five connections for hundreds of requests: most wait for a pool slot when cancelled.
        dest_rule("{connectionPool: {tcp: {maxConnections: 5}}}", host="narrow"),
    )


@pytest.mark.usefixtures("quiet_threads")
def test_cancellation_storm_leaves_the_pools_healthy(servers: StartUpstream, make_mesh: MakeMesh) -> None:
    slow = listen_wide(servers("slow-v1"))
    failing = listen_wide(servers("failing-v1"))
    narrow = listen_wide(servers("narrow-v1"))
    slow.respond(Script(200, delay=0.5))
    failing.respond(Script(503))
    narrow.respond(Script(200, delay=0.2))
    mesh = make_mesh(_storm_config(slow, failing, narrow))
    rng = random.Random(1093)
    loop = asyncio.new_event_loop()
    try:
        baseline = open_sockets()

        async def storm() -> Counter[str]:
            client = mesh.async_client(timeout=httpx.Timeout(10.0, pool=3.0))
            transport = client._transport
            assert isinstance(transport, AsyncMeshTransport)
            hosts = ("slow", "failing", "narrow")
            tasks = [asyncio.create_task(client.post(f"http://{hosts[i % 3]}:8080/s", content=f"storm {i}".encode()))
                     for i in range(1000)]
            for task in tasks:
                loop.call_later(rng.uniform(0.0, 0.5), task.cancel)
            done = await asyncio.gather(*tasks, return_exceptions=True)
            kinds = Counter("cancelled" if isinstance(d, asyncio.CancelledError) else
                            type(d).__name__ if isinstance(d, BaseException) else str(d.status_code) for d in done)
            await asyncio.sleep(0.1)  # let cancelled connections finish closing
            assert_pools_idle(transport)
            assert_counters_clean(mesh)
            # The next 100 succeed: every host healthy and fast now, the narrow pool included.
            slow.respond(None)
            failing.respond(None)
            narrow.respond(None)
            after = await asyncio.gather(
                *(client.get(f"http://{hosts[i % 3]}:8080/after", timeout=httpx.Timeout(10.0, pool=3.0))
                  for i in range(100)), return_exceptions=True)
            errors = [a for a in after if not isinstance(a, httpx.Response)]
            assert not errors, errors[:3]  # no PoolTimeout: no slot was orphaned
            assert all(isinstance(a, httpx.Response) and a.status_code == 200 for a in after)
            assert_pools_idle(transport)
            assert_counters_clean(mesh)
            await client.aclose()
            assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            return kinds

        kinds = loop.run_until_complete(storm())
        # Most were cancelled somewhere on the way; none failed for another reason than its upstream.
        assert kinds["cancelled"] >= 500, kinds
        assert set(kinds) <= {"cancelled", "200", "503"}, kinds
        assert settle(baseline) <= baseline
    finally:
        loop.close()


# -- chaos ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    id: str
    body: bytes
    status: int
    flags: str
    local: bool  # a reply the mesh made (no upstream answer)
    answered_by: str | None
    seconds: float


ROUTE_TIMEOUT = 1.0
LOCAL_BODIES = ("upstream connect error", "upstream request timeout", "no healthy upstream")
ATTEMPTS = 2  # retries: at most 1 + ATTEMPTS tries per request
PAUSE = 0.02


def _flaky(seen: Received) -> Reply:
    return Reply(status=503 if random.random() < 0.5 else 200)


def _chaos_config(good: list[Upstream], slow: Upstream, failing: Upstream, flaky: Upstream, dead_port: int) -> str:
    return docs(
        dead_service_yaml("svc", "ns1", [*good, slow, failing, flaky], [dead_port]),
        route_vs(f"timeout: {ROUTE_TIMEOUT}s\n    retries: {{attempts: {ATTEMPTS}, perTryTimeout: 0.3s, "
                 "retryOn: '5xx,reset,connect-failure'}"),
        dest_rule("{connectionPool: {http: {http2MaxRequests: 20}}, outlierDetection: {consecutive5xxErrors: 3, "
                  "interval: 0.3s, baseEjectionTime: 0.4s, maxEjectionPercent: 40}}"),
    )


@pytest.mark.usefixtures("quiet_threads")
def test_chaos_every_caller_answered_in_time_and_no_body_lost_or_duplicated(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, mode: Mode
) -> None:
    good = [listen_wide(servers(f"svc-good-{i}")) for i in range(2)]
    slow = listen_wide(servers("svc-slow"))
    failing = listen_wide(servers("svc-failing"))
    flaky = listen_wide(servers("svc-flaky"))
    slow.respond(Script(200, delay=0.6))  # past the per-try timeout: every try there is cut
    failing.respond(Script(500))
    flaky.respond(_flaky)
    mesh = make_mesh(_chaos_config(good, slow, failing, flaky, free_port()))
    ups = [*good, slow, failing, flaky]
    baseline = open_sockets()
    sender = connect(mesh)
    run_for, workers = 3.0, 24
    sent: list[Sent] = []
    lock = threading.Lock()

    def record(rid: str, body: bytes, r: httpx.Response, seconds: float) -> None:
        by = echo(r)["name"] if r.status_code == 200 else None
        local = r.text.startswith(LOCAL_BODIES)
        with lock:
            sent.append(Sent(rid, body, r.status_code, r.headers.get(FLAGS, ""), local, by, seconds))

    def body_for(w: int, k: int) -> tuple[str, bytes]:
        rid = f"{w}-{k}"
        return rid, (f"chaos {rid} " * (1 + (w * 7 + k) % 40)).encode()

    end = time.monotonic() + run_for
    if mode == "sync":
        client = sender.client
        assert isinstance(client, httpx.Client)

        def worker(w: int) -> None:
            k = 0
            while time.monotonic() < end:
                rid, body = body_for(w, k)
                start = time.monotonic()
                r = client.post("http://svc:8080/chaos", content=body, headers={"x-id": rid})
                record(rid, body, r, time.monotonic() - start)
                k += 1
                if r.status_code != 200:
                    time.sleep(PAUSE)  # a caller that backs off a little after a failure

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(worker, range(workers)))
    else:
        aclient = sender.client
        assert isinstance(aclient, httpx.AsyncClient)

        async def aworker(w: int) -> None:
            k = 0
            while time.monotonic() < end:
                rid, body = body_for(w, k)
                start = time.monotonic()
                r = await aclient.post("http://svc:8080/chaos", content=body, headers={"x-id": rid})
                record(rid, body, r, time.monotonic() - start)
                k += 1
                if r.status_code != 200:
                    await asyncio.sleep(PAUSE)

        async def run() -> None:
            await asyncio.gather(*(aworker(w) for w in range(workers)))

        assert sender._loop is not None
        sender._loop.run_until_complete(run())

    assert len(sent) >= workers * 3, len(sent)
    # Every caller got an answer, and within the route timeout (plus scheduling slack).
    slowest = max(s.seconds for s in sent)
    assert slowest <= ROUTE_TIMEOUT + 1.0, slowest
    arrivals: dict[str, list[tuple[str, Received]]] = {}
    for up in ups:
        for x in up.received:
            arrivals.setdefault(x.headers["x-id"], []).append((up.name, x))
    statuses: Counter[str] = Counter()
    for s in sent:
        got = arrivals.get(s.id, [])
        statuses[f"{s.status} {s.flags}".strip()] += 1
        # Never altered, never more tries than the policy allows, no try sent twice.
        assert all(x.body == s.body for _, x in got), s.id
        tries = [x.headers[ATTEMPT] for _, x in got]
        assert len(tries) <= 1 + ATTEMPTS, (s.id, tries)
        assert len(set(tries)) == len(tries), (s.id, tries)
        assert set(tries) <= {str(n) for n in range(1, 2 + ATTEMPTS)}, (s.id, tries)
        if s.status == 200:  # delivered: the answering upstream got this very body
            assert any(name == s.answered_by for name, _ in got), s.id
        elif not s.local:  # an upstream's own failure answer: it was delivered
            assert got, s.id
            assert set(s.flags.split(",")) <= {"", "URX", "UO"}, s.flags
        else:  # a local reply: a connect failure, a cut try, an overflow or no healthy host
            assert set(s.flags.split(",")) <= {"UF", "UT", "UO", "UH", "URX", "UC"}, s.flags
    assert statuses["200"] >= len(sent) // 3, statuses  # the good endpoints carried the load
    assert len({s.id for s in sent}) == len(sent)
    assert set(arrivals) <= {s.id for s in sent}  # nothing arrived that no caller sent
    transport = sender.transport
    assert_pools_idle(transport)
    assert_counters_clean(mesh)
    sender.close()
    assert settle(baseline) <= baseline
