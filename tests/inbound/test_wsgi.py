"""``pymesh.wsgi.MeshMiddleware`` behind Werkzeug's server, plaintext and TLS, and the PEM variables."""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable
from typing import Any

import pymesh
from pymesh.security.ca import MeshCA
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.tls import server_context
from pymesh.wsgi import MeshMiddleware
from tests.inbound.helpers import WerkzeugThread, free_port, get, peer_auth, refused, wsgi_who

MakeMesh = Callable[..., pymesh.Mesh]


def test_permissive_plaintext(make_mesh: MakeMesh) -> None:
    with WerkzeugThread(MeshMiddleware(wsgi_who, mesh=make_mesh())) as server:
        body = get(server.url + "/").json()
    assert body["caller"] == {"principal": None, "spiffe_id": None, "namespace": None}


def test_strict_plaintext_is_refused(make_mesh: MakeMesh) -> None:
    with WerkzeugThread(MeshMiddleware(wsgi_who, mesh=make_mesh(peer_auth("STRICT")))) as server:
        response = get(server.url + "/")
    assert (response.status_code, response.text) == (401, "Peer authentication failed.")


def test_mtls_through_werkzeug_socket(ca: MeshCA, other_ca: MeshCA, make_mesh: MakeMesh,
                                      customer_cert: WorkloadCertificate) -> None:
    web = ca.issue("shop", "web")
    app = MeshMiddleware(wsgi_who, mesh=make_mesh(peer_auth("STRICT")), certificate=web)
    with WerkzeugThread(app, ssl_context=server_context(web, require_client_cert=False)) as server:
        body = get(server.url + "/", customer_cert, ca.root_pem).json()
        anonymous = get(server.url + "/", None, ca.root_pem)
        assert refused(lambda: get(server.url + "/", other_ca.issue("tutorial", "x"), ca.root_pem))
    assert body["caller"] == {"principal": "cluster.local/ns/tutorial/sa/customer",
                              "spiffe_id": "spiffe://cluster.local/ns/tutorial/sa/customer", "namespace": "tutorial"}
    assert anonymous.status_code == 401  # TLS without a client certificate under STRICT


def test_port_level_reads_the_socket_port(make_mesh: MakeMesh) -> None:
    port = free_port()
    mesh = make_mesh(peer_auth("PERMISSIVE", name="web", selector="app: web", ports=f"{port}: {{mode: STRICT}}"))
    with WerkzeugThread(MeshMiddleware(wsgi_who, mesh=mesh), port=port) as strict, \
            WerkzeugThread(MeshMiddleware(wsgi_who, mesh=mesh)) as other:
        assert get(strict.url + "/").status_code == 401
        assert get(other.url + "/").status_code == 200


def test_identity_headers_are_stripped(make_mesh: MakeMesh) -> None:
    headers = {"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/a/sa/b", "x-envoy-peer-metadata-id": "x",
               "x-kept": "yes"}
    with WerkzeugThread(MeshMiddleware(wsgi_who, mesh=make_mesh())) as server:
        seen = get(server.url + "/", headers=headers).json()["headers"]
    assert "x-forwarded-client-cert" not in seen
    assert "x-envoy-peer-metadata-id" not in seen
    assert seen["x-kept"] == "yes"


def test_trusted_proxy_xfcc(make_mesh: MakeMesh) -> None:
    xfcc = "By=spiffe://cluster.local/ns/shop/sa/web;URI=spiffe://cluster.local/ns/tutorial/sa/customer"
    app = MeshMiddleware(wsgi_who, mesh=make_mesh(peer_auth("STRICT")), trusted_proxies=["127.0.0.1"])
    with WerkzeugThread(app) as server:
        body = get(server.url + "/", headers={"x-forwarded-client-cert": xfcc}).json()
    assert body["caller"]["principal"] == "cluster.local/ns/tutorial/sa/customer"
    assert body["headers"]["x-forwarded-client-cert"] == xfcc


# -- the PEM variables (mod_ssl, Werkzeug without the socket) ------------------------------------------


def call(app: MeshMiddleware, **environ: Any) -> tuple[str, Any]:
    base: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "web",
                            "SERVER_PORT": "8443", "REMOTE_ADDR": "10.0.0.9", "wsgi.url_scheme": "https",
                            "wsgi.input": io.BytesIO(b"")}
    base.update(environ)
    seen: dict[str, Any] = {}
    status: list[str] = []

    def inner(env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen["caller"] = env["pymesh"]
        start_response("204 No Content", [])
        return []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None, /) -> Callable[[bytes], object]:
        status.append(s)
        return lambda data: None

    app.app = inner
    list(app(base, start_response))
    return status[0], seen.get("caller")


def test_ssl_client_cert_variables(ca: MeshCA, other_ca: MeshCA, make_mesh: MakeMesh,
                                   customer_cert: WorkloadCertificate) -> None:
    app = MeshMiddleware(wsgi_who, mesh=make_mesh(), ca=ca)
    leaf = ssl.DER_cert_to_PEM_cert(customer_cert.chain_der[0])
    status, caller = call(app, SSL_CLIENT_CERT=leaf)
    assert (status, caller.peer_principal) == ("204 No Content", "cluster.local/ns/tutorial/sa/customer")
    foreign = ssl.DER_cert_to_PEM_cert(other_ca.issue("tutorial", "customer").chain_der[0])
    assert call(app, SSL_CLIENT_CERT=foreign)[0].startswith("401")
    assert call(app, SSL_CLIENT_CERT="garbage")[0].startswith("401")
