"""The per-request shortcuts of the inbound pipeline keep its verdicts: the normalized-path memo,
lazily decoded headers, prebuilt verdicts, and a reload taking effect on the very next request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymesh
from pymesh import asgi
from pymesh.inbound.request import InboundRequest
from tests.inbound.helpers import WORKLOAD
from tests.inbound.helpers import asgi_call as call

ALLOW_OK = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-ok, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules: [{to: [{operation: {methods: [GET], paths: ["/ok"]}}]}]
"""
DENY_OK = """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-ok, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/ok"]}}]}]
"""
MERGE = """---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    pathNormalization: {normalization: MERGE_SLASHES}
"""


def test_a_reload_that_adds_a_policy_applies_to_the_next_request(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(ALLOW_OK)
    with pymesh.Mesh.from_path(config, workload=WORKLOAD) as mesh:
        mw = asgi.MeshMiddleware(None, mesh=mesh)  # type: ignore[arg-type]
        assert [call(mw, b"/ok")[0] for _ in range(3)] == [200, 200, 200]  # the path memo is warm
        config.write_text(ALLOW_OK + DENY_OK)
        mesh.reload()
        assert call(mw, b"/ok")[0] == 403
        config.write_text("")
        mesh.reload()
        assert call(mw, b"/elsewhere")[0] == 200  # no policy left: no policy step


def test_a_reload_that_changes_normalization_is_not_hidden_by_the_memo(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(ALLOW_OK)
    with pymesh.Mesh.from_path(config, workload=WORKLOAD) as mesh:
        mw = asgi.MeshMiddleware(None, mesh=mesh)  # type: ignore[arg-type]
        assert [call(mw, b"//ok")[0] for _ in range(2)] == [403, 403]  # BASE keeps "//ok": no ALLOW matches
        config.write_text(ALLOW_OK + MERGE)
        mesh.reload()
        status, seen = call(mw, b"//ok")
        assert status == 200
        assert seen["raw_path"] == b"/ok"


def test_remembered_verdicts_are_the_same_as_fresh_ones(make_mesh: Any) -> None:
    mw = asgi.MeshMiddleware(None, mesh=make_mesh())  # type: ignore[arg-type]
    for _ in range(2):  # the first call computes, the second reads the memo
        assert call(mw, b"/a/%2Fb")[0] == 400  # an escaped slash the app would decode
        assert call(mw, b"/a/%00")[0] == 400
        status, seen = call(mw, b"/a/./b/../c%7E")
        assert status == 200
        assert seen["raw_path"] == b"/a/c~"
        status, seen = call(mw, b"/plain")
        assert status == 200
        assert seen["raw_path"] == b"/plain"


def test_identity_headers_are_stripped_in_any_case(make_mesh: Any) -> None:
    mw = asgi.MeshMiddleware(None, mesh=make_mesh())  # type: ignore[arg-type]
    headers = [(b"Host", b"web"), (b"X-Forwarded-Client-Cert", b"URI=spiffe://cluster.local/ns/a/sa/b"),
               (b"x-kept", b"1")]
    status, seen = call(mw, b"/", headers)
    assert status == 200
    assert seen["headers"] == [(b"host", b"web"), (b"x-kept", b"1")]
    assert seen["pymesh"].peer_principal is None


def test_raw_headers_decode_only_when_read() -> None:
    raw = [(b"Host", b"web"), (b"X-A", b"1\xe9")]
    request = InboundRequest("GET", "/", "web", None, "http", "", 0, "", 0, None, raw_headers=raw)
    assert request.has_any(frozenset({"x-a"}))
    assert not request.has_any(frozenset({"x-b"}))
    assert not request.headers_changed
    assert request.header_values("X-A") == ["1\u00e9"]
    assert request.headers == (("host", "web"), ("x-a", "1\u00e9"))
    assert not request.headers_changed
    request.headers = request.headers[:1]
    assert request.headers_changed


def test_setting_headers_before_reading_them_counts_as_a_change() -> None:
    request = InboundRequest("GET", "/", "web", None, "http", "", 0, "", 0, None, raw_headers=[(b"host", b"web")])
    request.headers = (("host", "web"),)
    assert request.headers_changed

