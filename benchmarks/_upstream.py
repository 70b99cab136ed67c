"""A fast loopback HTTP/1.1 upstream for benchmarks, in its own process.

The server is raw asyncio (a ``Protocol``, no framework, no HTTP library): it answers every
request with the same small ``200 ok``, keeps connections alive and handles pipelining.
It runs in a child process so its CPU is not charged to the client being measured, and
so it can be pinned to a core of its own or to the client's (``reference/perf-anchors.md``
section 2.0: on a small VM, same-core placement is what makes runs repeatable).

Protocol with the parent: the child prints ``PORT <n>`` on stdout once it listens, and
exits on SIGTERM, on SIGINT, or (``--watch-stdin``, as ``UpstreamProcess`` starts it) when
its stdin reaches EOF, so it dies with its parent even if the parent is killed. ``UpstreamProcess`` drives all of that::

    with UpstreamProcess(cpu=1) as up:
        httpx.get(up.url)
        up.cpu_ns()   # the child's CPU time so far, nanoseconds

Run alone: ``python -m benchmarks._upstream [--cpu N] [--port P]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import select
import signal
import ssl
import subprocess
import sys
import time
from types import TracebackType

from benchmarks._harness import proc_cpu_ns

__all__ = ["FAILURE", "RESPONSE", "UpstreamProcess", "serve"]

BODY = b"ok"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n" + BODY
FAILURE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nunavailable"
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


class _Http(asyncio.Protocol):
    """One connection: split the byte stream into requests, answer each with ``RESPONSE``.

    With a ``fail_rate`` (the class attribute, set once per process) a seeded share of the
    answers is ``FAILURE`` (503) instead: the "flaky upstream" of the retry scenarios.
    """

    __slots__ = ("_buf", "_transport")
    fail_rate: float = 0.0
    rng = random.Random(7)
    connections = 0  # accepted so far (TLS: handshakes); ``GET /__connections`` answers it

    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        _Http.connections += 1

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        while True:
            end = buf.find(_HEAD_END)
            if end < 0:
                break
            body = _content_length(buf, end)
            total = end + 4 + body
            if len(buf) < total:
                break
            if buf.startswith(b"GET /__connections "):
                out.append(_counter(_Http.connections))
            else:
                out.append(FAILURE if self.fail_rate and self.rng.random() < self.fail_rate else RESPONSE)
            buf = buf[total:]
        self._buf = buf
        transport = self._transport
        if transport is None:
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if len(buf) > _MAX_HEAD:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _counter(value: int) -> bytes:
    body = str(value).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def _content_length(buf: bytes, end: int) -> int:
    """The request's body length (0 unless it carries ``content-length``); no chunked bodies."""
    head = buf[:end]
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    j = head.find(b"\r\n", i + 2)
    raw = head[i + 17 : j if j >= 0 else len(head)]
    try:
        return int(raw.strip())
    except ValueError:
        return 0


async def serve(host: str = "127.0.0.1", port: int = 0, *, watch_stdin: bool = False,
                ssl_context: ssl.SSLContext | None = None) -> None:
    """Listen, print ``PORT <n>``, serve until SIGTERM/SIGINT (or EOF on stdin, if watched)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stdin_fd: int | None = None
    if watch_stdin:
        fd = sys.stdin.fileno()
        os.set_blocking(fd, False)
        loop.add_reader(fd, _on_stdin, fd, stop)
        stdin_fd = fd
    server = await loop.create_server(_Http, host, port, reuse_address=True, backlog=128, ssl=ssl_context)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        if stdin_fd is not None:
            loop.remove_reader(stdin_fd)
        server.close()
        await server.wait_closed()


def _on_stdin(fd: int, stop: asyncio.Event) -> None:
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:  # the parent closed our stdin or died
        stop.set()


class UpstreamProcess:
    """The upstream server as a child process: start, address, CPU time, stop."""

    def __init__(
        self,
        *,
        cpu: int | None = None,
        host: str = "127.0.0.1",
        start_timeout: float = 10.0,
        fail_rate: float = 0.0,
        tls: tuple[str, str, str | None] | None = None,
    ) -> None:
        """``fail_rate``: share of 503 answers; ``tls``: (cert file, key file, CA file to require client
        certificates from, or None) to serve HTTPS instead."""
        self.cpu = cpu
        self.host = host
        self.start_timeout = start_timeout
        self.fail_rate = fail_rate
        self.tls = tls
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "upstream not started"
        return self._proc.pid

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    def start(self) -> UpstreamProcess:
        args = [sys.executable, "-m", "benchmarks._upstream", "--host", self.host, "--watch-stdin"]
        if self.cpu is not None:
            args += ["--cpu", str(self.cpu)]
        if self.fail_rate:
            args += ["--fail-rate", str(self.fail_rate)]
        if self.tls is not None:
            cert, key, ca = self.tls
            args += ["--tls-cert", cert, "--tls-key", key] + (["--tls-client-ca", ca] if ca else [])
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        self._proc = proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            self.port = self._read_port(proc)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, proc: subprocess.Popen[bytes]) -> int:
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"upstream did not report its port (exit code {proc.poll()})")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 1)
                if not chunk:
                    raise RuntimeError(f"upstream exited before reporting its port (exit code {proc.wait()})")
                line += chunk
        word, _, value = line.decode().strip().partition(" ")
        if word != "PORT" or not value.isdigit():
            raise RuntimeError(f"unexpected first line from upstream: {line!r}")
        return int(value)

    def cpu_ns(self) -> int:
        """CPU time (user + system, all threads) the upstream has used so far."""
        return proc_cpu_ns(self.pid)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> UpstreamProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF (parent gone)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="answer this share of requests with 503")
    parser.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    parser.add_argument("--tls-client-ca", default=None, help="require client certificates signed by this CA")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    _Http.fail_rate = args.fail_rate
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            context.load_verify_locations(args.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, watch_stdin=args.watch_stdin, ssl_context=context))


if __name__ == "__main__":
    main()
