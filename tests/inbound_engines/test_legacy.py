"""The seed-era objects enforced through the engines: Mixer whitelists/blacklists, origin JWTs, RBAC."""

from __future__ import annotations

from pathlib import Path

from pymesh.config.load import Text, load
from pymesh.inbound import paths
from pymesh.inbound.authn import Authenticator, AuthnOutcome
from pymesh.inbound.jwks import JwksRegistry
from pymesh.inbound.legacy import ORIGIN_FAILED, LegacyEnforcer
from pymesh.inbound.request import Denial
from pymesh.snapshot.snapshot import Snapshot, build
from pymesh.workload import Workload

from .helpers import request

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
  - {address: 10.0.0.2, labels: {app: recommendation, version: v1}, serviceAccount: recommendation}
  - {address: 10.0.0.3, labels: {app: recommendation, version: v2}, serviceAccount: recommendation}
  - {address: 10.0.0.9, labels: {istio: ingressgateway}, serviceAccount: ingress}
"""


def _snapshot(files: list[Path], app: str, namespace: str = "tutorial") -> Snapshot:
    config = load([*files, Text(REGISTRY)], namespace=namespace)
    return build(config, Workload(name=app, namespace=namespace, labels={"app": app}, service_account=app))


def _enforcer(snap: Snapshot) -> LegacyEnforcer:
    return LegacyEnforcer(snap.legacy, snap.workload, snap.registry, trust_domain=snap.trust_domain)


def test_preference_only_callable_from_recommendation(conformance: Path) -> None:
    legacy = _enforcer(_snapshot([conformance / "legacy" / "tutorial-book-1.0.4__acl-whitelist.yml"], "preference"))
    denied = legacy.mixer(request(principal="cluster.local/ns/tutorial/sa/customer", source_ip="10.0.0.1"), "/")
    assert denied is not None
    assert (denied.status, denied.body) == (
        403, b"PERMISSION_DENIED:preferencewhitelist.listchecker.tutorial:customer is not whitelisted")
    assert legacy.mixer(request(principal="cluster.local/ns/tutorial/sa/recommendation", source_ip="10.0.0.3"),
                        "/") is None
    # a recommendation pod at an address the registry does not list: the labels its instances share
    assert legacy.mixer(request(principal="cluster.local/ns/tutorial/sa/recommendation", source_ip="10.9.9.9"),
                        "/") is None
    plaintext = legacy.mixer(request(source_ip="10.0.0.2"), "/")  # no verified identity, no labels: refused
    assert plaintext is not None
    assert plaintext.status == 403
    # the rule is about preference only
    other = _enforcer(_snapshot([conformance / "legacy" / "tutorial-book-1.0.4__acl-whitelist.yml"], "customer"))
    assert other.mixer(request(), "/") is None


def test_blacklist_denier(conformance: Path) -> None:
    legacy = _enforcer(_snapshot([conformance / "istio-tutorial" / "acl-blacklist.yml"], "preference"))
    denied = legacy.mixer(request(principal="cluster.local/ns/tutorial/sa/customer", source_ip="10.0.0.1"), "/")
    assert denied is not None
    assert denied.status == 403
    assert denied.body.startswith(b"PERMISSION_DENIED:denycustomerhandler")
    assert denied.body.endswith(b":Not allowed")
    assert legacy.mixer(request(principal="cluster.local/ns/tutorial/sa/recommendation"), "/") is None
    assert legacy.mixer(request(), "/") is None  # not the customer (no labels): the rule does not match


def test_ip_whitelist_at_the_ingress(conformance: Path) -> None:
    ingress = "cluster.local/ns/istio-system/sa/ingress"
    registry_ns = REGISTRY.replace("namespace: tutorial", "namespace: istio-system")
    config = load([conformance / "legacy" / "istio-1.1.17__mixer-rule-deny-ip.yaml", Text(registry_ns)],
                  namespace="istio-system")
    snap = build(config, Workload(name="productpage", namespace="istio-system", labels={"app": "productpage"}))
    legacy = _enforcer(snap)
    denied = legacy.mixer(request(principal=ingress, source_ip="10.0.0.9"), "/")
    assert denied is not None
    assert denied.body == b"PERMISSION_DENIED:whitelistip.istio-system:10.0.0.9 is not whitelisted"
    assert legacy.mixer(request(principal="cluster.local/ns/istio-system/sa/other", source_ip="10.0.0.9"), "/") is None


def _origin_setup(conformance: Path, file: str, app: str, namespace: str) -> tuple[LegacyEnforcer, Authenticator]:
    snap = _snapshot([conformance / "legacy" / file], app, namespace)
    jwks = (conformance / "jwt" / "jwks.json").read_bytes()
    registry = JwksRegistry(background=False, fetch=lambda url, timeout: jwks if "jwks.json" in url else b"{}")
    auth = Authenticator([r.spec for r in snap.local_policies.request_authentication], registry)
    for cache in auth.caches:
        cache.refresh()
    return _enforcer(snap), auth


def _origin(legacy: LegacyEnforcer, auth: Authenticator, path: str, token: str | None) -> Denial | None:
    req = request(path, headers=[("authorization", f"Bearer {token}")] if token else [])
    norm = paths.normalize(req.raw_path, "BASE")
    assert isinstance(norm, paths.Normalized)
    outcome = auth.authenticate(req, norm.path, norm.query)
    return legacy.origin(req, norm.path, outcome)


def test_jwt_origin_on_customer(conformance: Path) -> None:
    legacy, auth = _origin_setup(conformance, "tutorial-1.1.x__enduser-authentication-jwt.yml", "customer", "tutorial")
    demo = (conformance / "jwt" / "demo.jwt").read_text().strip()
    tampered = (conformance / "jwt" / "istio-tutorial-invalid-demo.jwt").read_text().strip()
    assert legacy.use_origin(8080)
    assert _origin(legacy, auth, "/", demo) is None
    assert _origin(legacy, auth, "/", None) == ORIGIN_FAILED
    assert _origin(legacy, auth, "/", tampered) == ORIGIN_FAILED
    preflight = request(method="OPTIONS", headers=[("origin", "x"), ("access-control-request-method", "GET")])
    assert legacy.origin(preflight, "/", AuthnOutcome(None)) is None


def test_trigger_rules(conformance: Path) -> None:
    legacy, auth = _origin_setup(conformance, "istio-1.1.17__authn-policy-jwt.yaml", "c", "default")
    demo = (conformance / "jwt" / "demo.jwt").read_text().strip()
    assert _origin(legacy, auth, "/jwt2", demo) is None  # only the Istio demo issuer is triggered here
    assert _origin(legacy, auth, "/health_check", None) is None  # no JWT is triggered
    assert _origin(legacy, auth, "/other", demo) == ORIGIN_FAILED  # the Google issuer is required
    assert _origin(legacy, auth, "/jwt2?x#y", None) == ORIGIN_FAILED
    # workload e is not a target: nothing required
    other, auth_e = _origin_setup(conformance, "istio-1.1.17__authn-policy-jwt.yaml", "e", "default")
    assert _origin(other, auth_e, "/other", None) is None


def test_port_level_origin_target(conformance: Path) -> None:
    """enable-jwt targets d on port 80 only: a token is required there and not on 8080."""
    legacy, auth = _origin_setup(conformance, "istio-1.1.17__authn-policy-jwt.yaml", "d", "default")
    req80, req8080 = request("/other", port=80), request("/other", port=8080)
    assert legacy.origin(req80, "/other", auth.authenticate(req80, "/other", "")) == ORIGIN_FAILED
    assert legacy.origin(req8080, "/other", auth.authenticate(req8080, "/other", "")) is None
