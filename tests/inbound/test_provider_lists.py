"""Mixer ``listchecker`` lists fetched from ``providerUrl``: fetched, refreshed, dropped after their
ttl, failing closed without a list; end to end through the middleware with a loopback list server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import pymesh
from pymesh import asgi
from pymesh.inbound.lists import ProviderList
from pymesh.testing.upstream import Reply, Upstream
from tests.inbound.helpers import TIMEOUT, UvicornThread


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fetched_list_is_used_then_dropped_after_its_ttl() -> None:
    bodies: list[bytes | OSError] = [b"alpha\nbeta\n\n", OSError("down")]
    clock = Clock()

    def fetch(url: str, timeout: float) -> bytes:
        item = bodies.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    plist = ProviderList("http://lists/x", refresh_interval=10, ttl=30, fetch=fetch, clock=clock, background=False)
    assert plist.entries() is None
    assert not plist.ready
    plist.refresh()
    assert plist.ready
    assert plist.entries() == ("alpha", "beta")
    match = plist.matcher("STRINGS")
    assert match is not None
    assert match("beta")
    assert not match("gamma")
    clock.now += 20
    plist.refresh()  # fails: the last list stays within its ttl
    assert plist.last_error == "down"
    assert plist.entries() == ("alpha", "beta")
    clock.now += 11  # 31 s since the last good fetch
    assert plist.entries() is None
    assert plist.matcher("STRINGS") is None


def test_ip_and_case_insensitive_lists() -> None:
    ips = ProviderList("http://l", refresh_interval=5, ttl=10, fetch=lambda u, t: b"10.1.0.0/16\n192.168.1.7\nbogus\n",
                       background=False)
    ips.refresh()
    match = ips.matcher("IP_ADDRESSES")
    assert match is not None
    assert (match("10.1.2.3"), match("192.168.1.7"), match("192.168.1.8")) == (True, True, False)
    names = ProviderList("http://l", refresh_interval=5, ttl=10, fetch=lambda u, t: b"Alice\n", background=False)
    names.refresh()
    folded = names.matcher("CASE_INSENSITIVE_STRINGS")
    assert folded is not None
    assert folded("ALICE")


WHITELIST = """apiVersion: config.istio.io/v1alpha2
kind: listchecker
metadata: {name: allowed, namespace: shop}
spec:
  providerUrl: URL
  refreshInterval: 1s
  ttl: 3s
  blacklist: false
---
apiVersion: config.istio.io/v1alpha2
kind: listentry
metadata: {name: caller, namespace: shop}
spec:
  value: request.headers["x-user"]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: check-user, namespace: shop}
spec:
  actions:
  - handler: allowed.listchecker
    instances: [caller.listentry]
"""


@pytest.fixture
def list_server() -> Iterator[Upstream]:
    up = Upstream("lists").start()
    up.respond(Reply(200, (("content-type", "text/plain"),), b"alice\nbob\n"))
    yield up
    up.stop()


def test_the_middleware_checks_against_the_fetched_list(list_server: Upstream) -> None:
    text = WHITELIST.replace("URL", f"{list_server.url}/users")
    workload = pymesh.Workload(name="web", namespace="shop", labels={"app": "web"}, service_account="web")
    with pymesh.Mesh.from_yaml(text, workload=workload) as mesh:
        app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
        with UvicornThread(asgi.MeshMiddleware(app, mesh=mesh)) as server:
            def ask(user: str) -> httpx.Response:
                return httpx.get(server.url, headers={"x-user": user}, timeout=TIMEOUT)

            assert ask("alice").status_code == 200  # the first request waited for the first fetch
            denied = ask("mallory")
            assert (denied.status_code, denied.text) == (
                403, "PERMISSION_DENIED:allowed.listchecker.shop:mallory is not whitelisted")
            list_server.respond(Reply(200, (), b"mallory\n"))
            deadline = time.monotonic() + 5.0
            while ask("mallory").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)  # refreshed every second
            assert ask("mallory").status_code == 200
            assert ask("alice").status_code == 403  # the new list replaced the old one
            list_server.respond(Reply(500, (), b"broken"))
            deadline = time.monotonic() + 8.0
            while ask("mallory").status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            gone = ask("mallory")  # not refreshed within the 3 s ttl: every check fails closed
            assert gone.status_code == 503
            assert "is not available" in gone.text
