"""End to end, retries through the mesh against real loopback upstreams, sync and async.

Covered: a retry that succeeds after N failures with the request body byte-exact on every
try and ``x-pymesh-attempt-count`` counting 1, 2, 3; ``attempts`` bounding the tries (the
last upstream answer reaches the caller); ``retryOn`` conditions that do not cover the
answer (no retry); Istio >= 1.24's default policy when a route has no ``retries`` (a 503 is
not retried, a connect failure is, twice, and moves to a live endpoint);
``MeshConfig.defaultHttpRetryPolicy``; ``attempts: 0`` (and the tutorial's
``virtual-service-no-retries.yml``); bodies that cannot be replayed (a generator, a body over
the replay buffer) sent once and never retried, with no ``httpx.StreamConsumed``.

What reaches the caller (``call.py``, ``classify.py``, ``retry.py``): the last upstream answer
as the upstream sent it, with ``x-pymesh-flags: URX`` added when the retries ran out (no flag
when retryOn did not cover it or the body could not be replayed); a try that ended without a
response becomes a local reply whose ``x-pymesh-flags`` joins the try's flag and URX when the
retries ran out (``UF,URX``), or is the bare flag when retries were off (``UF``). A retried
answer is drained (when small) so its connection goes back to its pool.

Shared with the other ``*_e2e`` files of this issue: ``fire`` / ``fire_timed`` (sync: one
thread per request; async: one task per request, on the test's loop), ``Script`` (a scripted
upstream behaviour that records arrival times), ``Gauge`` (records the upstream's peak
concurrency), ``route_vs`` / ``dest_rule``, ``dead_service_yaml`` / ``free_port`` (endpoints
nothing listens on) and ``listen_wide`` (a deep accept queue for bursts of connections).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import pymesh
from pymesh.outbound.call import REPLAY_LIMIT
from pymesh.testing.upstream import Received, Reply, Upstream, service_yaml
from tests.conftest import shared_dir
from tests.outbound.conftest import Connect, MakeMesh, Sender, StartUpstream, docs, echo, mesh_config, served_by, vs

URL = "http://svc:8080/things"
ATTEMPT = "x-pymesh-attempt-count"
FLAGS = "x-pymesh-flags"
TUTORIAL = shared_dir() / "conformance" / "istio-tutorial"
# Every byte value, CR/LF and NUL included, so a replay that re-encodes or truncates shows.
BODY = bytes(range(256)) * 16 + b"\r\n\x00end"


# -- shared helpers (imported by the other *_e2e files) --------------------------------------------


class Script:
    """An upstream behaviour: answers ``statuses`` in turn (the last repeats); records arrival times.

    A non-200 answer has the body ``try <n>: <status>`` so a test can tell which try's answer
    reached the caller; a 200 is the upstream's JSON echo.
    """

    def __init__(self, *statuses: int, delay: float = 0.0, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.statuses = statuses or (200,)
        self.delay = delay
        self.headers = headers
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seen: Received) -> Reply:
        with self._lock:
            n = len(self.times)
            self.times.append(time.monotonic())
        status = self.statuses[min(n, len(self.statuses) - 1)]
        body = None if status == 200 else f"try {n + 1}: {status}".encode()
        return Reply(status=status, body=body, delay=self.delay, headers=self.headers)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.times)


class Gauge:
    """An upstream behaviour that sleeps ``delay`` and records how many requests it held at once."""

    def __init__(self, delay: float, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.current = 0
        self.peak = 0
        self.total = 0
        self._lock = threading.Lock()

    def __call__(self, seen: Received) -> Reply:
        with self._lock:
            self.current += 1
            self.total += 1
            self.peak = max(self.peak, self.current)
        try:
            time.sleep(self.delay)
        finally:
            with self._lock:
                self.current -= 1
        return Reply(status=self.status, body=None if self.status == 200 else b"busy")


Outcome = httpx.Response | BaseException


def fire_timed(sender: Sender, n: int, method: str, url: str, *,
               kw: Callable[[int], Mapping[str, Any]] = lambda i: {}) -> list[tuple[Outcome, float]]:
    """Send ``n`` requests at once (threads, or tasks on the sender's loop): each outcome and its duration.

    An outcome is the response, or the exception the request raised.
    """
    if isinstance(sender.client, httpx.Client):
        client = sender.client

        def one(i: int) -> tuple[Outcome, float]:
            start = time.monotonic()
            try:
                out: Outcome = client.request(method, url, **kw(i))
            except Exception as exc:  # collected for the test to judge
                out = exc
            return out, time.monotonic() - start

        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n)))
    aclient = sender.client
    assert isinstance(aclient, httpx.AsyncClient)

    async def aone(i: int) -> tuple[Outcome, float]:
        start = time.monotonic()
        try:
            out: Outcome = await aclient.request(method, url, **kw(i))
        except Exception as exc:
            out = exc
        return out, time.monotonic() - start

    async def run() -> list[tuple[Outcome, float]]:
        return await asyncio.gather(*(aone(i) for i in range(n)))

    loop = sender._loop
    assert loop is not None
    return loop.run_until_complete(run())


def fire(sender: Sender, n: int, method: str, url: str, *,
         kw: Callable[[int], Mapping[str, Any]] = lambda i: {}) -> list[Outcome]:
    """``fire_timed`` without the durations."""
    return [out for out, _ in fire_timed(sender, n, method, url, kw=kw)]


def listen_wide(up: Upstream, backlog: int = 1024) -> Upstream:
    """Give a started upstream a deep accept queue (``socketserver``'s default is 5).

    Under a burst of new connections a queue of 5 overflows: the kernel drops handshakes, the
    client resends them after 1 s, and some connections end reset (a try the mesh sees as UC):
    slow, flaky tests that measure the kernel, not the mesh.
    """
    server = up._server
    assert server is not None
    server.socket.listen(backlog)
    return up


def responses(outcomes: Sequence[Outcome]) -> list[httpx.Response]:
    """The outcomes, asserting each is a response (no exception reached a caller)."""
    errors = [o for o in outcomes if not isinstance(o, httpx.Response)]
    assert not errors, errors[:3]
    return [o for o in outcomes if isinstance(o, httpx.Response)]


def route_vs(route_extra: str = "", *, host: str = "svc", namespace: str = "ns1") -> str:
    """A VirtualService for ``host`` with one route to it; ``route_extra``: more keys of that route."""
    extra = f"\n    {route_extra}" if route_extra else ""
    return vs(host, namespace, f"  http:\n  - route: [{{destination: {{host: {host}}}}}]{extra}\n", hosts=f"[{host}]")


def dest_rule(traffic_policy: str, *, host: str = "svc", namespace: str = "ns1") -> str:
    """A DestinationRule for ``host`` with ``trafficPolicy: <traffic_policy>`` (flow YAML)."""
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}-dr, "
            f"namespace: {namespace}}}\nspec:\n  host: {host}\n  trafficPolicy: {traffic_policy}\n")


def dead_service_yaml(host: str, namespace: str, live: Sequence[Upstream], dead_ports: Sequence[int]) -> str:
    """``service_yaml`` for ``live`` plus WorkloadEntries on ``dead_ports`` (nothing listens there)."""
    text = service_yaml(host, namespace, live)
    app = host.split(".")[0]
    for n, port in enumerate(dead_ports):
        text += (f"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: dead-{n}, "
                 f"namespace: {namespace}}}\nspec:\n  address: 127.0.0.1\n  ports: {{http: {port}}}\n"
                 f"  labels: {{app: {app}}}\n")
    return text


def count_connections(up: Upstream) -> Callable[[], int]:
    """Count the connections a started upstream accepts from now on; returns the reader."""
    server = up._server
    assert server is not None
    accepted = [0]
    accept = server.get_request

    def counting() -> Any:
        accepted[0] += 1
        return accept()

    server.get_request = counting  # type: ignore[method-assign]
    return lambda: accepted[0]


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def attempts_seen(up: Upstream) -> list[str]:
    return [r.headers.get(ATTEMPT, "") for r in up.received]


# -- retries succeed after failures, body intact ---------------------------------------------------


@pytest.mark.parametrize("retry_on", ["5xx", "503", "gateway-error", "retriable-status-codes,503"])
def test_retry_succeeds_after_two_503s_with_the_body_byte_exact(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, retry_on: str
) -> None:
    up = servers("svc-v1")
    script = Script(503, 503, 200)
    up.respond(script)
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          route_vs(f"retries: {{attempts: 3, retryOn: '{retry_on}'}}")))
    r = connect(mesh).send("POST", URL, content=BODY, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, (r.status_code, r.text)
    assert served_by(r) == "svc-v1"
    assert FLAGS not in r.headers
    assert [x.body for x in up.received] == [BODY, BODY, BODY]
    assert [x.headers["content-length"] for x in up.received] == [str(len(BODY))] * 3
    assert [x.method for x in up.received] == ["POST"] * 3
    assert attempts_seen(up) == ["1", "2", "3"]
    assert echo(r)["headers"][ATTEMPT] == "3"  # the answer is the third try's


def test_retry_moves_to_another_endpoint_each_try(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ups = [servers(f"svc-{i}") for i in range(3)]
    for up in ups:
        up.respond(Script(503))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", ups), route_vs("retries: {attempts: 2, retryOn: 5xx}")))
    sender = connect(mesh)
    for _ in range(5):
        r = sender.send("PUT", URL, content=BODY)
        assert r.status_code == 503
    # Envoy's previous-hosts predicate: the three tries of each request go to three endpoints.
    assert [up.count() for up in ups] == [5, 5, 5]
    for up in ups:
        assert all(x.body == BODY for x in up.received)


def test_attempts_bound_the_tries_and_the_last_answer_reaches_the_caller(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("retries: {attempts: 2, retryOn: 5xx}")))
    r = connect(mesh).send("POST", URL, content=BODY)
    assert r.status_code == 503
    assert r.text == "try 3: 503"  # exactly 1 + attempts tries, and the caller gets the last one
    assert up.count() == 3
    assert attempts_seen(up) == ["1", "2", "3"]
    assert r.headers[FLAGS] == "URX"  # the upstream's answer, flagged: the retries ran out


def test_connect_failures_exhaust_into_a_local_reply_flagged_uf_urx(
    make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(docs(dead_service_yaml("svc", "ns1", [], [free_port()]),
                          route_vs("retries: {attempts: 2, retryOn: connect-failure}")))
    r = connect(mesh).get(URL)
    assert r.status_code == 503
    assert r.headers[FLAGS] == "UF,URX"
    assert r.text.startswith("upstream connect error or disconnect/reset before headers. reset reason: connection")


def test_connect_failure_with_raise_errors_raises_a_typed_connect_error(
    make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(docs(dead_service_yaml("svc", "ns1", [], [free_port()]), route_vs()))
    sender = connect(mesh, raise_errors=True)
    with pytest.raises(pymesh.UpstreamConnectError) as info:
        sender.get(URL)
    assert isinstance(info.value, httpx.ConnectError)
    assert (info.value.status, info.value.flags) == (503, "UF,URX")


@pytest.mark.parametrize(("retry_on", "statuses", "tries", "status"), [
    ("gateway-error", (500, 200), 1, 500),  # 500 is not a gateway error
    ("503", (500, 200), 1, 500),  # only the listed code
    ("502,504", (503, 200), 1, 503),
    ("connect-failure", (503, 200), 1, 503),  # the upstream answered: no connect failure
    ("reset", (503, 200), 1, 503),
    ("retriable-4xx", (404, 200), 1, 404),  # retriable-4xx is 409 only
    ("retriable-4xx", (409, 200), 2, 200),
    ("gateway-error", (502, 504, 200), 3, 200),
    ("5xx", (500, 200), 2, 200),
    ("5xx", (404, 200), 1, 404),  # a 4xx is an answer
])
def test_retry_on_decides_which_answers_are_retried(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, retry_on: str, statuses: tuple[int, ...],
    tries: int, status: int
) -> None:
    up = servers("svc-v1")
    up.respond(Script(*statuses))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          route_vs(f"retries: {{attempts: 3, retryOn: '{retry_on}'}}")))
    r = connect(mesh).send("POST", URL, content=BODY)
    assert r.status_code == status
    assert up.count() == tries
    assert all(x.body == BODY for x in up.received)


def test_retries_block_without_retry_on_keeps_the_default_conditions(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503, 200))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("retries: {attempts: 3}")))
    r = connect(mesh).get(URL)
    assert (r.status_code, up.count()) == (503, 1)  # the default conditions have no 503


# -- Istio's default retry policy (>= 1.24) ----------------------------------------------------------


@pytest.mark.parametrize("with_vs", [True, False], ids=["vs-without-retries", "no-virtual-service"])
def test_default_policy_does_not_retry_a_503(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, with_vs: bool
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503, 200))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs() if with_vs else ""))
    r = connect(mesh).send("POST", URL, content=BODY)
    assert r.status_code == 503
    assert up.count() == 1
    assert FLAGS not in r.headers


@pytest.mark.parametrize("with_vs", [True, False], ids=["vs-without-retries", "no-virtual-service"])
def test_default_policy_retries_a_connect_failure_on_a_live_endpoint(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, with_vs: bool
) -> None:
    live = servers("svc-live")
    mesh = make_mesh(docs(dead_service_yaml("svc", "ns1", [live], [free_port()]), route_vs() if with_vs else ""))
    sender = connect(mesh)
    n = 24
    for r in sender.many(n, URL, method="POST", content=BODY):
        assert served_by(r) == "svc-live"
    assert live.count() == n  # every request answered by the live endpoint, each received once
    assert all(x.body == BODY for x in live.received)
    seen = attempts_seen(live)
    assert set(seen) <= {"1", "2"}
    assert "2" in seen  # some first tries went to the dead endpoint (P(none) = 2^-24)


def test_default_policy_makes_two_retries_on_connect_failure(
    make_mesh: MakeMesh, connect: Connect
) -> None:
    ports = [free_port() for _ in range(3)]
    mesh = make_mesh(docs(dead_service_yaml("svc", "ns1", [], ports), route_vs()))
    r = connect(mesh).get(URL)
    assert (r.status_code, r.headers[FLAGS]) == (503, "UF,URX")  # 1 + 2 tries, then exhausted


def test_default_policy_two_dead_of_three_is_still_answered(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    live = servers("svc-live")
    mesh = make_mesh(docs(dead_service_yaml("svc", "ns1", [live], [free_port(), free_port()]), route_vs()))
    sender = connect(mesh)
    # Two dead of three: previous-hosts means the third try at the latest is the live one.
    for r in sender.many(12, URL):
        assert served_by(r) == "svc-live"
    assert live.count() == 12


def test_mesh_default_http_retry_policy_replaces_istios_default(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503, 503, 200))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs(),
                          mesh_config("  defaultHttpRetryPolicy: {attempts: 2, retryOn: '503'}")))
    r = connect(mesh).send("POST", URL, content=BODY)
    assert r.status_code == 200
    assert attempts_seen(up) == ["1", "2", "3"]
    assert all(x.body == BODY for x in up.received)


def test_retried_answer_gives_its_connection_back_to_the_pool(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503, 503, 200))
    accepted = count_connections(up)
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("retries: {attempts: 3, retryOn: '503'}")))
    r = connect(mesh).get(URL)
    assert r.status_code == 200
    assert up.count() == 3
    assert accepted() == 1  # the small 503 bodies were drained: one connection for the three tries


# -- attempts: 0 ----------------------------------------------------------------------------------


def test_attempts_zero_disables_retries(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503, 200))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("retries: {attempts: 0}")))
    r = connect(mesh).get(URL)
    assert (r.status_code, up.count()) == (503, 1)

    dead = make_mesh(docs(dead_service_yaml("svc", "ns1", [], [free_port()]), route_vs("retries: {attempts: 0}")))
    r = connect(dead).get(URL)
    assert (r.status_code, r.headers[FLAGS]) == (503, "UF")  # one try, no URX: nothing was retried


def test_tutorial_no_retries_file_turns_off_the_default_connect_failure_retry(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    live = servers("recommendation-v1", {"version": "v1"})
    text = (TUTORIAL / "virtual-service-no-retries.yml").read_text()
    assert text.count("attempts: 0") == 3
    mesh = make_mesh(docs(dead_service_yaml("recommendation", "tutorial", [live], [free_port()]), text),
                     namespace="tutorial", name="preference")
    assert mesh.route("GET", "http://recommendation:8080/").virtual_service == "tutorial/no-retries-recommendation"
    statuses = [r.status_code for r in connect(mesh).many(30, "http://recommendation:8080/")]
    # Without retries a request whose pick is the dead endpoint fails: about half of them.
    assert set(statuses) == {200, 503}
    assert live.count() == statuses.count(200)
    assert all(x.headers[ATTEMPT] == "1" for x in live.received)


# -- bodies that cannot be replayed -----------------------------------------------------------------


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def _achunks(data: bytes, size: int = 4096) -> Any:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_streaming_body_is_sent_once_and_never_retried(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503, 200))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("retries: {attempts: 3, retryOn: 5xx}")))
    sender = connect(mesh)
    data = BODY * 8
    # A content-length keeps httpx from chunking (the test upstream reads content-length bodies).
    stream: Any = _chunks(data) if sender.mode == "sync" else _achunks(data)
    r = sender.send("POST", URL, content=stream, headers={"content-length": str(len(data))})
    assert r.status_code == 503  # the failure reaches the caller: no replay, no StreamConsumed
    assert r.text == "try 1: 503"
    assert [x.body for x in up.received] == [data]
    # The same request with a bytes body is retried: the difference is only the body's kind.
    r = sender.send("POST", URL, content=data)
    assert r.status_code == 200
    assert [x.body for x in up.received] == [data, data]


def test_streaming_body_to_a_dead_endpoint_gives_the_connect_failure_not_stream_consumed(
    make_mesh: MakeMesh, connect: Connect
) -> None:
    mesh = make_mesh(docs(dead_service_yaml("svc", "ns1", [], [free_port()]), route_vs()))
    sender = connect(mesh)
    stream: Any = _chunks(BODY) if sender.mode == "sync" else _achunks(BODY)
    r = sender.send("POST", URL, content=stream, headers={"content-length": str(len(BODY))})
    assert (r.status_code, r.headers[FLAGS]) == (503, "UF")


def test_body_over_the_replay_buffer_is_sent_once_and_never_retried(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(503, 200))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), route_vs("retries: {attempts: 3, retryOn: 5xx}")))
    sender = connect(mesh)
    big = bytes(range(256)) * (REPLAY_LIMIT // 256) + b"!"
    r = sender.send("POST", URL, content=big)
    assert r.status_code == 503
    assert [x.body for x in up.received] == [big]
    # At the limit exactly, the body is buffered and replayed.
    up.reset()
    up.respond(Script(503, 200))
    exact = big[:REPLAY_LIMIT]
    r = sender.send("POST", URL, content=exact)
    assert r.status_code == 200
    assert [x.body for x in up.received] == [exact, exact]


# -- retries under concurrency keep each request's body ------------------------------------------


def test_concurrent_retries_each_replay_their_own_body(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    ups = [listen_wide(servers(f"svc-{i}")) for i in range(2)]
    for up in ups:
        up.respond(lambda seen: Reply(status=503 if seen.headers.get(ATTEMPT) == "1" else 200))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", ups), route_vs("retries: {attempts: 2, retryOn: '503'}")))
    n = 40
    outs = responses(fire(connect(mesh), n, "POST", URL,
                          kw=lambda i: {"content": f"request {i} ".encode() * (i + 1), "headers": {"x-id": str(i)}}))
    assert [r.status_code for r in outs] == [200] * n, [(r.status_code, r.headers.get(FLAGS)) for r in outs]
    by_id: dict[str, list[bytes]] = {}
    for up in ups:
        for x in up.received:
            by_id.setdefault(x.headers["x-id"], []).append(x.body)
    assert sorted(by_id, key=int) == [str(i) for i in range(n)]
    for i in range(n):
        assert by_id[str(i)] == [f"request {i} ".encode() * (i + 1)] * 2  # two tries, same bytes
