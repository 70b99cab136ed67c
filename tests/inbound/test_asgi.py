"""``pymesh.asgi.MeshMiddleware`` behind a stock uvicorn (no pymesh.serve): what plaintext, the TLS
extension, identity headers and trusted proxies give the app."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

import pymesh
from pymesh.asgi import MeshMiddleware
from pymesh.security.ca import MeshCA
from pymesh.security.identity import WorkloadCertificate
from tests.inbound.helpers import WORKLOAD, UvicornThread, free_port, get, peer_auth, who

MakeMesh = Callable[..., pymesh.Mesh]

XFCC = ('By=spiffe://cluster.local/ns/shop/sa/web;Hash=abc;'
        'Subject="CN=x,O=y";URI=spiffe://cluster.local/ns/tutorial/sa/customer')


def echo_app() -> Starlette:
    return Starlette(routes=[Route("/who", who)])


def wrapped(app: Starlette, mesh: pymesh.Mesh, **kwargs: Any) -> Starlette:
    app.add_middleware(MeshMiddleware, mesh=mesh, **kwargs)
    return app


def test_permissive_plaintext_reaches_the_app_anonymous(starlette_app: Starlette, make_mesh: MakeMesh) -> None:
    with UvicornThread(wrapped(starlette_app, make_mesh())) as server:
        body = get(server.url + "/who").json()
    assert body["caller"] == {"principal": None, "spiffe_id": None, "namespace": None}


def test_strict_plaintext_is_answered_401_and_closed(starlette_app: Starlette, make_mesh: MakeMesh) -> None:
    with UvicornThread(wrapped(starlette_app, make_mesh(peer_auth("STRICT")))) as server:
        response = get(server.url + "/who")
    assert response.status_code == 401
    assert response.text == "Peer authentication failed."
    assert response.headers["connection"] == "close"


def test_unset_inherits_strict_from_the_root_namespace(starlette_app: Starlette, make_mesh: MakeMesh) -> None:
    mesh = make_mesh(peer_auth("STRICT", namespace="istio-system") + peer_auth("UNSET"))
    with UvicornThread(wrapped(starlette_app, mesh)) as server:
        assert get(server.url + "/who").status_code == 401


def test_legacy_policy_peers_are_enforced(starlette_app: Starlette, make_mesh: MakeMesh) -> None:
    legacy = ("apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\n"
              "metadata: {name: web-mtls, namespace: shop}\n"
              "spec:\n  targets:\n  - name: web\n  peers:\n  - mtls: {}\n")
    with UvicornThread(wrapped(starlette_app, make_mesh(legacy))) as server:
        assert get(server.url + "/who").status_code == 401


def test_port_level_uses_the_port_the_request_arrived_on(make_mesh: MakeMesh) -> None:
    strict_port = free_port()
    mesh = make_mesh(peer_auth("PERMISSIVE", name="web", selector="app: web", ports=f"{strict_port}: {{mode: STRICT}}"))
    with UvicornThread(wrapped(echo_app(), mesh), port=strict_port) as strict, \
            UvicornThread(wrapped(echo_app(), mesh)) as other:
        assert get(strict.url + "/who").status_code == 401
        assert get(other.url + "/who").status_code == 200


def test_reload_takes_effect_on_the_next_request(starlette_app: Starlette, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(peer_auth("PERMISSIVE"))
    with pymesh.Mesh.from_path(config, workload=WORKLOAD) as mesh, \
            UvicornThread(wrapped(starlette_app, mesh)) as server:
        assert get(server.url + "/who").status_code == 200
        config.write_text(peer_auth("STRICT"))
        mesh.reload()
        assert get(server.url + "/who").status_code == 401


def test_identity_headers_are_stripped(starlette_app: Starlette, make_mesh: MakeMesh) -> None:
    headers = {"x-forwarded-client-cert": XFCC, "x-envoy-peer-metadata-id": "sidecar~1.2.3.4~evil",
               "x-envoy-peer-metadata": "Cg==", "x-kept": "yes", "x-istio-attributes": "Cg==",
               "x-envoy-original-path": "/public"}
    with UvicornThread(wrapped(starlette_app, make_mesh())) as server:
        body = get(server.url + "/who", headers=headers).json()
    seen = body["headers"]
    for name in ("x-forwarded-client-cert", "x-envoy-peer-metadata", "x-envoy-peer-metadata-id",
                 "x-istio-attributes", "x-envoy-original-path"):
        assert name not in seen
    assert seen["x-kept"] == "yes"
    assert body["caller"]["principal"] is None  # a client's own XFCC names nobody


def test_a_trusted_proxy_keeps_xfcc_and_vouches_for_the_caller(starlette_app: Starlette,
                                                                 make_mesh: MakeMesh) -> None:
    mesh = make_mesh(peer_auth("STRICT"))
    with UvicornThread(wrapped(starlette_app, mesh, trusted_proxies=["127.0.0.0/8"])) as server:
        body = get(server.url + "/who", headers={"x-forwarded-client-cert": XFCC}).json()
        bare = get(server.url + "/who")
    assert body["headers"]["x-forwarded-client-cert"] == XFCC
    assert body["caller"]["principal"] == "cluster.local/ns/tutorial/sa/customer"
    assert bare.status_code == 401  # the proxy sent no identity: plaintext under STRICT


def test_an_untrusted_proxy_range_does_not_vouch(starlette_app: Starlette, make_mesh: MakeMesh) -> None:
    mesh = make_mesh(peer_auth("STRICT"))
    with UvicornThread(wrapped(starlette_app, mesh, trusted_proxies=["10.0.0.0/8"])) as server:
        assert get(server.url + "/who", headers={"x-forwarded-client-cert": XFCC}).status_code == 401


def test_trusted_proxies_are_checked() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        MeshMiddleware(Starlette(), mesh=pymesh.Mesh.from_yaml("", workload=WORKLOAD), trusted_proxies=["proxy"])


def test_lifespan_passes_through(make_mesh: MakeMesh) -> None:
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("up")
        yield
        events.append("down")

    app = Starlette(lifespan=lifespan)
    app.add_middleware(MeshMiddleware, mesh=make_mesh())
    server = UvicornThread(app)
    server.server.config.lifespan = "on"
    with server:
        pass
    assert events == ["up", "down"]


# -- the ASGI TLS extension, as a server that fills it would hand it over --------------------------------


async def call(app: MeshMiddleware, scope: dict[str, Any]) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen["caller"] = scope["pymesh"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app.app = inner

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    return sent[0]["status"], seen.get("caller")


def tls_scope(chain: list[str]) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"", "scheme": "https",
            "headers": [(b"host", b"web")], "client": ("10.0.0.9", 5555), "server": ("10.0.0.1", 8443),
            "extensions": {"tls": {"client_cert_chain": chain, "server_cert": None, "tls_version": 0x0304,
                                   "cipher_suite": 0x1301, "client_cert_name": None, "client_cert_error": None}}}


def pem_chain(cert: WorkloadCertificate) -> list[str]:
    return [ssl.DER_cert_to_PEM_cert(der) for der in cert.chain_der]


def test_tls_extension_chain_is_verified(ca: MeshCA, other_ca: MeshCA, make_mesh: MakeMesh,
                                         customer_cert: WorkloadCertificate) -> None:
    mw = MeshMiddleware(Starlette(), mesh=make_mesh(), ca=ca)  # PERMISSIVE
    status, caller = asyncio.run(call(mw, tls_scope(pem_chain(customer_cert))))
    assert status == 204
    assert caller.peer_principal == "cluster.local/ns/tutorial/sa/customer"
    # a chain from another CA is refused even under PERMISSIVE: never trusted because it is there
    assert asyncio.run(call(mw, tls_scope(pem_chain(other_ca.issue("tutorial", "customer")))))[0] == 401
    assert asyncio.run(call(mw, tls_scope(["not a certificate"])))[0] == 401
    # an empty chain is TLS without a client certificate: anonymous
    status, caller = asyncio.run(call(mw, tls_scope([])))
    assert (status, caller.peer_principal) == (204, None)


def test_without_roots_a_chain_proves_nothing(make_mesh: MakeMesh, customer_cert: WorkloadCertificate) -> None:
    mw = MeshMiddleware(Starlette(), mesh=make_mesh())  # no cert_dir, no CA: mTLS off for this workload
    status, caller = asyncio.run(call(mw, tls_scope(pem_chain(customer_cert))))
    assert (status, caller.peer_principal) == (204, None)
