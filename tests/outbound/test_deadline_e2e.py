"""The route timeout is a deadline for the whole exchange, not a limit per socket read: an
upstream that drips its response head a byte at a time still gets 504 UT (RES-11, RES-16)."""

from __future__ import annotations

import socket
import threading
from typing import Any, cast

import pytest

from pymesh.testing.upstream import Upstream, service_yaml
from tests.outbound.conftest import Connect, MakeMesh, docs
from tests.outbound.test_resilience_e2e import FLAGS, URL, route_vs

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
GAP = 0.05  # between bytes: far below any timeout below, so no single read ever times out


class Drip:
    """A loopback server that answers every request one byte per ``GAP`` seconds (about 3 s)."""

    name, labels, locality, service_account = "drip", {"version": "v1"}, "", "default"

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.served = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.served += 1
            for i in range(len(HEAD)):
                if self.stopped.wait(GAP):
                    return
                try:
                    conn.sendall(HEAD[i:i + 1])
                except OSError:
                    return  # the client gave up: what the test wants

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def drip() -> Any:
    server = Drip()
    yield server
    server.close()


@pytest.mark.parametrize(("route", "flags", "tries"), [
    ("timeout: 0.4s\n    retries: {attempts: 0}", "UT", 1),
    # Each try cut at its own deadline; the retry too, then the retries are exhausted.
    ("retries: {attempts: 1, perTryTimeout: 0.4s, retryOn: 5xx}\n    timeout: 2s", "UT,URX", 2),
])
def test_a_dripping_upstream_gets_504_ut_at_the_deadline(drip: Drip, make_mesh: MakeMesh, connect: Connect,
                                                         route: str, flags: str, tries: int) -> None:
    mesh = make_mesh(docs(service_yaml("svc", "ns1", cast("list[Upstream]", [drip])), route_vs(route)))
    r = connect(mesh).send("GET", URL)
    # Without a deadline every read succeeds within GAP and the caller gets the 200, ~3 s later.
    assert r.status_code == 504
    assert r.headers[FLAGS] == flags
    assert drip.served == tries
