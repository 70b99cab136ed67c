"""CertificateSource: when it renews, what it does when renewal fails, and rotation under live traffic."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from pymesh import Workload
from pymesh.security import (
    CertificateSource,
    MeshCA,
    PeerVerificationError,
    WorkloadCertificate,
    merge_roots,
    peer_from_ssl_object,
)
from tests.security.conftest import TD, TLSServer, talk

Servers = Callable[..., TLSServer]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_renewal_is_due_at_half_life_within_jitter(mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("a", "b", ttl=timedelta(hours=24), backdate=timedelta(0))
    start, end = cert.not_before.timestamp(), cert.not_after.timestamp()
    times = [CertificateSource(cert, rng=random.Random(seed)).rotate_at for seed in range(50)]
    life = end - start
    assert all(start + 0.49 * life <= t <= start + 0.51 * life for t in times)
    assert max(times) - min(times) > 0.005 * life  # the jitter is really there
    exact = CertificateSource(cert, jitter=0.0)
    assert exact.rotate_at == pytest.approx(start + life / 2)
    quarter = CertificateSource(cert, grace_ratio=0.25, jitter=0.0)  # renew when a quarter of life remains
    assert quarter.rotate_at == pytest.approx(start + 0.75 * life)


def test_maybe_rotate_follows_the_clock(mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("a", "b")
    clock = Clock(cert.not_before.timestamp())
    source = CertificateSource.from_ca(mesh_ca, "a", "b", clock=clock, jitter=0.0)
    first = source.current
    seen: list[WorkloadCertificate] = []
    source.subscribe(seen.append)
    assert not source.maybe_rotate()
    clock.now = source.rotate_at + 1
    assert source.maybe_rotate()
    assert source.current is not first
    assert source.current.serial_number != first.serial_number
    assert source.version == 2
    assert seen == [source.current]
    assert not source.maybe_rotate(clock.now)  # the new certificate is not due yet


def test_failed_renewal_keeps_the_certificate_and_backs_off(mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("a", "b")
    calls: list[float] = []
    ca_up = False

    def renew() -> WorkloadCertificate:
        calls.append(clock.now)
        if not ca_up:
            raise ConnectionError("CA unreachable")
        return mesh_ca.issue("a", "b")

    clock = Clock(cert.not_before.timestamp())
    source = CertificateSource(cert, renew, clock=clock, jitter=0.0)
    clock.now = source.rotate_at
    for _ in range(200):  # poll far more often than the backoff allows
        source.maybe_rotate()
        clock.now += 0.25
    assert source.current is cert
    assert isinstance(source.last_error, ConnectionError)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[:5] == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0], abs=0.25)  # exponential, not a tight loop
    assert len(calls) <= 7
    ca_up = True
    clock.now += 60
    assert source.maybe_rotate()
    assert source.current is not cert
    assert source.last_error is None


def test_from_dir_picks_up_files_rewritten_by_another_agent(mesh_ca: MeshCA, tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    mesh_ca.issue("a", "b").write(folder)
    source = CertificateSource.from_dir(folder)
    first = source.current
    with pytest.raises(RuntimeError, match="already in use"):
        source.rotate()  # nothing new on disk yet
    mesh_ca.issue("a", "b").write(folder)
    assert source.rotate().serial_number != first.serial_number


def test_in_flight_connection_survives_rotation_new_handshakes_get_the_new_cert(
        mesh_ca: MeshCA, servers: Servers) -> None:
    source = CertificateSource.from_ca(mesh_ca, "a", "server")
    server = servers(source.server_context(require_client_cert=True), lambda: source.roots_pem)
    client = client_ctx = CertificateSource.from_ca(mesh_ca, "a", "client").client_context()
    before = talk(server.port, client, roots=mesh_ca.root_pem, keep=True)
    try:
        assert before.server_serial == source.current.serial_number
        source.rotate()
        before.tls.sendall(b"still there?\n")
        assert before.tls.recv(64) == b"echo\n"
    finally:
        before.tls.close()
    after = talk(server.port, client_ctx, roots=mesh_ca.root_pem)
    assert after.server_serial == source.current.serial_number != before.server_serial


def test_rotation_under_concurrent_load_fails_no_handshake(mesh_ca: MeshCA, servers: Servers) -> None:
    # Test scale: a 3 s lifetime (whole seconds, as X.509 counts them), renewed when 60 % of it
    # remains, i.e. about every 1.2 s, by the background thread, for 3 s of traffic.
    def short(sa: str) -> CertificateSource:
        def renew() -> WorkloadCertificate:
            return mesh_ca.issue("load", sa, ttl=timedelta(seconds=3), backdate=timedelta(0))
        return CertificateSource(renew(), renew, grace_ratio=0.6)

    server_source, client_source = short("server"), short("client")
    server = servers(server_source.server_context(require_client_cert=True), lambda: server_source.roots_pem)
    stop = time.monotonic() + 3.0
    errors: list[BaseException] = []
    served: set[int] = set()
    count = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal count
        while time.monotonic() < stop:
            try:
                reply = talk(server.port, client_source.client_context(), roots=client_source.roots_pem,
                             expected=["spiffe://cluster.local/ns/load/sa/server"])
                assert reply.principal == "cluster.local/ns/load/sa/client"
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return
            with lock:
                count += 1
                served.add(reply.server_serial)

    with server_source, client_source, ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker) for _ in range(8)]:
            future.result()
    assert errors == []
    assert count > 100
    assert len(served) >= 3, "the server should have rotated several times during the run"
    assert server_source.version >= 3
    assert client_source.version >= 3
    assert [o.error for o in server.wait(count) if o.error is not None] == []


def test_root_rotation_with_an_overlapping_bundle(mesh_ca: MeshCA, servers: Servers) -> None:
    old_ca, new_ca = mesh_ca, MeshCA.init(TD)
    server_src = CertificateSource(old_ca.issue("a", "server"))
    client_src = CertificateSource(old_ca.issue("a", "client"))
    server = servers(server_src.server_context(require_client_cert=True), lambda: server_src.roots_pem)

    def call() -> None:
        talk(server.port, client_src.client_context(), roots=client_src.roots_pem)

    call()
    # 1. every workload trusts both roots; 2. the server moves to the new CA; 3. so does the client.
    for src in (server_src, client_src):
        src.set_extra_roots(new_ca.root_pem)
    call()
    server_src.rotate(new_ca.trusting(old_ca.root_pem).issue("a", "server"))
    call()
    client_src.rotate(new_ca.trusting(old_ca.root_pem).issue("a", "client"))
    call()
    # 4. the old root is dropped: a peer still holding an old-root certificate is refused.
    for src in (server_src, client_src):
        src.rotate(WorkloadCertificate.from_pem(src.current.cert_chain_pem, src.current.key_pem, new_ca.root_pem))
        src.set_extra_roots(b"")
    call()
    assert server_src.roots_pem == new_ca.root_pem
    # The laggard trusts both roots, so it is the server that refuses its old-root certificate.
    laggard = CertificateSource(old_ca.issue("a", "late"), extra_roots_pem=new_ca.root_pem)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(server.port, laggard.client_context(), roots=laggard.roots_pem)
    assert isinstance(server.wait(6)[-1].error, ssl.SSLError)


def test_merge_roots_deduplicates(mesh_ca: MeshCA, other_ca: MeshCA) -> None:
    merged = merge_roots(mesh_ca.root_pem, other_ca.root_pem, mesh_ca.root_pem, b"")
    assert merged == mesh_ca.root_pem + other_ca.root_pem


def test_asyncio_server_rotates_without_restart(mesh_ca: MeshCA) -> None:
    # The shape pymesh.serve has: one asyncio server, one SSLContext for its whole life.
    source = CertificateSource.from_ca(mesh_ca, "a", "server")
    client = CertificateSource.from_ca(mesh_ca, "a", "client")
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_from_ssl_object(writer.get_extra_info("ssl_object"), source.roots_pem, trust_domains={TD})
        seen.append(peer.principal if peer else "-")
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    async def serial_of_one_call(port: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client.client_context(),
                                                       server_hostname="")
        ssl_obj = writer.get_extra_info("ssl_object")
        der = ssl_obj.getpeercert(binary_form=True)
        assert await reader.readline() == b"ok\n"
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    async def main() -> tuple[int, int]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                            ssl=source.server_context(require_client_cert=True))
        port = server.sockets[0].getsockname()[1]
        async with server:
            first = await serial_of_one_call(port)
            source.rotate()
            second = await serial_of_one_call(port)
        return first, second

    first, second = asyncio.run(main())
    assert first != second
    assert second == source.current.serial_number
    assert seen == ["cluster.local/ns/a/sa/client"] * 2


def test_session_resumption_never_skips_validation_after_a_trust_change(mesh_ca: MeshCA, servers: Servers) -> None:
    # CVE-2022-21654: resumed sessions skipped re-validation after the trust bundle changed.
    # Servers send no tickets, but CPython has no switch for OpenSSL's server-side session-ID
    # cache, so a TLS 1.2 client can resume a session whose first connection is still open.
    # The handshake then verifies nothing; the peer chain is verified again, against the
    # current bundle, before the connection is used.
    old_ca, new_ca = mesh_ca, MeshCA.init(TD)
    source = CertificateSource(old_ca.issue("a", "server"), extra_roots_pem=new_ca.root_pem)
    server = servers(source.server_context(require_client_cert=True), lambda: source.roots_pem)
    client = CertificateSource(old_ca.issue("a", "client"), extra_roots_pem=new_ca.root_pem).client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # the version whose session IDs a client can offer back

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, client.wrap_socket(raw) as first:
        assert first.recv(100) == b"ok cluster.local/ns/a/sa/client\n"
        source.rotate(new_ca.issue("a", "server"))
        source.set_extra_roots(b"")  # the client's root is no longer trusted
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw2, \
                client.wrap_socket(raw2, session=first.session) as resumed:
            assert resumed.session_reused  # the handshake itself checked nothing
            assert resumed.recv(100) == b""
        refused = server.wait(1)[-1]
    assert refused.peer is None
    assert isinstance(refused.error, PeerVerificationError)
    assert "does not verify to a trusted root" in str(refused.error)


def test_for_workload_uses_cert_dir_then_ca_then_nothing(mesh_ca: MeshCA, tmp_path: Path) -> None:
    folder = tmp_path
    mesh_ca.issue("files", "from-disk").write(folder)
    on_disk = CertificateSource.for_workload(Workload(namespace="x", cert_dir=str(folder)), ca=mesh_ca)
    assert on_disk is not None
    assert on_disk.current.spiffe_id.principal == "cluster.local/ns/files/sa/from-disk"
    issued = CertificateSource.for_workload(
        Workload(namespace="tutorial", service_account="customer", trust_domain="example.org"), ca=mesh_ca)
    assert issued is not None
    assert issued.current.spiffe_id.uri == "spiffe://example.org/ns/tutorial/sa/customer"
    assert CertificateSource.for_workload(Workload(namespace="tutorial")) is None


def test_many_callers_at_the_due_moment_renew_once(mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("a", "b")
    calls = 0
    gate = threading.Event()

    def slow_renew() -> WorkloadCertificate:
        nonlocal calls
        calls += 1
        gate.wait(2)
        return mesh_ca.issue("a", "b")

    clock = Clock(cert.not_before.timestamp())
    source = CertificateSource(cert, slow_renew, clock=clock, jitter=0.0)
    clock.now = source.rotate_at + 1
    with ThreadPoolExecutor(16) as pool:
        results = [pool.submit(source.maybe_rotate) for _ in range(16)]
        time.sleep(0.1)
        gate.set()
        outcomes = [r.result() for r in results]
    assert calls == 1
    assert outcomes.count(True) == 1
    assert source.version == 2
