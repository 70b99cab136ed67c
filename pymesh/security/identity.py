"""Who a workload is: SPIFFE IDs, verified peers, and the certificate a workload presents.

A workload's identity is ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``,
the form Istio writes; Istio's policies name it without the scheme (the *principal*).
Certificates come in Istio's file layout: ``cert-chain.pem`` (leaf first, then any
intermediates), ``key.pem`` and ``root-cert.pem``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pymesh.errors import MeshError

__all__ = [
    "CERT_CHAIN_FILE",
    "KEY_FILE",
    "ROOT_CERT_FILE",
    "CertificateError",
    "PeerIdentity",
    "SpiffeId",
    "WorkloadCertificate",
    "write_private",
]

CERT_CHAIN_FILE = "cert-chain.pem"
KEY_FILE = "key.pem"
ROOT_CERT_FILE = "root-cert.pem"

MAX_ID_BYTES = 2048  # SPIFFE-ID.md: an ID longer than this is invalid, not merely unusual
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")  # lowercase only: "Cluster.local" is a different, invalid name
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")  # no percent-encoding, so there is one spelling per ID


class CertificateError(MeshError, ValueError):
    """A certificate, key or bundle could not be read or does not make a workload identity."""


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity in Istio's form: trust domain, namespace, service account."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        # Building one by hand goes through the same rules as parsing, so a SpiffeId is always valid.
        SpiffeId.parse(f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """``spiffe://td/ns/x/sa/y`` -> SpiffeId; ValueError saying what is wrong otherwise."""
        if not isinstance(uri, str):
            raise ValueError(f"SPIFFE ID must be a string, not {type(uri).__name__}")
        if len(uri.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise ValueError(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
        if "\x00" in uri:
            raise ValueError("SPIFFE ID contains a NUL character")
        scheme, sep, rest = uri.partition("://")
        if not sep or scheme != "spiffe":
            raise ValueError(f"{uri[:80]!r} is not a SPIFFE ID: the scheme must be 'spiffe://'")
        trust_domain, slash, path = rest.partition("/")
        if not trust_domain:
            raise ValueError(f"{uri[:80]!r}: the trust domain is empty")
        if not _TRUST_DOMAIN.fullmatch(trust_domain):
            raise ValueError(f"{uri[:80]!r}: trust domain {trust_domain!r} may hold only lowercase letters, "
                             "digits, '.', '-' and '_' (no port, user info or percent-encoding)")
        if not slash or not path:
            raise ValueError(f"{uri[:80]!r}: a workload SPIFFE ID needs a path /ns/<namespace>/sa/<service-account>")
        segments = path.split("/")
        for segment in segments:
            if not segment:
                raise ValueError(f"{uri[:80]!r}: the path has an empty segment (or a trailing '/')")
            if segment in (".", ".."):
                raise ValueError(f"{uri[:80]!r}: the path may not contain '.' or '..' segments")
            if not _SEGMENT.fullmatch(segment):
                raise ValueError(f"{uri[:80]!r}: path segment {segment[:40]!r} may hold only letters, digits, "
                                 "'.', '-' and '_' (no percent-encoding, query or fragment)")
        if len(segments) != 4 or segments[0] != "ns" or segments[2] != "sa":
            raise ValueError(f"{uri[:80]!r}: the path must be /ns/<namespace>/sa/<service-account>, as Istio writes it")
        self = object.__new__(cls)
        object.__setattr__(self, "trust_domain", trust_domain)
        object.__setattr__(self, "namespace", segments[1])
        object.__setattr__(self, "service_account", segments[3])
        return self

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """Istio's principal form, used by AuthorizationPolicy ``principals``: ``td/ns/x/sa/y``."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A peer whose certificate chain was verified: its SPIFFE ID and the chain it sent, leaf first."""

    spiffe_id: SpiffeId
    chain_der: tuple[bytes, ...]

    @property
    def principal(self) -> str:
        return self.spiffe_id.principal

    @property
    def namespace(self) -> str:
        return self.spiffe_id.namespace

    def chain_pem(self) -> tuple[str, ...]:
        """The chain as PEM strings, the form the ASGI TLS extension's ``client_cert_chain`` uses."""
        return tuple(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode("ascii")
                     for der in self.chain_der)

    def __repr__(self) -> str:
        return f"PeerIdentity({self.spiffe_id.uri})"


@dataclass(frozen=True, slots=True)
class WorkloadCertificate:
    """What a workload presents: its chain and key, and the roots it trusts (Istio's three files)."""

    cert_chain_pem: bytes
    key_pem: bytes
    root_pem: bytes
    spiffe_id: SpiffeId
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_pem(cls, cert_chain_pem: bytes, key_pem: bytes, root_pem: bytes, *,
                 source: str = "<memory>") -> WorkloadCertificate:
        """Check that the three parts make one identity: a SPIFFE leaf, its key, at least one root."""
        chain = load_certs(cert_chain_pem, f"{source}/{CERT_CHAIN_FILE}")
        load_certs(root_pem, f"{source}/{ROOT_CERT_FILE}")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"{source}/{KEY_FILE}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise CertificateError(f"{source}/{KEY_FILE}: only ECDSA and RSA keys are supported")
        leaf = chain[0]
        if public_key_der(key.public_key()) != public_key_der(leaf.public_key()):
            raise CertificateError(f"{source}/{KEY_FILE} does not belong to the first certificate in "
                                   f"{source}/{CERT_CHAIN_FILE}")
        try:
            spiffe_id = spiffe_id_of(leaf)
        except ValueError as exc:
            raise CertificateError(f"{source}/{CERT_CHAIN_FILE}: {exc}") from None
        return cls(bytes(cert_chain_pem), bytes(key_pem), bytes(root_pem), spiffe_id,
                   leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> WorkloadCertificate:
        """Read ``cert-chain.pem``, ``key.pem`` and ``root-cert.pem`` from a folder (Istio's layout)."""
        folder = Path(path)
        parts = [read_file(folder / name) for name in (CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE)]
        return cls.from_pem(*parts, source=str(folder))

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write Istio's three files into a folder; the key file is readable by its owner only."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CERT_CHAIN_FILE).write_bytes(self.cert_chain_pem)
        (folder / ROOT_CERT_FILE).write_bytes(self.root_pem)
        write_private(folder / KEY_FILE, self.key_pem)

    @property
    def chain_der(self) -> tuple[bytes, ...]:
        """The chain this workload sends, leaf first, as DER."""
        return tuple(c.public_bytes(serialization.Encoding.DER)
                     for c in x509.load_pem_x509_certificates(self.cert_chain_pem))

    @property
    def serial_number(self) -> int:
        return x509.load_pem_x509_certificate(self.cert_chain_pem).serial_number

    def __repr__(self) -> str:
        # Never the key: a repr ends up in logs and tracebacks.
        return (f"WorkloadCertificate({self.spiffe_id.uri}, not_before={self.not_before.isoformat()}, "
                f"not_after={self.not_after.isoformat()})")


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in a certificate's only URI SAN; ValueError when it has none, several, or a bad one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("certificate has no subjectAltName, so no SPIFFE ID") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError(f"certificate must have exactly one URI SAN (the SPIFFE ID), it has {len(uris)}")
    return SpiffeId.parse(uris[0])


def write_private(path: Path, data: bytes) -> None:
    """Create (or replace) a file with mode 0600 from the first byte, so a key is never briefly world-readable."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask and ignored for an existing file
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_certs(pem: bytes, source: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateError(f"{source}: no PEM certificate could be read") from None
    if not certs:
        raise CertificateError(f"{source}: holds no certificate")
    return certs


def public_key_der(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | object) -> bytes:
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return b""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
