"""Two Host headers on a real server: refused with 400 before any policy judges either (AZ-04)."""

from __future__ import annotations

import socket

import pytest

import pymesh
from pymesh import asgi, wsgi
from tests.inbound.helpers import TIMEOUT, WORKLOAD, WerkzeugThread, wsgi_who
from tests.inbound.helpers import asgi_call as call

DENY_SECRET = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-secret, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {hosts: ["secret.com"]}}]}]
"""


def status_of(port: int, *hosts: str) -> int:
    head = "GET / HTTP/1.1\r\n" + "".join(f"Host: {h}\r\n" for h in hosts) + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize(("hosts", "status"), [
    (("secret.com",), 403),
    (("other.com",), 200),
    (("other.com", "secret.com"), 400),  # Werkzeug joins them into HTTP_HOST "other.com,secret.com"
    (("secret.com", "other.com"), 400),
])
def test_werkzeug(hosts: tuple[str, ...], status: int) -> None:
    with pymesh.Mesh.from_yaml(DENY_SECRET, workload=WORKLOAD) as mesh, \
            WerkzeugThread(wsgi.MeshMiddleware(wsgi_who, mesh=mesh)) as server:
        assert status_of(server.port, *hosts) == status


def test_asgi() -> None:
    # Servers such as h11 refuse a second Host themselves; the middleware does not rely on it.
    with pymesh.Mesh.from_yaml(DENY_SECRET, workload=WORKLOAD) as mesh:
        mw = asgi.MeshMiddleware(None, mesh=mesh)  # type: ignore[arg-type]
        assert call(mw, b"/", [(b"host", b"secret.com")])[0] == 403
        assert call(mw, b"/", [(b"host", b"other.com")])[0] == 200
        assert call(mw, b"/", [(b"host", b"secret.com"), (b"host", b"other.com")])[0] == 400
        assert call(mw, b"/", [(b"host", b""), (b"Host", b"secret.com")])[0] == 400
        assert call(mw, b"/", [(b"host", b"other.com,secret.com")])[0] == 400  # as a WSGI server joins them
