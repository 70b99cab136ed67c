"""Real TLS over 127.0.0.1 for the security tests, plus certificate forging for the bad cases.

- ``TLSServer``: a threaded loopback server. Each connection does the handshake with the
  given context, verifies the client with ``peer_from_ssl_object`` (as the inbound side
  will) and answers one line, ``ok <principal|->``, then echoes until the client closes.
  Outcomes are recorded per connection.
- ``talk``: a client connection: handshake, optional server check, read the answer.
- ``forge``: a leaf with whatever extensions a test needs, signed by a CA folder's key,
  built with cryptography directly rather than with the code under test.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pymesh.security import MeshCA, PeerIdentity, WorkloadCertificate, peer_from_ssl_object, verify_server
from tests.conftest import shared_dir

TD = "cluster.local"


@dataclass
class Outcome:
    peer: PeerIdentity | None = None
    error: BaseException | None = None


@dataclass
class TLSServer:
    context: ssl.SSLContext
    roots: Callable[[], bytes]
    trust_domains: Collection[str] = (TD,)
    legacy: bool = False
    linger: bool = True  # False: read one request, then close (for HTTP clients such as curl)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        outcome = Outcome()
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                outcome.peer = peer_from_ssl_object(tls, self.roots(), trust_domains=self.trust_domains,
                                                    allow_legacy_chain=self.legacy, peer_role="client")
                who = outcome.peer.principal if outcome.peer else "-"
                tls.sendall(f"ok {who}\n".encode())
                if not self.linger:
                    tls.recv(65536)  # the request; closing with it unread would reset the connection
                while self.linger and tls.recv(1024):  # keep the connection until the client closes it
                    tls.sendall(b"echo\n")
        except Exception as exc:
            outcome.error = exc
            conn.close()
        with self._lock:
            self.outcomes.append(outcome)

    def wait(self, count: int = 1) -> list[Outcome]:
        """The outcomes, once ``count`` connections have finished (a connection ends after the client's)."""
        deadline = time.monotonic() + 5
        while len(self.outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.outcomes) >= count, f"{len(self.outcomes)} of {count} connections finished"
        return self.outcomes

    def close(self) -> None:
        self._closed = True
        self.sock.close()


@dataclass
class Reply:
    peer: PeerIdentity | None
    principal: str
    server_serial: int
    tls: ssl.SSLSocket


def talk(port: int, context: ssl.SSLContext, *, roots: bytes | None = None, expected: Sequence[str] = (),
         trust_domains: Collection[str] = (TD,), legacy: bool = False, server_hostname: str | None = None,
         keep: bool = False) -> Reply:
    """Connect, handshake, check the server (when ``roots`` is given) and read the first line."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = context.wrap_socket(raw, server_hostname=server_hostname)
    try:
        peer = None
        if roots is not None:
            peer = verify_server(tls, roots, trust_domains=trust_domains, expected=expected,
                                 allow_legacy_chain=legacy)
        line = b""
        while not line.endswith(b"\n"):
            chunk = tls.recv(1024)
            if not chunk:
                raise ConnectionError("server closed the connection before answering")
            line += chunk
        _, principal = line.decode().split()
        served = tls.getpeercert(binary_form=True)
        assert served is not None
        return Reply(peer, principal, x509.load_der_x509_certificate(served).serial_number, tls)
    finally:
        if not keep:
            tls.close()


@pytest.fixture
def servers() -> Iterator[Callable[..., TLSServer]]:
    started: list[TLSServer] = []

    def start(context: ssl.SSLContext, roots: Callable[[], bytes] | bytes, **kw: object) -> TLSServer:
        get = roots if callable(roots) else (lambda: roots)
        server = TLSServer(context, get, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server
    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def mesh_ca() -> MeshCA:
    return MeshCA.init(TD)


@pytest.fixture(scope="session")
def other_ca() -> MeshCA:
    return MeshCA.init(TD)


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory: pytest.TempPathFactory, mesh_ca: MeshCA) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    mesh_ca.save(folder)
    return folder


@pytest.fixture(scope="session")
def samples() -> Path:
    return shared_dir() / "conformance" / "certs"


def ca_key(folder: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    name = "root-key.pem" if (folder / "root-key.pem").exists() else "ca-key.pem"
    key = serialization.load_pem_private_key((folder / name).read_bytes(), password=None)
    assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
    return key


def forge(folder: Path, *, sans: Sequence[x509.GeneralName] | None = None, ca: bool | None = False,
          key_usage: x509.KeyUsage | str | None = "leaf", eku: Sequence[x509.ObjectIdentifier] | None = None,
          key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
          hash_alg: hashes.HashAlgorithm | None = None, aki: bool = True) -> tuple[bytes, ...]:
    """A leaf signed by the CA in ``folder``, as DER chain (leaf only)."""
    issuer = x509.load_pem_x509_certificate(
        (folder / ("root-cert.pem" if (folder / "root-key.pem").exists() else "ca-cert.pem")).read_bytes())
    signer = ca_key(folder)
    private = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer.subject)
               .public_key(private.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1)))
    if sans is None:
        sans = [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/a/sa/b")]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=True)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage == "leaf":
        key_usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    if isinstance(key_usage, x509.KeyUsage):
        builder = builder.add_extension(key_usage, critical=True)
    if eku is None:
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if aki:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                                        critical=False)
    cert = builder.sign(signer, hash_alg or hashes.SHA256())  # type: ignore[arg-type]
    return (cert.public_bytes(serialization.Encoding.DER),)


def sample_workload(samples: Path, name: str) -> WorkloadCertificate:
    """Istio's ``workload-<name>`` sample as a WorkloadCertificate (roots: the 2018 sample root)."""
    return WorkloadCertificate.from_pem((samples / f"workload-{name}-cert.pem").read_bytes(),
                                        (samples / f"workload-{name}-key.pem").read_bytes(),
                                        (samples / "root-cert.pem").read_bytes(), source=str(samples))
