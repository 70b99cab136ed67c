"""``pymesh.serve`` on real loopback sockets: mTLS per PeerAuthentication, decided at the TLS layer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import pymesh
from pymesh.asgi import MeshMiddleware
from pymesh.security.ca import MeshCA
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.rotation import CertificateSource
from pymesh.security.tls import client_context
from pymesh.serving import Server, serve_async
from tests.inbound.helpers import TIMEOUT, WORKLOAD, free_port, get, peer_auth, refused, who

MakeMesh = Callable[..., pymesh.Mesh]


def app() -> Starlette:
    return Starlette(routes=[Route("/who", who)])


def plain(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}/who"


def tls(server: Server) -> str:
    return f"https://127.0.0.1:{server.port}/who"


def test_mtls_between_two_pymesh_services(ca: MeshCA, make_mesh: MakeMesh) -> None:
    # reviews (STRICT) is called by productpage over mTLS; productpage (PERMISSIVE) is called in plaintext.
    reviews_cert = ca.issue("shop", "reviews")
    page_cert = ca.issue("shop", "productpage")
    reviews = pymesh.Workload(name="reviews", namespace="shop", labels={"app": "reviews"}, service_account="reviews")
    reviews_mesh = make_mesh(peer_auth("STRICT"), reviews)
    page_mesh = make_mesh("", pymesh.Workload(name="productpage", namespace="shop", labels={"app": "productpage"},
                                              service_account="productpage"))
    with Server(app(), mesh=reviews_mesh, certificate=reviews_cert) as backend:

        async def page(request: Request) -> JSONResponse:
            ctx = client_context(page_cert, roots_pem=ca.root_pem)
            async with httpx.AsyncClient(verify=ctx, timeout=TIMEOUT) as upstream:
                answer = await upstream.get(tls(backend))
            return JSONResponse({"upstream": answer.json(), "status": answer.status_code})

        with Server(Starlette(routes=[Route("/", page)]), mesh=page_mesh, certificate=page_cert) as front, \
                httpx.Client(timeout=TIMEOUT) as c:
            body = c.get(f"http://127.0.0.1:{front.port}/").json()
    assert body["status"] == 200
    seen = body["upstream"]
    assert seen["caller"] == {"principal": "cluster.local/ns/shop/sa/productpage",
                              "spiffe_id": "spiffe://cluster.local/ns/shop/sa/productpage", "namespace": "shop"}
    assert seen["tls"]["tls_version"] == 0x0304
    assert seen["tls"]["chain"] >= 1  # the leaf first; OpenSSL may add the chain it verified
    assert isinstance(seen["tls"]["cipher_suite"], int)
    assert seen["tls"]["client_cert_name"] is not None


def test_strict_refuses_at_the_tls_layer(ca: MeshCA, other_ca: MeshCA, make_mesh: MakeMesh,
                                         customer_cert: WorkloadCertificate) -> None:
    mesh = make_mesh(peer_auth("STRICT"))
    with Server(app(), mesh=mesh, ca=ca) as server:
        assert get(tls(server), customer_cert, ca.root_pem).json()["caller"]["principal"] == \
            "cluster.local/ns/tutorial/sa/customer"
        assert refused(lambda: get(plain(server)))  # plaintext: reset, never an HTTP answer
        assert refused(lambda: get(tls(server), None, ca.root_pem))  # TLS without a client certificate
        assert refused(lambda: get(tls(server), other_ca.issue("tutorial", "customer"), ca.root_pem))


def test_strict_plaintext_gets_no_http_bytes(ca: MeshCA, make_mesh: MakeMesh) -> None:
    with Server(app(), mesh=make_mesh(peer_auth("STRICT")), ca=ca) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /who HTTP/1.1\r\nHost: web\r\n\r\n")
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
    assert data == b""


def test_permissive_serves_plaintext_and_mtls_on_one_port(ca: MeshCA, make_mesh: MakeMesh,
                                                          customer_cert: WorkloadCertificate) -> None:
    with Server(app(), mesh=make_mesh(peer_auth("PERMISSIVE")), ca=ca) as server:
        plaintext = get(plain(server)).json()
        mtls = get(tls(server), customer_cert, ca.root_pem).json()
        tls_only = get(tls(server), None, ca.root_pem).json()
    assert plaintext["caller"]["principal"] is None
    assert plaintext["tls"] is None
    assert mtls["caller"]["principal"] == "cluster.local/ns/tutorial/sa/customer"
    assert tls_only["caller"]["principal"] is None
    assert tls_only["tls"]["chain"] == 0


def test_permissive_refuses_a_certificate_from_another_ca(ca: MeshCA, other_ca: MeshCA, make_mesh: MakeMesh) -> None:
    with Server(app(), mesh=make_mesh(), ca=ca) as server:  # no policy: PERMISSIVE
        assert refused(lambda: get(tls(server), other_ca.issue("tutorial", "x"), ca.root_pem))


def test_a_trust_domain_not_configured_is_refused(ca: MeshCA, make_mesh: MakeMesh) -> None:
    # Same root, another trust domain: verified by OpenSSL, refused by SPIFFE's rules after the handshake.
    foreign = ca.issue("tutorial", "customer", trust_domain="other.domain")
    with Server(app(), mesh=make_mesh(peer_auth("PERMISSIVE")), ca=ca) as server:
        assert refused(lambda: get(tls(server), foreign, ca.root_pem))


def test_disable_serves_plaintext_only(ca: MeshCA, make_mesh: MakeMesh,
                                       customer_cert: WorkloadCertificate) -> None:
    with Server(app(), mesh=make_mesh(peer_auth("DISABLE")), ca=ca) as server:
        assert get(plain(server)).json()["caller"]["principal"] is None
        assert refused(lambda: get(tls(server), customer_cert, ca.root_pem))


def test_port_level_mtls(ca: MeshCA, make_mesh: MakeMesh,
                         customer_cert: WorkloadCertificate) -> None:
    strict_port = free_port()
    mesh = make_mesh(peer_auth("PERMISSIVE", name="web", selector="app: web",
                               ports=f"{strict_port}: {{mode: STRICT}}"))
    with Server(app(), mesh=mesh, ca=ca, port=strict_port) as strict, Server(app(), mesh=mesh, ca=ca) as other:
        assert refused(lambda: get(plain(strict)))
        assert get(tls(strict), customer_cert, ca.root_pem).status_code == 200
        assert get(plain(other)).status_code == 200


def test_unset_inherits_the_mesh_wide_mode(ca: MeshCA, make_mesh: MakeMesh) -> None:
    yaml = peer_auth("STRICT", namespace="istio-system") + peer_auth("UNSET") + peer_auth(
        "", name="web", selector="app: web")
    with Server(app(), mesh=make_mesh(yaml), ca=ca) as server:
        assert refused(lambda: get(plain(server)))


def test_reload_applies_to_the_next_connection(ca: MeshCA, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(peer_auth("PERMISSIVE"))
    with pymesh.Mesh.from_path(config, workload=WORKLOAD) as mesh, Server(app(), mesh=mesh, ca=ca) as server:
        assert get(plain(server)).status_code == 200
        config.write_text(peer_auth("STRICT"))
        mesh.reload()
        assert refused(lambda: get(plain(server)))


def test_a_silent_client_is_dropped(ca: MeshCA, make_mesh: MakeMesh) -> None:
    with Server(app(), mesh=make_mesh(), ca=ca) as server:
        server.policy.first_byte_timeout = 0.2
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            started = time.monotonic()
            try:
                data = sock.recv(10)
            except ConnectionResetError:
                data = b""
            assert data == b""
            assert time.monotonic() - started < 3


def test_strict_without_a_certificate_refuses_everything(make_mesh: MakeMesh) -> None:
    with Server(app(), mesh=make_mesh(peer_auth("STRICT"))) as server:
        assert refused(lambda: get(plain(server)))


def test_without_a_certificate_permissive_serves_plaintext(make_mesh: MakeMesh) -> None:
    with Server(app(), mesh=make_mesh()) as server:
        assert get(plain(server)).json()["caller"]["principal"] is None


def test_cert_dir(ca: MeshCA, tmp_path: Path, customer_cert: WorkloadCertificate) -> None:
    ca.issue("shop", "web").write(tmp_path / "certs")
    workload = pymesh.Workload(name="web", namespace="shop", labels={"app": "web"}, service_account="web",
                               cert_dir=str(tmp_path / "certs"))
    with pymesh.Mesh.from_yaml(peer_auth("STRICT"), workload=workload) as mesh, Server(app(), mesh=mesh) as server:
        assert get(tls(server), customer_cert, ca.root_pem).status_code == 200


def test_the_server_presents_the_workload_identity(ca: MeshCA, make_mesh: MakeMesh) -> None:
    ctx = client_context(ca.issue("tutorial", "customer"), roots_pem=ca.root_pem)
    with Server(app(), mesh=make_mesh(peer_auth("STRICT")), ca=ca) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw) as conn:
        from cryptography import x509

        leaf = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True) or b"")
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/shop/sa/web"]
        assert conn.version() == "TLSv1.3"


def test_an_app_is_wrapped_once(ca: MeshCA, make_mesh: MakeMesh) -> None:
    mesh = make_mesh()
    wrapped = MeshMiddleware(app(), mesh=mesh, ca=ca)
    with Server(wrapped, mesh=mesh) as server:
        assert server.policy.inbound is wrapped.inbound
        assert get(plain(server)).status_code == 200
    starlette = app()
    starlette.add_middleware(MeshMiddleware, mesh=mesh)
    with Server(starlette, mesh=mesh) as server:
        assert get(plain(server)).status_code == 200


def test_serve_refuses_uvicorn_tls_settings(make_mesh: MakeMesh) -> None:
    with pytest.raises(TypeError, match="ssl_certfile"):
        Server(app(), mesh=make_mesh(), ssl_certfile="x.pem")


def test_a_rotated_certificate_is_presented_to_new_connections(ca: MeshCA, make_mesh: MakeMesh) -> None:
    now = [time.time()]
    # a one-minute leaf, so the renewed one is already valid at the advanced clock
    source = CertificateSource.from_ca(ca, "shop", "web", ttl=timedelta(seconds=60), clock=lambda: now[0],
                                       rng=random.Random(7))
    ctx = client_context(ca.issue("tutorial", "customer"), roots_pem=ca.root_pem)

    def served_serial(port: int) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, ctx.wrap_socket(raw) as conn:
            from cryptography import x509

            return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True) or b"").serial_number

    with Server(app(), mesh=make_mesh(peer_auth("STRICT")), certificate=source) as server:
        first = served_serial(server.port)
        assert first == source.current.serial_number
        now[0] = source.rotate_at + 1  # past the grace ratio
        assert source.maybe_rotate()  # what the source's background thread does (not started here)
        second = served_serial(server.port)  # the running server presents the new certificate
    assert second != first
    assert second == source.current.serial_number


def test_handshake_failure_does_not_stop_the_server(ca: MeshCA, make_mesh: MakeMesh,
                                                     customer_cert: WorkloadCertificate) -> None:
    with Server(app(), mesh=make_mesh(peer_auth("STRICT")), ca=ca) as server:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
                sock.sendall(b"\x16\x03\x01\x00\x05garbage")  # a TLS record header, then nonsense
                with contextlib.suppress(ConnectionResetError, ssl.SSLError):
                    sock.recv(10)
        assert get(tls(server), customer_cert, ca.root_pem).status_code == 200


def test_serve_async_runs_on_the_current_loop(ca: MeshCA, make_mesh: MakeMesh,
                                               customer_cert: WorkloadCertificate) -> None:
    port = free_port()

    async def scenario() -> tuple[int, str]:
        task = asyncio.create_task(serve_async(app(), mesh=make_mesh(peer_auth("STRICT")), ca=ca, port=port,
                                               log_level="warning"))
        ctx = client_context(customer_cert, roots_pem=ca.root_pem)
        try:
            async with httpx.AsyncClient(verify=ctx, timeout=TIMEOUT) as c:
                for _ in range(200):
                    try:
                        answer = await c.get(f"https://127.0.0.1:{port}/who")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.02)
                else:
                    raise AssertionError("serve_async did not start")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, TIMEOUT)
        return answer.status_code, answer.json()["caller"]["principal"]

    assert asyncio.run(scenario()) == (200, "cluster.local/ns/tutorial/sa/customer")


def test_istio_sample_plugin_ca_needs_the_legacy_switch(make_mesh: MakeMesh) -> None:
    # Istio's 2018 sample intermediate (samples/certs) fails RFC 5280's profile; accepted only when asked.
    from tests.conftest import shared_dir

    certs = shared_dir() / "conformance" / "certs"
    sample = MeshCA.from_cacerts((certs / "ca-cert.pem").read_bytes(), (certs / "ca-key.pem").read_bytes(),
                                 (certs / "root-cert.pem").read_bytes(), (certs / "cert-chain.pem").read_bytes(),
                                 trust_domain="cluster.local")
    client_cert = sample.issue("tutorial", "customer")
    mesh = make_mesh(peer_auth("STRICT"))
    legacy = CertificateSource(sample.issue("shop", "web"), allow_legacy_chain=True)
    with Server(app(), mesh=mesh, certificate=legacy) as server:
        ctx = client_context(client_cert, roots_pem=sample.root_pem, allow_legacy_chain=True)
        with httpx.Client(verify=ctx, timeout=TIMEOUT) as c:
            body = c.get(tls(server)).json()
        assert body["caller"]["principal"] == "cluster.local/ns/tutorial/sa/customer"
    with Server(app(), mesh=mesh, certificate=sample.issue("shop", "web")) as server:
        ctx = client_context(client_cert, roots_pem=sample.root_pem, allow_legacy_chain=True)

        def call() -> None:
            with httpx.Client(verify=ctx, timeout=TIMEOUT) as c:
                c.get(tls(server))

        assert refused(call)


def test_serve_blocks_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "svc.py"
    script.write_text(
        "import pymesh\n"
        "from pymesh.security.ca import MeshCA\n"
        "from tests.inbound.test_serve import app\n"
        "mesh = pymesh.Mesh.from_yaml('', workload=pymesh.Workload(name='web', namespace='shop'))\n"
        f"pymesh.serve(app(), mesh=mesh, ca=MeshCA.init(), port={port}, log_level='warning')\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, str(script)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = get(plain_url(port)).status_code
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert status == 200, proc.stderr.read() if proc.poll() is not None and proc.stderr else status
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # As uvicorn.run: a graceful shutdown, then the captured SIGINT is raised again (KeyboardInterrupt).
    assert proc.returncode in (0, -signal.SIGINT)


def plain_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/who"


def test_strict_accepts_plaintext_from_a_trusted_proxy_that_forwards_the_caller(ca: MeshCA,
                                                                                 make_mesh: MakeMesh) -> None:
    xfcc = "By=spiffe://cluster.local/ns/shop/sa/web;URI=spiffe://cluster.local/ns/tutorial/sa/customer"
    with Server(app(), mesh=make_mesh(peer_auth("STRICT")), ca=ca, trusted_proxies=["127.0.0.1"]) as server:
        vouched = get(plain(server), headers={"x-forwarded-client-cert": xfcc})
        bare = get(plain(server))
    assert vouched.json()["caller"]["principal"] == "cluster.local/ns/tutorial/sa/customer"
    assert bare.status_code == 401  # plaintext from the proxy without an identity: refused by the middleware
