"""The router's prebuilt forwards: one shared record per (match, target, port), the request's path kept out of it."""

from __future__ import annotations

import random

from pymesh import Mesh
from pymesh.config.load import Text
from pymesh.outbound.decision import info_for

HOST = "svc.ns1.svc.cluster.local"
CONFIG = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: ns1}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc, namespace: ns1}}
spec:
  hosts: [{HOST}]
  http:
  - name: rewritten
    match: [{{uri: {{prefix: /old/}}}}]
    rewrite: {{uri: /new/}}
    route: [{{destination: {{host: {HOST}}}}}]
  - name: two-blocks
    match: [{{name: a, headers: {{x-a: {{exact: "1"}}}}}}, {{name: b, headers: {{x-b: {{prefix: "y"}}}}}}]
    route: [{{destination: {{host: {HOST}}}}}]
  - name: rest
    route: [{{destination: {{host: {HOST}}}}}]
"""


def _mesh() -> Mesh:
    return Mesh([Text(CONFIG, "<forwards>")], namespace="ns1")


def test_a_forward_without_rewrite_is_shared_and_keeps_each_requests_path() -> None:
    mesh = _mesh()
    router, rng = mesh._live.router, random.Random(1)
    first = router.decide(info_for("GET", f"http://{HOST}:8080/a?x=1"), rng)
    second = router.decide(info_for("GET", f"http://{HOST}:8080/b"), rng)
    assert first is second  # nothing per request in it
    assert first.kind == "forward"
    assert first.path is None  # None: the request's own path
    assert mesh.route("GET", f"http://{HOST}:8080/a?x=1").path == "/a?x=1"
    assert mesh.route("GET", f"http://{HOST}:8080/b").path == "/b"


def test_a_rewrite_is_computed_per_request() -> None:
    mesh = _mesh()
    router, rng = mesh._live.router, random.Random(1)
    one = router.decide(info_for("GET", f"http://{HOST}:8080/old/1"), rng)
    two = router.decide(info_for("GET", f"http://{HOST}:8080/old/2"), rng)
    assert (one.path, two.path) == ("/new/1", "/new/2")
    assert one.cluster is two.cluster
    assert mesh.route("GET", f"http://{HOST}:8080/old/3").path == "/new/3"


def test_forwards_are_kept_apart_by_match_block_and_port() -> None:
    mesh = _mesh()
    router, rng = mesh._live.router, random.Random(1)
    by_a = router.decide(info_for("GET", f"http://{HOST}:8080/", {"x-a": "1"}), rng)
    by_b = router.decide(info_for("GET", f"http://{HOST}:8080/", {"x-b": "yes"}), rng)
    assert by_a.route is by_b.route
    assert (by_a.match.name, by_b.match.name) == ("a", "b")  # type: ignore[union-attr]
    assert mesh.route("GET", f"http://{HOST}:8080/", {"x-b": "yes"}).match_name == "b"
    other_port = router.decide(info_for("GET", f"http://{HOST}:9090/"), rng)
    same_port = router.decide(info_for("GET", f"http://{HOST}:8080/"), rng)
    assert other_port is not same_port
    assert other_port.port == same_port.port == 8080  # the service's only port either way
