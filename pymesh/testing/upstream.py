"""Real loopback HTTP servers that stand in for workloads in tests and demos.

Each ``Upstream`` is a threaded HTTP/1.1 server on 127.0.0.1 that answers every request
with a JSON echo of what it received (its own name, method, path, headers, body), so a
test can see exactly what the mesh sent. ``respond`` swaps the behaviour (status,
headers, body, delay) without restarting it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "Reply", "Upstream", "service_yaml"]


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    peer_cert: bytes | None = None  # the client's certificate (DER), on a TLS upstream that got one


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # None: the JSON echo
    delay: float = 0.0


Behaviour = Callable[[Received], Reply]


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # socketserver's 5 drops handshakes under a burst of new connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            return  # a refused TLS handshake or a client gone: what TLS tests provoke on purpose
        super().handle_error(request, client_address)


@dataclass(eq=False)
class Upstream:
    """A workload instance: ``name`` (e.g. "recommendation-v2") and its labels."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    locality: str = ""
    service_account: str = "default"
    ssl_context: ssl.SSLContext | None = None  # serve TLS (e.g. ``pymesh.security.server_context``)
    received: list[Received] = field(default_factory=list)
    _behaviour: Behaviour | None = None
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: set[socket.socket] = field(default_factory=set)
    _accepted: int = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "upstream not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def accepted(self) -> int:
        """Connections accepted so far (TLS handshakes completed, on a TLS upstream)."""
        return self._accepted

    def respond(self, behaviour: Behaviour | Reply | None) -> None:
        """Set how to answer: a fixed ``Reply``, a function of the request, or None for the echo."""
        if isinstance(behaviour, Reply):
            fixed = behaviour
            self._behaviour = lambda _: fixed
        else:
            self._behaviour = behaviour

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def reset(self) -> None:
        with self._lock:
            self.received.clear()

    def start(self) -> Upstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                conn = self.request
                self.peer_cert: bytes | None = None
                if isinstance(conn, ssl.SSLSocket):
                    conn.settimeout(10.0)
                    conn.do_handshake()  # a refused handshake ends here: nothing is read or answered
                    conn.settimeout(None)
                    self.peer_cert = conn.getpeercert(binary_form=True)
                super().setup()
                with upstream._lock:
                    upstream._connections.add(self.connection)
                    upstream._accepted += 1

            def finish(self) -> None:
                with upstream._lock:
                    upstream._connections.discard(self.connection)
                super().finish()

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                self.peer_cert)
                with upstream._lock:
                    upstream.received.append(seen)
                behaviour = upstream._behaviour
                reply = behaviour(seen) if behaviour is not None else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                if payload is None:
                    payload = json.dumps({
                        "name": upstream.name, "method": seen.method, "path": seen.path,
                        "headers": dict(seen.headers), "body": body.decode("utf-8", "replace"),
                    }).encode()
                self.send_response(reply.status)
                names = {k.lower() for k, _ in reply.headers}
                for k, v in reply.headers:
                    self.send_header(k, v)
                if "content-type" not in names:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

        server = _Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.ssl_context is not None:
            # The handshake runs in the handler's thread, so a slow or failed one stalls no one else.
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True,
                                                         do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"upstream-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and cut every open connection, as a workload that died would."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service_yaml(host: str, namespace: str, upstreams: Iterable[Upstream], *, port: int = 8080,
                 protocol: str = "HTTP") -> str:
    """A ServiceEntry for ``host`` plus one WorkloadEntry per upstream, as loopback endpoints."""
    ups = list(upstreams)
    app = host.split(".")[0]
    docs = [
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {app}, namespace: {namespace}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: {protocol}}}]
  workloadSelector: {{labels: {{app: {app}}}}}
"""
    ]
    for u in ups:
        labels = {"app": app, **u.labels}
        label_text = ", ".join(f"{k}: {json.dumps(v)}" for k, v in labels.items())
        locality = f"\n  locality: {u.locality}" if u.locality else ""
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {u.name}, namespace: {namespace}}}
spec:
  address: 127.0.0.1
  ports: {{http: {u.port}}}
  labels: {{{label_text}}}
  serviceAccount: {u.service_account}{locality}
"""
        )
    return "---\n".join(docs)
