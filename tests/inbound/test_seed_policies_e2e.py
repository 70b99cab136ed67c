"""The seed's own examples, enforced as written, through real servers and real clients.

- the Mixer whitelist: preference callable only from recommendation (source labels from the
  registry entry of the caller's verified identity), on ``pymesh.serve`` with mTLS;
- the RBAC service-viewer: GET allowed, POST denied, on a FastAPI app under uvicorn;
- the JWT origin on customer: Istio's demo token accepted, no token or a tampered one refused,
  on a Flask app under Werkzeug, with the JWKS served on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import flask
import httpx
import pytest
from fastapi import FastAPI

import pymesh
from pymesh import asgi, wsgi
from pymesh.security import MeshCA
from pymesh.security.tls import client_context
from pymesh.serving import Server
from pymesh.testing.upstream import Reply, Upstream
from tests.conftest import shared_dir
from tests.inbound.helpers import TIMEOUT, UvicornThread, WerkzeugThread, get

CONFORMANCE = shared_dir() / "conformance"
REGISTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: apps, namespace: tutorial}
spec:
  hosts: [apps.tutorial.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {app: customer, version: v1}, serviceAccount: customer}
  - {address: 10.0.0.2, labels: {app: recommendation, version: v2}, serviceAccount: recommendation}
---
"""


def workload(app: str) -> pymesh.Workload:
    return pymesh.Workload(name=app, namespace="tutorial", labels={"app": app, "version": "v1"}, service_account=app)


@pytest.fixture
def meshes() -> Iterator[list[pymesh.Mesh]]:
    made: list[pymesh.Mesh] = []
    yield made
    for m in made:
        m.close()


def test_preference_is_callable_only_from_recommendation(ca: MeshCA, meshes: list[pymesh.Mesh]) -> None:
    text = REGISTRY + (CONFORMANCE / "legacy" / "tutorial-book-1.0.4__acl-whitelist.yml").read_text()
    mesh = pymesh.Mesh.from_yaml(text, workload=workload("preference"), ca=ca)
    meshes.append(mesh)
    app = FastAPI()

    @app.get("/")
    def hello() -> dict[str, str]:
        return {"from": "preference"}

    with Server(app, mesh=mesh) as server:
        url = f"https://127.0.0.1:{server.port}/"
        ok = get(url, ca.issue("tutorial", "recommendation"), ca.cert_pem)
        assert (ok.status_code, ok.json()) == (200, {"from": "preference"})
        no = get(url, ca.issue("tutorial", "customer"), ca.cert_pem)
        assert no.status_code == 403
        assert no.text == "PERMISSION_DENIED:preferencewhitelist.listchecker.tutorial:customer is not whitelisted"
        plaintext = httpx.get(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT)  # PERMISSIVE: no identity
        assert plaintext.status_code == 403


def test_rbac_service_viewer_allows_get_and_denies_post(meshes: list[pymesh.Mesh]) -> None:
    folder = CONFORMANCE / "istio-tutorial"
    text = "\n---\n".join((folder / f).read_text() for f in ("authorization-enable-rbac.yml",
                                                            "namespace-rbac-policy.yml"))
    mesh = pymesh.Mesh.from_yaml(text, workload=workload("customer"))
    meshes.append(mesh)
    app = FastAPI()

    @app.api_route("/", methods=["GET", "POST"])
    def hello() -> str:
        return "customer => preference => recommendation"

    app.add_middleware(asgi.MeshMiddleware, mesh=mesh)
    with UvicornThread(app) as server:
        assert httpx.get(server.url, timeout=TIMEOUT).status_code == 200
        denied = httpx.post(server.url, content=b"{}", timeout=TIMEOUT)
        assert (denied.status_code, denied.text) == (403, "RBAC: access denied")


@pytest.fixture
def jwks_server() -> Iterator[Upstream]:
    up = Upstream("jwks").start()
    up.respond(Reply(200, (("content-type", "application/json"),), (CONFORMANCE / "jwt" / "jwks.json").read_bytes()))
    yield up
    up.stop()


def test_jwt_origin_on_customer(jwks_server: Upstream, meshes: list[pymesh.Mesh], tmp_path: Path) -> None:
    text = (CONFORMANCE / "legacy" / "tutorial-1.1.x__enduser-authentication-jwt.yml").read_text()
    # The same keys Istio's sample serves from GitHub, served here on loopback.
    start = text.index("jwksUri: ") + len("jwksUri: ")
    end = text.index("\n", start)
    text = text[:start] + f'"{jwks_server.url}/jwks.json"' + text[end:]
    mesh = pymesh.Mesh.from_yaml(text, workload=workload("customer"), namespace="tutorial")
    meshes.append(mesh)
    app = flask.Flask("customer")

    @app.get("/")
    def hello() -> str:
        caller = flask.request.environ["pymesh"]
        return f"hello {caller.request_principal}"

    app.wsgi_app = wsgi.MeshMiddleware(app.wsgi_app, mesh=mesh)  # type: ignore[method-assign]
    demo = (CONFORMANCE / "jwt" / "demo.jwt").read_text().strip()
    tampered = (CONFORMANCE / "jwt" / "istio-tutorial-invalid-demo.jwt").read_text().strip()
    with WerkzeugThread(app) as server:
        ok = httpx.get(server.url, headers={"authorization": f"Bearer {demo}"}, timeout=TIMEOUT)
        assert (ok.status_code, ok.text) == (200, "hello testing@secure.istio.io/testing@secure.istio.io")
        missing = httpx.get(server.url, timeout=TIMEOUT)
        assert (missing.status_code, missing.text) == (401, "Origin authentication failed.")
        bad = httpx.get(server.url, headers={"authorization": f"Bearer {tampered}"}, timeout=TIMEOUT)
        assert (bad.status_code, bad.text) == (401, "Origin authentication failed.")
    assert len(jwks_server.received) >= 1  # the keys came from the loopback JWKS


USE_PEER = """apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: default, namespace: tutorial}
spec:
  peers: [{mtls: {mode: PERMISSIVE}}]
  principalBinding: BINDING
---
apiVersion: rbac.istio.io/v1alpha1
kind: ClusterRbacConfig
metadata: {name: default}
spec: {mode: 'ON'}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: viewer, namespace: tutorial}
spec:
  rules: [{services: ["*"], methods: ["GET"]}]
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: bind-recommendation, namespace: tutorial}
spec:
  subjects: [{properties: {request.auth.principal: "cluster.local/ns/tutorial/sa/recommendation"}}]
  roleRef: {kind: ServiceRole, name: viewer}
"""


@pytest.mark.parametrize("binding", ["USE_PEER", "USE_ORIGIN"])
def test_principal_binding_decides_what_request_auth_principal_is(
    binding: str, ca: MeshCA, meshes: list[pymesh.Mesh]
) -> None:
    # Istio 1.x: USE_PEER makes the mTLS peer the request principal; USE_ORIGIN only a token.
    mesh = pymesh.Mesh.from_yaml(USE_PEER.replace("BINDING", binding), workload=workload("preference"), ca=ca)
    meshes.append(mesh)
    app = FastAPI()

    @app.get("/")
    def hello() -> str:
        return "preference"

    with Server(app, mesh=mesh) as server:
        url = f"https://127.0.0.1:{server.port}/"
        recommendation = get(url, ca.issue("tutorial", "recommendation"), ca.cert_pem)
        customer = get(url, ca.issue("tutorial", "customer"), ca.cert_pem)
    if binding == "USE_PEER":
        assert recommendation.status_code == 200
    else:
        assert recommendation.status_code in (401, 403)  # no token: no request principal
    assert customer.status_code in (401, 403)


SNI_POLICY = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-sni, namespace: tutorial}
spec:
  rules: [{when: [{key: connection.sni, values: ["preference.tutorial.svc.cluster.local"]}]}]
"""


def test_connection_sni_is_what_the_client_sent(ca: MeshCA, meshes: list[pymesh.Mesh]) -> None:
    mesh = pymesh.Mesh.from_yaml(SNI_POLICY, workload=workload("preference"), ca=ca)
    meshes.append(mesh)
    app = FastAPI()

    @app.get("/")
    def hello() -> str:
        return "preference"

    cert = ca.issue("tutorial", "customer")
    context = client_context(cert, roots_pem=ca.cert_pem)
    with Server(app, mesh=mesh) as server, httpx.Client(verify=context, timeout=TIMEOUT) as client:
        url = f"https://127.0.0.1:{server.port}/"
        good = client.get(url, extensions={"sni_hostname": "preference.tutorial.svc.cluster.local"})
        assert good.status_code == 200, good.text
        with httpx.Client(verify=context, timeout=TIMEOUT) as other:
            bad = other.get(url, extensions={"sni_hostname": "other.tutorial.svc.cluster.local"})
        assert (bad.status_code, bad.text) == (403, "RBAC: access denied")
