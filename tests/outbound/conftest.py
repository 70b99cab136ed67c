"""Fixtures for the outbound end-to-end tests: real loopback upstreams, meshes, and one
``send`` helper that drives either the sync or the async httpx client.

- ``servers``: a factory that starts ``Upstream``s and stops every one at teardown (in
  parallel, since each ``shutdown`` waits for the server's poll interval).
- ``trio``: three shared upstreams ``svc-v1``/``svc-v2``/``svc-v3`` (labels
  ``version: v1..v3``), started once per session; each test that asks for it gets
  them with empty ``received`` lists and the echo behaviour restored.
- ``make_mesh``: ``Mesh.from_yaml`` with a workload, closed at teardown.
- ``mode`` / ``connect``: ``connect(mesh)`` gives a ``Sender`` for the test's mode
  (``sync`` or ``async``; every test using ``connect`` runs for both); every client is
  closed at teardown. The async one runs on an event loop of its own, per test.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol

import httpx
import pytest

import pymesh
from pymesh.outbound.transport import AsyncMeshTransport, MeshTransport
from pymesh.testing.upstream import Upstream

Mode = Literal["sync", "async"]

# How long a bounded wait (for mirrors, which are fire-and-forget) may take.
WAIT = 5.0


def echo(response: httpx.Response) -> dict[str, Any]:
    """The JSON echo of an ``Upstream``: name, method, path, headers (lower-case), body."""
    data: dict[str, Any] = json.loads(response.content)
    return data


def served_by(response: httpx.Response) -> str:
    """Which upstream answered (the ``name`` in its echo)."""
    assert response.status_code == 200, (response.status_code, response.headers, response.text)
    name: str = echo(response)["name"]
    return name


def binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    """The range a Binomial(n, p) count stays in, ``sigmas`` standard deviations either side."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def vs(name: str, namespace: str, body: str, *, hosts: str = "[svc]", api: str = "networking.istio.io/v1",
       extra_meta: str = "") -> str:
    """A VirtualService document; ``body`` is the YAML under ``spec`` after ``hosts``."""
    meta = f"{{name: {name}, namespace: {namespace}{', ' + extra_meta if extra_meta else ''}}}"
    return f"apiVersion: {api}\nkind: VirtualService\nmetadata: {meta}\nspec:\n  hosts: {hosts}\n{body}"


def subsets_dr(host: str, namespace: str, *names: str, extra: str = "") -> str:
    """A DestinationRule with subsets ``vN`` selecting ``version: vN``."""
    subs = ", ".join(f"{{name: {n}, labels: {{version: {n}}}}}" for n in names)
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}-dr, "
            f"namespace: {namespace}}}\nspec:\n  host: {host}\n  subsets: [{subs}]\n{extra}")


def mesh_config(spec: str) -> str:
    """A ``pymesh/v1`` MeshConfig document; ``spec`` is the YAML under ``spec`` (indented two spaces)."""
    return f"apiVersion: pymesh/v1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n{spec}"


def docs(*parts: str) -> str:
    return "\n---\n".join(p.strip("\n") for p in parts if p) + "\n"


# -- upstreams ---------------------------------------------------------------------------------


def _stop_all(ups: list[Upstream]) -> None:
    threads = [threading.Thread(target=u.stop) for u in ups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


class StartUpstream(Protocol):
    def __call__(self, name: str, labels: Mapping[str, str] | None = None, *, locality: str = "") -> Upstream: ...


@pytest.fixture
def servers() -> Iterator[StartUpstream]:
    """``servers(name, labels, locality=...)`` starts a loopback upstream, stopped at teardown."""
    started: list[Upstream] = []

    def start(name: str, labels: Mapping[str, str] | None = None, *, locality: str = "") -> Upstream:
        up = Upstream(name, dict(labels or {}), locality=locality).start()
        started.append(up)
        return up

    yield start
    _stop_all(started)


@pytest.fixture(scope="session")
def _trio_servers() -> Iterator[tuple[Upstream, Upstream, Upstream]]:
    ups = [Upstream(f"svc-v{i}", {"version": f"v{i}"}).start() for i in (1, 2, 3)]
    yield ups[0], ups[1], ups[2]
    _stop_all(ups)


@pytest.fixture
def trio(_trio_servers: tuple[Upstream, Upstream, Upstream]) -> tuple[Upstream, Upstream, Upstream]:
    """Shared upstreams svc-v1/v2/v3, reset: nothing received, echo behaviour."""
    for u in _trio_servers:
        u.respond(None)
        u.reset()
    return _trio_servers


class RawEcho:
    """A loopback server that echoes every header line it received, repeats and order kept.

    ``Upstream``'s echo folds headers into a dict (the last repeat wins), which hides what
    ``add`` appended and whether ``remove`` ran first; this one answers
    ``{"name", "path", "target", "headers": [[name, value], ...]}``; ``target`` is the request
    line's target exactly as sent (``http.server`` rewrites a leading ``//`` in ``path``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        echo_name = name

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                target = self.requestline.split(" ")[1]  # as sent: http.server folds a leading // in .path
                payload = json.dumps({"name": echo_name, "path": self.path, "target": target,
                                      "headers": [[k.lower(), v] for k, v in self.headers.items()]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"raw-echo-{name}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def raw_headers(response: httpx.Response) -> list[tuple[str, str]]:
    """The header lines a ``RawEcho`` received, in order."""
    data = json.loads(response.content)
    return [(k, v) for k, v in data["headers"]]


@pytest.fixture
def raw_echo() -> Iterator[Callable[[str], RawEcho]]:
    """``raw_echo(name)`` starts a ``RawEcho``, stopped at teardown."""
    started: list[RawEcho] = []

    def start(name: str) -> RawEcho:
        server = RawEcho(name)
        started.append(server)
        return server

    yield start
    threads = [threading.Thread(target=s.stop) for s in started]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


# -- meshes ------------------------------------------------------------------------------------


class MakeMesh(Protocol):
    def __call__(self, text: str, *, namespace: str = "ns1", labels: Mapping[str, str] | None = None,
                 locality: str = "", name: str = "caller", address: str = "") -> pymesh.Mesh: ...


@pytest.fixture
def make_mesh() -> Iterator[MakeMesh]:
    """``make_mesh(yaml, namespace=..., labels=..., locality=..., address=...)``: a mesh running as that workload."""
    meshes: list[pymesh.Mesh] = []

    def make(text: str, *, namespace: str = "ns1", labels: Mapping[str, str] | None = None, locality: str = "",
             name: str = "caller", address: str = "") -> pymesh.Mesh:
        workload = pymesh.Workload(name=name, namespace=namespace, labels=dict(labels or {"app": name}),
                                   service_account=name, locality=locality, address=address)
        mesh = pymesh.Mesh.from_yaml(text, workload=workload)
        meshes.append(mesh)
        return mesh

    yield make
    for m in meshes:
        m.close()


# -- clients -----------------------------------------------------------------------------------


class Sender:
    """One httpx client (sync or async) through a mesh, driven synchronously by the test."""

    def __init__(self, mode: Mode, client: httpx.Client | httpx.AsyncClient,
                 transport: MeshTransport | AsyncMeshTransport, loop: asyncio.AbstractEventLoop | None) -> None:
        self.mode = mode
        self.client = client
        self.transport = transport
        self._loop = loop

    def send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        if isinstance(self.client, httpx.Client):
            return self.client.request(method, url, **kw)
        assert self._loop is not None
        return self._loop.run_until_complete(self.client.request(method, url, **kw))

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.send("GET", url, **kw)

    def many(self, n: int, url: str, method: str = "GET", **kw: Any) -> list[httpx.Response]:
        return [self.send(method, url, **kw) for _ in range(n)]

    def pump(self, seconds: float) -> None:
        """Let background work (async mirror tasks) run for a while."""
        if self._loop is not None:
            self._loop.run_until_complete(asyncio.sleep(seconds))
        else:
            time.sleep(seconds)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        """Poll ``predicate`` until true or ``timeout``; the async loop keeps running meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            self.pump(0.01)

    def close(self) -> None:
        if isinstance(self.client, httpx.Client):
            self.client.close()
        else:
            assert self._loop is not None
            self._loop.run_until_complete(self.client.aclose())


class Connect(Protocol):
    def __call__(self, mesh: pymesh.Mesh, *, raise_errors: bool = False, mirror_capacity: int | None = None,
                 **client_kw: Any) -> Sender: ...


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    value: Mode = request.param
    return value


@pytest.fixture
def connect(mode: Mode) -> Iterator[Connect]:
    """``connect(mesh, raise_errors=..., mirror_capacity=..., **httpx_kwargs)`` -> ``Sender``.

    Without ``mirror_capacity`` the client comes from ``mesh.client()`` / ``mesh.async_client()``;
    with it, a ``MeshTransport`` / ``AsyncMeshTransport`` is built directly.
    """
    senders: list[Sender] = []
    loop = asyncio.new_event_loop() if mode == "async" else None

    def make(mesh: pymesh.Mesh, *, raise_errors: bool = False, mirror_capacity: int | None = None,
             **client_kw: Any) -> Sender:
        sender: Sender
        if mode == "sync":
            if mirror_capacity is None:
                client = mesh.client(raise_errors=raise_errors, **client_kw)
            else:
                client = httpx.Client(transport=MeshTransport(mesh, raise_errors=raise_errors,
                                                              mirror_capacity=mirror_capacity), **client_kw)
            transport = client._transport
            assert isinstance(transport, MeshTransport)
            sender = Sender(mode, client, transport, None)
        else:
            assert loop is not None

            async def build() -> httpx.AsyncClient:  # created inside the loop that will drive it
                if mirror_capacity is None:
                    return mesh.async_client(raise_errors=raise_errors, **client_kw)
                return httpx.AsyncClient(transport=AsyncMeshTransport(mesh, raise_errors=raise_errors,
                                                                      mirror_capacity=mirror_capacity), **client_kw)

            aclient = loop.run_until_complete(build())
            atransport = aclient._transport
            assert isinstance(atransport, AsyncMeshTransport)
            sender = Sender(mode, aclient, atransport, loop)
        senders.append(sender)
        return sender

    try:
        yield make
    finally:
        for s in senders:
            s.close()
        if loop is not None:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
