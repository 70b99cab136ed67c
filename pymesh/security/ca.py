"""A mesh certificate authority: a self-signed root, or an intermediate under a plug-in root.

What the certificates carry follows what Istio's CA writes, and the RFC 5280 profile that
Python 3.13's ``VERIFY_X509_STRICT`` and cryptography's verifier enforce:

- CA certificates: critical basicConstraints ``CA:TRUE`` (``pathlen:0`` for an
  intermediate), critical keyUsage keyCertSign + cRLSign + digitalSignature, subject and
  authority key identifiers, and a URI SAN ``spiffe://<trust-domain>`` naming the trust
  domain (X509-SVID allows it on signing certificates; ``load`` reads it back).
- Workload leaves: empty subject, a *critical* subjectAltName holding the one SPIFFE URI
  (critical because the subject is empty), critical basicConstraints ``CA:FALSE``, critical
  keyUsage digitalSignature + keyEncipherment, extendedKeyUsage serverAuth + clientAuth,
  key identifiers, ECDSA P-256 (or RSA 2048) signed with SHA-256, 24 h by default.

On disk a self-signed CA is ``root-cert.pem`` + ``root-key.pem``; an intermediate uses
Istio's ``cacerts`` layout: ``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``,
``cert-chain.pem``. Key files are written with mode 0600.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pymesh.security.identity import (
    CertificateError,
    SpiffeId,
    WorkloadCertificate,
    load_certs,
    public_key_der,
    read_file,
    write_private,
)

__all__ = ["DEFAULT_TTL", "MAX_TTL", "KeyType", "MeshCA"]

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DEFAULT_TTL = timedelta(hours=24)  # Istio's workload certificate TTL
MAX_TTL = timedelta(days=90)  # Istio's maximum workload certificate TTL
ROOT_TTL = timedelta(days=3650)  # Istio's self-signed root lives ten years
BACKDATE = timedelta(minutes=1)  # a fresh leaf must not look "not yet valid" to a peer whose clock lags a little

ROOT_CERT, ROOT_KEY = "root-cert.pem", "root-key.pem"
CA_CERT, CA_KEY, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "cert-chain.pem"


class MeshCA:
    """Signs workload certificates. Build with ``init``, ``from_plugin``, ``from_cacerts`` or ``load``."""

    __slots__ = ("_cert", "_chain", "_key", "root_pem", "trust_domain")

    def __init__(self, cert: x509.Certificate, key: PrivateKey, chain: Sequence[x509.Certificate],
                 root_pem: bytes, trust_domain: str) -> None:
        if public_key_der(key.public_key()) != public_key_der(cert.public_key()):
            raise CertificateError("the CA key does not belong to the CA certificate")
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise CertificateError("the CA certificate is not marked as a CA (basicConstraints)")
        except x509.ExtensionNotFound:
            raise CertificateError("the CA certificate has no basicConstraints, so it is no CA") from None
        SpiffeId(trust_domain, "x", "x")  # the trust domain must be one a SPIFFE ID can hold
        self._cert = cert
        self._key = key
        self._chain = tuple(chain)  # the signing certificate, then its issuers up to (and maybe including) a root
        self.root_pem = bytes(root_pem)
        self.trust_domain = trust_domain

    # -- making one ------------------------------------------------------------------------------

    @classmethod
    def init(cls, trust_domain: str = "cluster.local", *, key: KeyType = "ec", ttl: timedelta = ROOT_TTL,
             now: datetime | None = None) -> MeshCA:
        """A new self-signed root CA for ``trust_domain``."""
        moment = now or datetime.now(UTC)
        private = _new_key(key)
        name = _ca_name(trust_domain, "Root CA")
        ski = x509.SubjectKeyIdentifier.from_public_key(private.public_key())
        cert = (_ca_builder(name, name, private, trust_domain, moment - BACKDATE, moment + ttl, path_length=None)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
                .sign(private, _hash_for(private)))
        return cls(cert, private, [cert], _pem(cert), trust_domain)

    @classmethod
    def from_plugin(cls, root_cert_pem: bytes, root_key_pem: bytes, *, trust_domain: str = "cluster.local",
                    key: KeyType = "ec", ttl: timedelta = ROOT_TTL, now: datetime | None = None) -> MeshCA:
        """A new intermediate CA signed by a plug-in CA, as Istio's ``cacerts`` holds one.

        ``root_cert_pem`` is the signing CA's certificate, optionally followed by its own
        chain; the last certificate is the root workloads will trust. The intermediate
        never outlives its issuer.
        """
        issuers = load_certs(root_cert_pem, "plug-in root certificate")
        signer_key = _load_key(root_key_pem, "plug-in root key")
        parent = cls(issuers[0], signer_key, issuers, _pem(issuers[-1]), trust_domain)
        moment = now or datetime.now(UTC)
        private = _new_key(key)
        not_after = min(moment + ttl, parent._cert.not_valid_after_utc)
        cert = (_ca_builder(parent._cert.subject, _ca_name(trust_domain, "Intermediate CA"), private, trust_domain,
                            moment - BACKDATE, not_after, path_length=0)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
                .add_extension(_authority_key_id(parent._cert), critical=False)
                .sign(signer_key, _hash_for(signer_key)))
        return cls(cert, private, [cert, *issuers], parent.root_pem, trust_domain)

    @classmethod
    def from_cacerts(cls, ca_cert_pem: bytes, ca_key_pem: bytes, root_cert_pem: bytes,
                     cert_chain_pem: bytes | None = None, *, trust_domain: str | None = None) -> MeshCA:
        """An existing intermediate in Istio's ``cacerts`` form (e.g. Istio's ``samples/certs``)."""
        cert = load_certs(ca_cert_pem, CA_CERT)[0]
        chain = load_certs(cert_chain_pem, CERT_CHAIN) if cert_chain_pem else [cert]
        if chain[0] != cert:
            chain = [cert, *chain]
        load_certs(root_cert_pem, ROOT_CERT)
        return cls(cert, _load_key(ca_key_pem, CA_KEY), chain, root_cert_pem,
                   trust_domain or _trust_domain_of(cert) or "cluster.local")

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, trust_domain: str | None = None) -> MeshCA:
        """Read a CA folder: Istio's cacerts layout if ``ca-cert.pem`` is there, else a root's."""
        folder = Path(path)
        if (folder / CA_CERT).exists():
            chain = (folder / CERT_CHAIN).read_bytes() if (folder / CERT_CHAIN).exists() else None
            return cls.from_cacerts(read_file(folder / CA_CERT), read_file(folder / CA_KEY),
                                    read_file(folder / ROOT_CERT), chain, trust_domain=trust_domain)
        if not (folder / ROOT_CERT).exists():
            raise CertificateError(f"{folder} is not a CA folder: it holds neither {CA_CERT} nor {ROOT_CERT}")
        cert = load_certs(read_file(folder / ROOT_CERT), str(folder / ROOT_CERT))[0]
        key = _load_key(read_file(folder / ROOT_KEY), str(folder / ROOT_KEY))
        return cls(cert, key, [cert], _pem(cert), trust_domain or _trust_domain_of(cert) or "cluster.local")

    def save(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write the CA into a folder; returns the files written. Keys get mode 0600."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        key_pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        if self.is_root:
            (folder / ROOT_CERT).write_bytes(_pem(self._cert))
            write_private(folder / ROOT_KEY, key_pem)
            return [folder / ROOT_CERT, folder / ROOT_KEY]
        (folder / CA_CERT).write_bytes(_pem(self._cert))
        write_private(folder / CA_KEY, key_pem)
        (folder / ROOT_CERT).write_bytes(self.root_pem)
        (folder / CERT_CHAIN).write_bytes(b"".join(_pem(c) for c in self._chain))
        return [folder / CA_CERT, folder / CA_KEY, folder / ROOT_CERT, folder / CERT_CHAIN]

    def trusting(self, extra_roots_pem: bytes) -> MeshCA:
        """The same signer handing out a wider root bundle: step one of a root rotation."""
        extra = [c for c in load_certs(extra_roots_pem, "extra roots")
                 if c not in x509.load_pem_x509_certificates(self.root_pem)]
        return MeshCA(self._cert, self._key, self._chain, self.root_pem + b"".join(_pem(c) for c in extra),
                      self.trust_domain)

    # -- what it is ------------------------------------------------------------------------------

    @property
    def is_root(self) -> bool:
        return self._cert.issuer == self._cert.subject and len(self._chain) == 1

    @property
    def cert_pem(self) -> bytes:
        return _pem(self._cert)

    @property
    def not_after(self) -> datetime:
        return self._cert.not_valid_after_utc

    def __repr__(self) -> str:
        kind = "root" if self.is_root else "intermediate"
        return f"MeshCA({kind}, trust_domain={self.trust_domain!r}, not_after={self.not_after.isoformat()})"

    # -- issuing ---------------------------------------------------------------------------------

    def issue(self, namespace: str, service_account: str, *, ttl: timedelta = DEFAULT_TTL, key: KeyType = "ec",
              dns_names: Sequence[str] = (), trust_domain: str | None = None, now: datetime | None = None,
              backdate: timedelta = BACKDATE) -> WorkloadCertificate:
        """A workload certificate for ``spiffe://<td>/ns/<namespace>/sa/<service_account>``.

        It is valid from ``backdate`` before ``now`` (so a peer whose clock lags a little
        accepts it) until ``ttl`` after, and never past the CA's own expiry.
        """
        spiffe_id = SpiffeId(trust_domain or self.trust_domain, namespace, service_account)
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        if ttl > MAX_TTL:
            raise ValueError(f"ttl {ttl} is longer than the {MAX_TTL.days}-day maximum for workload certificates")
        moment = now or datetime.now(UTC)
        not_before = max(moment - backdate, self._cert.not_valid_before_utc)
        not_after = min(moment + ttl, self.not_after)  # a leaf cannot outlive the CA that vouches for it
        if not_after <= moment:
            raise CertificateError(f"the CA expired at {self.not_after.isoformat()}; it cannot issue")
        if not_after <= not_before:
            raise CertificateError("the requested validity period lies before the CA's own")
        private = _new_key(key)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id.uri)]
        names.extend(x509.DNSName(name) for name in dns_names)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self._cert.subject)
                .public_key(private.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(x509.SubjectAlternativeName(names), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(leaf=True), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
                .add_extension(_authority_key_id(self._cert), critical=False)
                .sign(self._key, _hash_for(self._key)))
        # The chain a workload sends: its leaf and every intermediate, never a self-signed root,
        # which the peer must already hold for the chain to mean anything.
        intermediates = [c for c in self._chain if c.issuer != c.subject]
        chain_pem = _pem(cert) + b"".join(_pem(c) for c in intermediates)
        key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        return WorkloadCertificate(chain_pem, key_pem, self.root_pem, spiffe_id,
                                   cert.not_valid_before_utc, cert.not_valid_after_utc)


def _ca_builder(issuer: x509.Name, subject: x509.Name, private: PrivateKey, trust_domain: str,
                not_before: datetime, not_after: datetime, *, path_length: int | None) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(leaf=False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                           critical=False))


def _ca_name(trust_domain: str, common_name: str) -> x509.Name:
    # The random serialNumber attribute keeps two generations of the same CA apart by name, so a
    # chain builder holding the old and the new root during a rotation never confuses them.
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{x509.random_serial_number():x}"[:16])])


def _key_usage(*, leaf: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=leaf,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not leaf, crl_sign=not leaf,
                         encipher_only=False, decipher_only=False)


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:  # Istio's 2018 sample CA has none; derive it the RFC 5280 way
        public = issuer.public_key()
        if not isinstance(public, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise CertificateError("the CA certificate has a key type pymesh cannot sign with") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _new_key(kind: KeyType) -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key must be 'ec' (ECDSA P-256) or 'rsa' (RSA 2048), not {kind!r}")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _load_key(pem: bytes, source: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{source}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertificateError(f"{source}: only ECDSA and RSA CA keys are supported")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise CertificateError(f"{source}: a {key.key_size}-bit RSA key is too weak to sign with")
    return key


def _trust_domain_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://") and "/" not in uri[len("spiffe://"):]:
            return uri[len("spiffe://"):]
    return None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
