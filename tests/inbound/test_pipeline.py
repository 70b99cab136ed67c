"""The framework-neutral pipeline and its contract with later steps: order, denials, header and
path write-back to ASGI and WSGI, compile once per snapshot, XFCC parsing."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

import pymesh
from pymesh import asgi, wsgi
from pymesh.inbound.core import STEP_FACTORIES, Context, Shared, Step
from pymesh.inbound.headers import TrustedProxies, strip_identity_headers, xfcc_peer
from pymesh.inbound.request import Denial, InboundRequest
from pymesh.snapshot.snapshot import Snapshot
from tests.inbound.helpers import WORKLOAD, peer_auth

MakeMesh = Callable[..., pymesh.Mesh]


def rewriting_step(snapshot: Snapshot, shared: Shared) -> Step:
    """A stand-in for later steps: rewrites the path, drops one header, adds another."""

    def step(request: InboundRequest, ctx: Context) -> Denial | None:
        if request.header_values("x-deny"):
            return Denial(403, b"RBAC: access denied", (("content-type", "text/plain"),))
        ctx.path = "/normalized/a%20b?x=1"
        request.headers = (*tuple(h for h in request.headers if h[0] != "authorization"), ("x-claim", "alice"))
        ctx.request_principal = "iss/alice"
        return None

    return step


FACTORIES = (*STEP_FACTORIES, ("rewrite", rewriting_step))


def asgi_call(mw: asgi.MeshMiddleware, scope: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"} if scope["type"] == "websocket" else {"type": "http.request"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    mw.app = app
    asyncio.run(mw(scope, receive, send))
    return sent, seen


def http_scope(headers: list[tuple[bytes, bytes]], kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "method": "GET", "path": "/a b", "raw_path": b"/a%20b", "query_string": b"q=1",
            "scheme": "http", "headers": headers, "client": ("10.0.0.9", 5555), "server": ("10.0.0.1", 8080)}


def test_asgi_gets_what_the_steps_decided(make_mesh: MakeMesh) -> None:
    mw = asgi.MeshMiddleware(Starlette(), mesh=make_mesh())
    mw.inbound.factories = FACTORIES
    _, seen = asgi_call(mw, http_scope([(b"host", b"web"), (b"authorization", b"Bearer t")]))
    assert seen["raw_path"] == b"/normalized/a%20b"
    assert seen["path"] == "/normalized/a b"
    assert seen["query_string"] == b"x=1"
    assert seen["headers"] == [(b"host", b"web"), (b"x-claim", b"alice")]
    assert seen["pymesh"].request_principal == "iss/alice"


def test_asgi_denial_from_a_later_step(make_mesh: MakeMesh) -> None:
    mw = asgi.MeshMiddleware(Starlette(), mesh=make_mesh())
    mw.inbound.factories = FACTORIES
    sent, seen = asgi_call(mw, http_scope([(b"x-deny", b"1")]))
    assert seen == {}
    assert sent[0]["status"] == 403
    assert (b"content-length", b"19") in sent[0]["headers"]
    assert sent[1]["body"] == b"RBAC: access denied"


def test_a_refused_peer_reaches_no_later_step(make_mesh: MakeMesh) -> None:
    reached: list[bool] = []

    def later(snapshot: Snapshot, shared: Shared) -> Step:
        def step(request: InboundRequest, ctx: Context) -> Denial | None:
            reached.append(True)
            return None

        return step

    mw = asgi.MeshMiddleware(Starlette(), mesh=make_mesh(peer_auth("STRICT")))
    mw.inbound.factories = (*STEP_FACTORIES, ("later", later))
    sent, _ = asgi_call(mw, http_scope([]))
    assert sent[0]["status"] == 401
    assert reached == []


def test_unchanged_headers_are_passed_through_as_they_came(make_mesh: MakeMesh) -> None:
    headers = [(b"host", b"web"), (b"x-a", b"1")]
    _, seen = asgi_call(asgi.MeshMiddleware(Starlette(), mesh=make_mesh()), http_scope(headers))
    assert seen["headers"] is headers
    assert seen["raw_path"] == b"/a%20b"


def test_websocket_refusal_closes_before_accept(make_mesh: MakeMesh) -> None:
    mw = asgi.MeshMiddleware(Starlette(), mesh=make_mesh(peer_auth("STRICT")))
    sent, seen = asgi_call(mw, http_scope([], kind="websocket"))
    assert seen == {}
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_wsgi_gets_what_the_steps_decided(make_mesh: MakeMesh) -> None:
    mw = wsgi.MeshMiddleware(lambda e, s: [], mesh=make_mesh())
    mw.inbound.factories = FACTORIES
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/a b", "QUERY_STRING": "q=1", "RAW_URI": "/a%20b?q=1",
        "SERVER_NAME": "web", "SERVER_PORT": "8080", "REMOTE_ADDR": "10.0.0.9", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(), "HTTP_HOST": "web", "HTTP_AUTHORIZATION": "Bearer t",
        "HTTP_X_FORWARDED_CLIENT_CERT": "URI=spiffe://cluster.local/ns/a/sa/b", "CONTENT_TYPE": "text/plain",
    }
    seen: dict[str, Any] = {}

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(env)
        return []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None, /) -> Callable[[bytes], object]:
        return lambda data: None

    mw.app = app
    mw(environ, start_response)
    assert seen["PATH_INFO"] == "/normalized/a b"
    assert seen["QUERY_STRING"] == "x=1"
    assert seen["RAW_URI"] == seen["REQUEST_URI"] == "/normalized/a%20b?x=1"
    assert "HTTP_AUTHORIZATION" not in seen
    assert "HTTP_X_FORWARDED_CLIENT_CERT" not in seen
    assert seen["HTTP_X_CLAIM"] == "alice"
    assert seen["CONTENT_TYPE"] == "text/plain"
    assert seen["pymesh"].request_principal == "iss/alice"


def test_compiled_once_per_snapshot(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(peer_auth("PERMISSIVE"))
    with pymesh.Mesh.from_path(config, workload=WORKLOAD) as mesh:
        mw = asgi.MeshMiddleware(Starlette(), mesh=mesh)
        first = mw.inbound.compiled()
        assert mw.inbound.compiled() is first
        assert first.names == ("peer", "paths")  # no request policy configured: no policy step
        config.write_text(peer_auth("STRICT"))
        mesh.reload()
        second = mw.inbound.compiled()
        assert second is not first
        assert second.peer.mode == "STRICT"


# -- identity headers ------------------------------------------------------------------------------


def test_strip_keeps_the_same_tuple_when_clean() -> None:
    headers = (("host", "web"), ("x-a", "1"))
    assert strip_identity_headers(headers) is headers
    dirty = (("host", "web"), ("x-forwarded-client-cert", "x"), ("x-envoy-peer-metadata", "y"))
    assert strip_identity_headers(dirty) == (("host", "web"),)


@pytest.mark.parametrize(
    ("values", "uri"),
    [
        (["URI=spiffe://cluster.local/ns/a/sa/b"], "spiffe://cluster.local/ns/a/sa/b"),
        # the last element is the one the nearest proxy added
        (["By=spiffe://td/ns/x/sa/y;URI=spiffe://cluster.local/ns/first/sa/s,"
          'By=spiffe://td/ns/x/sa/y;Subject="CN=a,O=b;c";URI=spiffe://cluster.local/ns/last/sa/s'],
         "spiffe://cluster.local/ns/last/sa/s"),
        (["URI=spiffe://cluster.local/ns/one/sa/s", "URI=spiffe://cluster.local/ns/two/sa/s"],
         "spiffe://cluster.local/ns/two/sa/s"),  # repeated headers are one list
        (['uri="spiffe://cluster.local/ns/q/sa/s"'], "spiffe://cluster.local/ns/q/sa/s"),
        (["Hash=abc;Subject=x"], None),
        (["URI=https://example.com/"], None),
        ([], None),
    ],
)
def test_xfcc_peer(values: list[str], uri: str | None) -> None:
    peer = xfcc_peer(values)
    assert (peer.spiffe_id.uri if peer is not None else None) == uri


def test_trusted_proxies() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1", "spiffe://cluster.local/ns/istio-system/sa/gw"])
    assert proxies.trusts("127.0.0.1", None)
    assert proxies.trusts("10.1.2.3", None)
    assert proxies.trusts("::1", None)
    assert not proxies.trusts("192.168.0.1", None)
    assert not proxies.trusts("", None)
    assert not proxies.trusts("not-an-ip", None)
    assert not TrustedProxies()
