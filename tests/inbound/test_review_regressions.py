"""Defects a review of the inbound and TLS paths found, each proven here against real parts first."""

from __future__ import annotations

import io
import socket
import time
from typing import Any, cast

import httpx

import pymesh
from pymesh import wsgi
from pymesh.config.types import compile_re2
from pymesh.inbound.core import Inbound
from pymesh.inbound.request import Denial, InboundRequest
from pymesh.security import MeshCA, server_context
from pymesh.security.identity import PeerIdentity, SpiffeId
from pymesh.security.rotation import CertificateSource
from pymesh.serving import Server
from pymesh.testing.upstream import Reply, Upstream, service_yaml
from tests.conftest import shared_dir
from tests.inbound.helpers import TIMEOUT
from tests.outbound.conftest import docs
from tests.outbound.test_resilience_e2e import URL, dest_rule

WEB = pymesh.Workload(name="web", namespace="shop", labels={"app": "web"}, service_account="web")
ADMIN_ONLY = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: admin-only, namespace: shop}
spec:
  rules: [{from: [{source: {principals: ["cluster.local/ns/ops/sa/admin"]}}]}]
"""


async def echo_client(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = repr(scope["client"]).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_serve_does_not_let_x_forwarded_for_choose_the_source_address() -> None:
    # uvicorn's proxy-headers default would turn this plaintext loopback client into the trusted
    # proxy 10.9.9.9, whose XFCC identity the mesh then believes.
    with pymesh.Mesh.from_yaml(ADMIN_ONLY, workload=WEB) as mesh, \
            Server(echo_client, mesh=mesh, ca=MeshCA.init(), trusted_proxies=["10.9.9.9"]) as server:
        spoofed = httpx.get(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT, headers={
            "x-forwarded-for": "10.9.9.9", "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/ops/sa/admin"})
        assert (spoofed.status_code, spoofed.text) == (403, "RBAC: access denied")


def test_disable_means_a_certificate_is_no_identity_for_authorization() -> None:
    text = """apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: DISABLE}}
---
""" + ADMIN_ONLY
    with pymesh.Mesh.from_yaml(text, workload=WEB) as mesh:
        peer = PeerIdentity(SpiffeId.parse("spiffe://cluster.local/ns/ops/sa/admin"), ())
        request = InboundRequest("GET", "/", "web", (("host", "web"),), "https", "10.0.0.1", 1, "10.0.0.2", 8080, peer)
        out = Inbound(mesh).handle(request)
        assert isinstance(out, Denial)
        assert out.status == 403


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _custom(port: int, extra: str) -> str:
    return f"""apiVersion: pymesh/v1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  extensionProviders:
  - name: authz
    envoyExtAuthzHttp: {{service: 127.0.0.1, port: {port}, {extra}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: c, namespace: shop}}
spec:
  action: CUSTOM
  provider: {{name: authz}}
  rules: [{{}}]
"""


def _wsgi_status(mesh: pymesh.Mesh) -> str:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-length", "3")])
        return [b"app"]

    out: dict[str, str] = {}

    def start_response(status: str, headers: Any, exc: Any = None) -> None:
        out["status"] = status

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "RAW_URI": "/x", "SERVER_NAME": "h", "SERVER_PORT": "80",
               "HTTP_HOST": "h", "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http"}
    b"".join(wsgi.MeshMiddleware(app, mesh=mesh)(environ, cast(Any, start_response)))
    return out["status"]


def test_an_unreachable_custom_authorizer_follows_fail_open_and_status_on_error() -> None:
    # Called through the mesh client, an unreachable authorizer is a local 503, not an exception:
    # Envoy treats any 5xx from the authorizer as an error, so failOpen / statusOnError apply.
    port = _dead_port()
    with pymesh.Mesh.from_yaml(_custom(port, "failOpen: true"), workload=WEB) as mesh:
        assert _wsgi_status(mesh) == "200 OK"
    with pymesh.Mesh.from_yaml(_custom(port, "statusOnError: '401'"), workload=WEB) as mesh:
        assert _wsgi_status(mesh).startswith("401")


def test_a_5xx_from_the_authorizer_is_an_error_not_its_verdict() -> None:
    with Upstream("authz") as authorizer:
        authorizer.respond(Reply(500, (), b"oops"))
        with pymesh.Mesh.from_yaml(_custom(authorizer.port, "statusOnError: '401'"), workload=WEB) as mesh:
            assert _wsgi_status(mesh).startswith("401")
        assert len(authorizer.received) == 1  # it was asked, and its 500 was not passed on as the answer


def test_a_catastrophic_regex_is_matched_in_linear_time() -> None:
    pattern = compile_re2(r"^(a+)+$")
    started = time.perf_counter()
    assert pattern.fullmatch("a" * 40 + "b") is None  # Python's re would take hours on this
    assert time.perf_counter() - started < 1.0
    assert compile_re2(r"^/api/.*").fullmatch("/api/x") is not None


def test_istio_mutual_honours_the_legacy_chain_switch_outbound() -> None:
    certs = shared_dir() / "conformance" / "certs"
    sample = MeshCA.from_cacerts((certs / "ca-cert.pem").read_bytes(), (certs / "ca-key.pem").read_bytes(),
                                 (certs / "root-cert.pem").read_bytes(), (certs / "cert-chain.pem").read_bytes(),
                                 trust_domain="cluster.local")
    ctx = server_context(sample.issue("ns1", "svc"), require_client_cert=True, roots_pem=sample.root_pem,
                         allow_legacy_chain=True)
    with Upstream("svc-v1", {}, service_account="svc", ssl_context=ctx) as up:
        identity = CertificateSource(sample.issue("ns1", "caller"), allow_legacy_chain=True)
        caller = pymesh.Workload(name="caller", namespace="ns1", labels={"app": "caller"}, service_account="caller")
        text = docs(service_yaml("svc", "ns1", [up]), dest_rule("{tls: {mode: ISTIO_MUTUAL}}"))
        with pymesh.Mesh.from_yaml(text, workload=caller, identity=identity) as mesh, mesh.client() as client:
            assert client.get(URL).status_code == 200


PORT_LEVEL = """apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls: {9090: {mode: DISABLE}}
"""


def _plain_wsgi(mesh: pymesh.Mesh, server_port: str, **kw: Any) -> str:
    out: dict[str, str] = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"secret"]

    def start_response(status: str, headers: Any, exc: Any = None) -> None:
        out["status"] = status

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/admin", "RAW_URI": "/admin", "HTTP_HOST": f"web:{server_port}",
               "SERVER_NAME": "web", "SERVER_PORT": server_port, "REMOTE_ADDR": "10.0.0.9",
               "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http"}
    b"".join(wsgi.MeshMiddleware(app, mesh=mesh, **kw)(environ, cast(Any, start_response)))
    return out["status"]


def test_a_client_chosen_port_cannot_pick_a_weaker_port_level_mode() -> None:
    # Without the server's socket, SERVER_PORT may come from the Host header: the strictest mode of
    # the workload applies, unless the middleware is told the port it serves.
    with pymesh.Mesh.from_yaml(PORT_LEVEL, workload=WEB, ca=MeshCA.init()) as mesh:
        assert _plain_wsgi(mesh, "9090").startswith("401")
        assert _plain_wsgi(mesh, "8080").startswith("401")
        assert _plain_wsgi(mesh, "9090", port=9090) == "200 OK"  # the metrics port, told by the operator
