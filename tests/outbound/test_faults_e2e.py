"""End to end, VirtualService fault injection against real loopback upstreams, sync and async.

Covered: ``abort`` at 50% over 400 requests within binomial bounds, with the configured status,
``fault filter abort``, flag FI, never reaching the upstream and never retried; the seedable
random source (same seed, same aborts); ``delay`` adding its ``fixedDelay`` and not counting
against the route ``timeout`` (Envoy starts the route timer after the fault filter); delay and
abort together (DI,FI); ``grpcStatus`` aborts (HTTP 200, trailers-only ``grpc-status``); a fault
without ``percentage`` never firing; and real corpus files: Istio 1.0's
``virtual-service-ratings-test-delay.yaml`` (``percent: 100``, 7 s, replaced by a short delay),
bookinfo's ratings abort and details abort, the tutorial's ``virtual-service-recommendation-503.yml``
and ``-delay.yml`` (``percent: 50``, 7 s, replaced by a short delay).

What reaches the caller: an abort is a local reply with ``x-pymesh-flags: FI`` (``DI,FI`` when
it was delayed too), returned even with ``raise_errors=True`` (a fault is an answer, not an
error). A delayed request that is not aborted gets the upstream's answer with ``x-pymesh-flags:
DI`` added, and DI joins whatever local reply follows (``DI,UT`` after a route timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import pymesh
from pymesh.testing.upstream import service_yaml
from tests.conftest import shared_dir
from tests.outbound.conftest import Connect, MakeMesh, Sender, StartUpstream, binomial_bounds, docs, served_by, vs
from tests.outbound.test_resilience_e2e import ATTEMPT, BODY, FLAGS, URL, Script

CONFORMANCE = shared_dir() / "conformance"
TUTORIAL = CONFORMANCE / "istio-tutorial"
BOOKINFO = CONFORMANCE / "bookinfo"
LEGACY = CONFORMANCE / "legacy"


def fault_vs(fault: str, route_extra: str = "") -> str:
    """A VirtualService for svc with one route carrying ``fault: <fault>`` (flow YAML)."""
    extra = f"\n    {route_extra}" if route_extra else ""
    return vs("svc", "ns1", f"  http:\n  - fault: {fault}\n    route: [{{destination: {{host: svc}}}}]{extra}\n")


def timed(sender: Sender, method: str, url: str, **kw: object) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = sender.send(method, url, **kw)
    return r, time.monotonic() - start


# -- abort ------------------------------------------------------------------------------------------


def test_abort_fifty_percent_within_binomial_bounds_never_reaches_the_upstream(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), fault_vs(
        "{abort: {httpStatus: 503, percentage: {value: 50}}}",
        "retries: {attempts: 3, retryOn: '5xx,503'}")))  # an abort is never retried, whatever retryOn says
    n = 400
    outs = connect(mesh).many(n, URL, method="POST", content=BODY)
    aborted = [r for r in outs if r.status_code == 503]
    served = [r for r in outs if r.status_code == 200]
    assert len(aborted) + len(served) == n
    low, high = binomial_bounds(n, 0.5)
    assert low <= len(aborted) <= high, len(aborted)
    for r in aborted:
        assert (r.text, r.headers[FLAGS], r.headers["content-type"]) == ("fault filter abort", "FI", "text/plain")
    for r in served:
        assert FLAGS not in r.headers
    assert up.count() == len(served)  # aborted requests never reach the upstream
    assert all(x.headers[ATTEMPT] == "1" and x.body == BODY for x in up.received)


@pytest.mark.parametrize("status", [400, 418, 500, 555])
def test_abort_answers_the_configured_status(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, status: int
) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          fault_vs(f"{{abort: {{httpStatus: {status}, percentage: {{value: 100}}}}}}")))
    for r in connect(mesh).many(5, URL):
        assert (r.status_code, r.text, r.headers[FLAGS]) == (status, "fault filter abort", "FI")
    assert up.count() == 0


def test_abort_is_an_answer_even_with_raise_errors(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          fault_vs("{abort: {httpStatus: 503, percentage: {value: 100}}}")))
    r = connect(mesh, raise_errors=True).get(URL)
    assert (r.status_code, r.headers[FLAGS]) == (503, "FI")


def test_fault_without_percentage_never_fires(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          fault_vs("{abort: {httpStatus: 503}, delay: {fixedDelay: 5s}}")))
    for r in connect(mesh).many(20, URL):
        assert served_by(r) == "svc-v1"  # current Istio: a missing percentage is 0%
    assert up.count() == 20


def test_same_seed_gives_the_same_aborts(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    text = docs(service_yaml("svc", "ns1", [up]), fault_vs("{abort: {httpStatus: 503, percentage: {value: 30}}}"))

    def pattern(seed: int) -> list[int]:
        mesh = make_mesh(text)
        mesh._runtime.rng.seed(seed)
        return [r.status_code for r in connect(mesh).many(60, URL)]

    first = pattern(7)
    assert pattern(7) == first
    assert pattern(8) != first
    assert 0 < first.count(503) < 60


def test_grpc_status_abort_is_a_trailers_only_grpc_answer(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), fault_vs(
        "{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}",
        "retries: {attempts: 2, retryOn: 'unavailable,5xx'}")))
    r = connect(mesh).send("POST", URL, content=b"\x00\x00\x00\x00\x00",
                           headers={"content-type": "application/grpc", "te": "trailers"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/grpc"
    assert r.headers["grpc-status"] == "14"
    assert r.headers["grpc-message"] == "fault filter abort"
    assert r.headers[FLAGS] == "FI"
    assert r.content == b""
    assert up.count() == 0  # neither sent nor retried


# -- delay ------------------------------------------------------------------------------------------


def test_delay_adds_the_fixed_delay(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          fault_vs("{delay: {fixedDelay: 0.3s, percentage: {value: 100}}}")))
    sender = connect(mesh)
    for _ in range(2):
        r, elapsed = timed(sender, "POST", URL, content=BODY)
        assert served_by(r) == "svc-v1"
        assert r.headers[FLAGS] == "DI"
        assert 0.29 <= elapsed < 1.3, elapsed
    assert up.count() == 2
    assert all(x.body == BODY for x in up.received)


def test_delayed_answer_is_flagged_di(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          fault_vs("{delay: {fixedDelay: 0.05s, percentage: {value: 100}}}")))
    r = connect(mesh).get(URL)
    assert r.status_code == 200
    assert r.headers.get(FLAGS) == "DI"


def test_delay_does_not_count_against_the_route_timeout(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          fault_vs("{delay: {fixedDelay: 0.5s, percentage: {value: 100}}}", "timeout: 0.3s")))
    r, elapsed = timed(connect(mesh), "GET", URL)
    assert served_by(r) == "svc-v1"  # the 0.3 s timeout starts after the 0.5 s delay
    assert r.headers[FLAGS] == "DI"
    assert elapsed >= 0.49


def test_route_timeout_starts_after_the_delay(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    up = servers("svc-v1")
    up.respond(Script(200, delay=1.5))
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]),
                          fault_vs("{delay: {fixedDelay: 0.3s, percentage: {value: 100}}}", "timeout: 0.4s")))
    r, elapsed = timed(connect(mesh), "GET", URL)
    assert (r.status_code, r.headers[FLAGS]) == (504, "DI,UT")
    assert 0.65 <= elapsed < 1.4, elapsed  # delay + timeout, well before the upstream's 1.8 s
    assert up.count() == 1


def test_delay_then_abort_is_flagged_di_fi(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    up = servers("svc-v1")
    mesh = make_mesh(docs(service_yaml("svc", "ns1", [up]), fault_vs(
        "{delay: {fixedDelay: 0.3s, percentage: {value: 100}}, abort: {httpStatus: 503, percentage: {value: 100}}}")))
    r, elapsed = timed(connect(mesh), "GET", URL)
    assert (r.status_code, r.text, r.headers[FLAGS]) == (503, "fault filter abort", "DI,FI")
    assert elapsed >= 0.29
    assert up.count() == 0


# -- corpus files -------------------------------------------------------------------------------------


def _ratings_mesh(make_mesh: MakeMesh, servers: StartUpstream, vs_text: str) -> tuple[pymesh.Mesh, Callable[[], int]]:
    v1 = servers("ratings-v1", {"version": "v1"})
    v2 = servers("ratings-v2", {"version": "v2"})
    dr = (BOOKINFO / "destination-rule-all.yaml").read_text()
    mesh = make_mesh(docs(service_yaml("ratings", "default", [v1, v2], port=9080), dr, vs_text),
                     namespace="default", name="reviews", labels={"app": "reviews", "version": "v2"})
    return mesh, lambda: v1.count() + v2.count()


RATINGS = "http://ratings:9080/ratings/0"
JASON = {"end-user": "jason"}


@pytest.mark.parametrize("vs_file", [LEGACY / "istio-1.0.0__virtual-service-ratings-test-delay.yaml",
                                     BOOKINFO / "virtual-service-ratings-test-delay.yaml"],
                         ids=["istio-1.0-percent", "current-percentage"])
def test_bookinfo_ratings_delay_for_jason(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, vs_file: Path
) -> None:
    text = vs_file.read_text()
    assert "fixedDelay: 7s" in text
    delay = 0.4
    mesh, arrivals = _ratings_mesh(make_mesh, servers, text.replace("fixedDelay: 7s", f"fixedDelay: {delay}s"))
    assert mesh.route("GET", RATINGS, headers=JASON).fault is not None
    assert mesh.route("GET", RATINGS).fault is None
    sender = connect(mesh)
    for _ in range(2):
        r, elapsed = timed(sender, "GET", RATINGS, headers=JASON)
        assert served_by(r) == "ratings-v1"
        assert delay - 0.01 <= elapsed < delay + 1.0
        r, elapsed = timed(sender, "GET", RATINGS, headers={"end-user": "someone"})
        assert served_by(r) == "ratings-v1"
        assert elapsed < delay  # only jason is delayed
    assert arrivals() == 4


@pytest.mark.parametrize("vs_file", [LEGACY / "istio-1.0.0__virtual-service-ratings-test-abort.yaml",
                                     BOOKINFO / "virtual-service-ratings-test-abort.yaml"],
                         ids=["istio-1.0-percent", "current-percentage"])
def test_bookinfo_ratings_abort_for_jason(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect, vs_file: Path
) -> None:
    mesh, arrivals = _ratings_mesh(make_mesh, servers, vs_file.read_text())
    sender = connect(mesh)
    for r in sender.many(5, RATINGS, headers=JASON):
        assert (r.status_code, r.text, r.headers[FLAGS]) == (500, "fault filter abort", "FI")
    assert arrivals() == 0
    for r in sender.many(5, RATINGS):
        assert served_by(r) == "ratings-v1"
    assert arrivals() == 5


def test_bookinfo_details_abort_555(servers: StartUpstream, make_mesh: MakeMesh, connect: Connect) -> None:
    v1 = servers("details-v1", {"version": "v1"})
    mesh = make_mesh(docs(service_yaml("details", "default", [v1], port=9080),
                          (BOOKINFO / "fault-injection-details-v1.yaml").read_text()),
                     namespace="default", name="productpage")
    for r in connect(mesh).many(5, "http://details:9080/details/0"):
        assert (r.status_code, r.text, r.headers[FLAGS]) == (555, "fault filter abort", "FI")
    assert v1.count() == 0



def test_tutorial_recommendation_503_fails_every_request(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    v1, v2 = servers("recommendation-v1", {"version": "v1"}), servers("recommendation-v2", {"version": "v2"})
    files = ("virtual-service-recommendation-503.yml", "destination-rule-recommendation-v1-v2.yml")
    mesh = make_mesh(docs(service_yaml("recommendation", "tutorial", [v1, v2]),
                          *((TUTORIAL / f).read_text() for f in files)), namespace="tutorial", name="preference")
    # "preference => Error: 503 - fault filter abort": every request, no pod reached.
    for r in connect(mesh).many(20, "http://recommendation:8080/"):
        assert (r.status_code, r.text, r.headers[FLAGS]) == (503, "fault filter abort", "FI")
    assert (v1.count(), v2.count()) == (0, 0)


def test_tutorial_recommendation_delay_delays_about_half(
    servers: StartUpstream, make_mesh: MakeMesh, connect: Connect
) -> None:
    v1, v2 = servers("recommendation-v1", {"version": "v1"}), servers("recommendation-v2", {"version": "v2"})
    text = (TUTORIAL / "virtual-service-recommendation-delay.yml").read_text()
    assert "fixedDelay: 7.000s" in text
    assert "percent: 50" in text
    delay = 0.2
    mesh = make_mesh(docs(service_yaml("recommendation", "tutorial", [v1, v2]),
                          (TUTORIAL / "destination-rule-recommendation.yml").read_text(),
                          text.replace("fixedDelay: 7.000s", f"fixedDelay: {delay}s")),
                     namespace="tutorial", name="preference")
    sender = connect(mesh)
    n = 30
    delayed = 0
    for _ in range(n):
        r, elapsed = timed(sender, "GET", "http://recommendation:8080/")
        assert r.status_code == 200  # a delay, never an error
        delayed += elapsed >= delay - 0.005
    low, high = binomial_bounds(n, 0.5)
    assert low <= delayed <= high, delayed
    assert 0 < delayed < n
    assert v1.count() + v2.count() == n  # subset app-recommendation: both versions
