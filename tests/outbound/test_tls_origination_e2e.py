"""TLS origination end to end: real handshakes on loopback with certificates from pymesh's CA.

Each test runs with the sync and the async client (the ``connect`` fixture). Upstreams are
``Upstream``s serving TLS with ``pymesh.security.server_context``; a STRICT-like upstream
(client certificate required) refuses any plaintext or certificate-less client at the
handshake, so a 200 from one proves mTLS was used.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

import pymesh
from pymesh.outbound.transport import AsyncMeshTransport, MeshTransport
from pymesh.security import MeshCA, SpiffeId, server_context
from pymesh.testing.upstream import Upstream, service_yaml
from tests.outbound.conftest import Connect, docs, served_by
from tests.outbound.test_resilience_e2e import FLAGS, URL, dest_rule, free_port

ISTIO = {"security.istio.io/tlsMode": "istio"}


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.init("cluster.local")


@pytest.fixture
def tls_servers() -> Iterator[list[Upstream]]:
    started: list[Upstream] = []
    yield started
    for up in started:
        up.stop()


def tls_upstream(started: list[Upstream], ca: MeshCA, name: str, *, service_account: str = "svc",
                 labels: dict[str, str] | None = None, require_client_cert: bool = True,
                 issuer: MeshCA | None = None) -> Upstream:
    cert = (issuer or ca).issue("ns1", service_account)
    ctx = server_context(cert, require_client_cert=require_client_cert, roots_pem=ca.cert_pem)
    up = Upstream(name, dict(labels or {}), service_account=service_account, ssl_context=ctx).start()
    started.append(up)
    return up


def mesh_for(text: str, ca: MeshCA | None, *, service_account: str = "caller") -> pymesh.Mesh:
    workload = pymesh.Workload(name="caller", namespace="ns1", labels={"app": "caller"},
                               service_account=service_account)
    return pymesh.Mesh.from_yaml(text, workload=workload, ca=ca)


def peer_id(der: bytes | None) -> str:
    assert der is not None, "the upstream saw no client certificate"
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return SpiffeId.parse(uris[0]).principal


@pytest.fixture
def meshes() -> Iterator[list[pymesh.Mesh]]:
    made: list[pymesh.Mesh] = []
    yield made
    for m in made:
        m.close()


ISTIO_MUTUAL = "{tls: {mode: ISTIO_MUTUAL}}"


def test_istio_mutual_presents_the_workload_identity_and_verifies_the_server(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh]
) -> None:
    up = tls_upstream(tls_servers, ca, "svc-v1")
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(ISTIO_MUTUAL)), ca, service_account="customer")
    meshes.append(mesh)
    sender = connect(mesh)
    body = b"through mTLS"
    r = sender.send("POST", URL, content=body)
    assert r.status_code == 200, r.text
    assert served_by(r) == "svc-v1"
    seen, = up.received
    assert seen.body == body
    assert peer_id(seen.peer_cert) == "cluster.local/ns/ns1/sa/customer"


def test_the_tls_connection_is_reused(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh]
) -> None:
    up = tls_upstream(tls_servers, ca, "svc-v1")
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(ISTIO_MUTUAL)), ca)
    meshes.append(mesh)
    sender = connect(mesh)
    for _ in range(20):
        assert sender.get(URL).status_code == 200
    assert up.accepted() == 1  # one handshake for twenty requests


def test_a_server_with_another_service_account_is_refused_before_the_request(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh]
) -> None:
    # The registry says svc runs as "svc"; this server presents an SVID for "impostor".
    up = tls_upstream(tls_servers, ca, "svc-v1", service_account="impostor")
    text = docs(service_yaml("svc", "ns1", [up]), dest_rule(ISTIO_MUTUAL))
    text = text.replace("serviceAccount: impostor", "serviceAccount: svc")
    mesh = mesh_for(text, ca)
    meshes.append(mesh)
    r = connect(mesh).get(URL)
    assert (r.status_code, r.headers[FLAGS]) == (503, "UF,URX")  # refused, retried (connect-failure), refused
    assert up.received == []  # not one byte of the request reached it


def test_a_server_from_another_ca_is_refused(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh]
) -> None:
    up = tls_upstream(tls_servers, ca, "svc-v1", issuer=MeshCA.init("cluster.local"))
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(ISTIO_MUTUAL)), ca)
    meshes.append(mesh)
    r = connect(mesh).get(URL)
    assert (r.status_code, r.headers[FLAGS]) == (503, "UF,URX")
    assert up.received == []


def test_istio_mutual_without_an_identity_fails_with_the_reason(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh]
) -> None:
    up = tls_upstream(tls_servers, ca, "svc-v1")
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(ISTIO_MUTUAL)), None)
    meshes.append(mesh)
    with pytest.raises(pymesh.UpstreamConnectError, match="needs a workload identity"):
        connect(mesh, raise_errors=True).get(URL)
    assert up.accepted() == 0


def test_auto_mtls_toward_endpoints_labelled_as_mesh_workloads(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh]
) -> None:
    # No tls settings: the labelled endpoint gets mTLS (it would refuse plaintext), the other one
    # plaintext (it speaks nothing else). Round robin, so both are reached.
    secure = tls_upstream(tls_servers, ca, "svc-v1", labels={**ISTIO, "version": "v1"})
    plain = Upstream("svc-v2", {"version": "v2"}).start()
    tls_servers.append(plain)
    round_robin = dest_rule("{loadBalancer: {simple: ROUND_ROBIN}}")
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [secure, plain]), round_robin), ca)
    meshes.append(mesh)
    sender = connect(mesh)
    outs = [sender.get(URL) for _ in range(6)]
    assert all(r.status_code == 200 for r in outs), [r.text for r in outs]
    assert {served_by(r) for r in outs} == {"svc-v1", "svc-v2"}
    assert all(peer_id(x.peer_cert) == "cluster.local/ns/ns1/sa/caller" for x in secure.received)
    assert all(x.peer_cert is None for x in plain.received)


def test_disable_sends_plaintext_even_to_a_labelled_endpoint(
    servers: object, ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh], tls_servers: list[Upstream]
) -> None:
    plain = Upstream("svc-v1", dict(ISTIO)).start()
    tls_servers.append(plain)
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [plain]), dest_rule("{tls: {mode: DISABLE}}")), ca)
    meshes.append(mesh)
    assert connect(mesh).get(URL).status_code == 200


def test_simple_tls_verifies_the_server_against_the_given_ca_and_names(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh], tmp_path: Path
) -> None:
    up = tls_upstream(tls_servers, ca, "svc-v1", require_client_cert=False)
    roots = tmp_path / "ca.pem"
    roots.write_bytes(ca.cert_pem)
    good = "{tls: {mode: SIMPLE, caCertificates: %s, subjectAltNames: [spiffe://cluster.local/ns/ns1/sa/svc]}}"
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(good % roots)), None)
    meshes.append(mesh)
    r = connect(mesh).get(URL)
    assert r.status_code == 200, r.text
    assert up.received[0].peer_cert is None  # SIMPLE: no client certificate
    wrong = "{tls: {mode: SIMPLE, caCertificates: %s, subjectAltNames: [spiffe://cluster.local/ns/ns1/sa/other]}}"
    mesh2 = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(wrong % roots)), None)
    meshes.append(mesh2)
    assert connect(mesh2).get(URL).status_code == 503
    assert len(up.received) == 1


def test_a_rotated_certificate_is_used_by_new_connections(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh]
) -> None:
    up = tls_upstream(tls_servers, ca, "svc-v1")
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(
        ISTIO_MUTUAL[:-1] + ", connectionPool: {http: {maxRequestsPerConnection: 1}}}")), ca)
    meshes.append(mesh)
    sender = connect(mesh)
    assert sender.get(URL).status_code == 200
    identity = mesh.identity
    assert identity is not None
    identity.rotate()
    assert sender.get(URL).status_code == 200
    first, second = (x509.load_der_x509_certificate(x.peer_cert or b"") for x in up.received)
    assert first.serial_number != second.serial_number
    assert second.serial_number == x509.load_pem_x509_certificate(identity.current.cert_chain_pem).serial_number
    transport = sender.transport
    assert isinstance(transport, MeshTransport | AsyncMeshTransport)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_istio_mutual_against_openssl_s_server(
    ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh], tmp_path: Path
) -> None:
    # A TLS stack nobody here wrote: OpenSSL's test server, demanding a client certificate.
    server_cert = ca.issue("ns1", "svc")
    (tmp_path / "cert.pem").write_bytes(server_cert.cert_chain_pem)
    (tmp_path / "key.pem").write_bytes(server_cert.key_pem)
    (tmp_path / "root.pem").write_bytes(ca.cert_pem)
    port = free_port()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(tmp_path / "cert.pem"),
         "-key", str(tmp_path / "key.pem"), "-CAfile", str(tmp_path / "root.pem"), "-Verify", "1",
         "-verify_return_error", "-www"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # never read: a pipe could fill and stall it
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        text = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: ns1}}
spec:
  hosts: [svc]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}, serviceAccount: svc}}]
---
""" + dest_rule(ISTIO_MUTUAL)
        mesh = mesh_for(text, ca, service_account="customer")
        meshes.append(mesh)
        r = connect(mesh).get(URL, timeout=10.0)
        assert r.status_code == 200, r.text
        assert "Client certificate" in r.text  # -www reports the certificate pymesh presented
    finally:
        proc.kill()
        proc.wait(10)


def test_mutual_tls_presents_the_files_certificate(
    tls_servers: list[Upstream], ca: MeshCA, connect: Connect, meshes: list[pymesh.Mesh], tmp_path: Path
) -> None:
    up = tls_upstream(tls_servers, ca, "svc-v1")  # requires a client certificate from the mesh root
    client = ca.issue("external", "partner")
    for name, data in (("cert.pem", client.cert_chain_pem), ("key.pem", client.key_pem), ("ca.pem", ca.cert_pem)):
        (tmp_path / name).write_bytes(data)
    cert, key, roots = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    rule = (f"{{tls: {{mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, caCertificates: {roots}, "
            "subjectAltNames: [spiffe://cluster.local/ns/ns1/sa/svc]}}")
    mesh = mesh_for(docs(service_yaml("svc", "ns1", [up]), dest_rule(rule)), None)  # no mesh identity needed
    meshes.append(mesh)
    r = connect(mesh).get(URL)
    assert r.status_code == 200, r.text
    assert peer_id(up.received[0].peer_cert) == "cluster.local/ns/external/sa/partner"
