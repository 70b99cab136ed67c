"""Throwaway mesh certificates for the mTLS scenarios: one CA, a server and a client leaf.

ECDSA P-256, SPIFFE URI SANs as Istio issues them (``spiffe://cluster.local/ns/bench/sa/...``),
plus ``localhost`` / ``127.0.0.1`` / the SNI name so both Envoy and Python's ``ssl`` accept the
server. Written as PEM files into a folder the caller owns and removes.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["MeshCerts", "make_certs"]

SNI = "upstream.bench.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class MeshCerts:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> str:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, name: str, server: bool
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"spiffe://cluster.local/ns/bench/sa/{name}")]
    if server:
        sans += [x509.DNSName("localhost"), x509.DNSName(SNI), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pymesh-bench")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_certs(folder: Path) -> MeshCerts:
    """A CA and two leaves (server "upstream", client "client") as PEM files in ``folder``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pymesh bench CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    server, server_key = _leaf(ca_key, ca_name, "upstream", True)
    client, client_key = _leaf(ca_key, ca_name, "client", False)
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    (folder / "client.pem").write_bytes(client.public_bytes(pem))
    return MeshCerts(
        ca=str(folder / "ca.pem"),
        server_cert=str(folder / "server.pem"),
        server_key=_write_key(folder / "server-key.pem", server_key),
        client_cert=str(folder / "client.pem"),
        client_key=_write_key(folder / "client-key.pem", client_key),
    )
