"""Is this peer who its certificate says, by SPIFFE's rules? One answer for every transport.

The TLS handshake already checked the chain with OpenSSL; ``verify_peer`` checks it again,
in Python, with the SPIFFE X509-SVID rules OpenSSL does not know (exactly one URI SAN of the
``spiffe`` scheme, the Istio path form, a trusted trust domain, a leaf that is no CA).
Anything that hands pymesh a peer chain (the ASGI TLS extension, a WSGI server's socket,
an httpx connection) goes through the same function, so no transport is judged by weaker
rules than another.

Chain verification uses ``cryptography.x509.verification`` rather than the ``ssl`` module:
``ssl`` can only verify inside a handshake, while a chain that arrives as DER bytes (from a
server's TLS extension, from a test) must be verified on its own. cryptography's verifier
also applies the RFC 5280 / Web PKI profile (key identifiers, critical basicConstraints,
no SHA-1, RSA >= 2048, named curves P-256/384/521) whatever OpenSSL version or Python
default flags the process happens to have, so the verdict does not change between
Python 3.11 and 3.13.
"""

from __future__ import annotations

import ssl
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from pymesh.errors import MeshError
from pymesh.security.identity import PeerIdentity, SpiffeId

__all__ = ["PeerRole", "PeerVerificationError", "peer_chain", "peer_from_ssl_object", "verify_peer", "verify_svid"]

PeerRole = Literal["client", "server"]

MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MAX_CHAIN = 8  # leaf + intermediates; Istio meshes use one or two intermediates at most


class PeerVerificationError(MeshError, ValueError):
    """The peer's certificate is not an acceptable workload identity; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_peer(chain_der: Sequence[bytes], roots_pem: bytes, *, trust_domains: Collection[str],
                now: datetime | None = None, allow_legacy_chain: bool = False,
                peer_role: PeerRole | None = None) -> PeerIdentity:
    """Verify a peer's chain (leaf first) against ``roots_pem``; return the identity it proves.

    ``trust_domains`` is the mesh's trust domain plus MeshConfig ``trustDomainAliases``.
    ``allow_legacy_chain`` accepts CA certificates that predate the RFC 5280 profile (Istio's
    2018 sample plug-in CA): signatures, validity and CA flags are still checked, the
    key-identifier and extension-criticality rules are not. ``peer_role`` checks the leaf's
    extendedKeyUsage for that role; None accepts either serverAuth or clientAuth.
    """
    if isinstance(trust_domains, str):  # "cluster" in "cluster.local" would be a substring test
        raise TypeError("trust_domains must be a collection of trust domains, not one string")
    if not chain_der:
        raise PeerVerificationError("the peer sent no certificate")
    if len(chain_der) > _MAX_CHAIN:
        raise PeerVerificationError(f"the peer sent {len(chain_der)} certificates; at most {_MAX_CHAIN} are accepted")
    certs: list[x509.Certificate] = []
    for index, der in enumerate(chain_der):
        try:
            certs.append(x509.load_der_x509_certificate(bytes(der)))
        except ValueError:
            raise PeerVerificationError(f"certificate {index} of the peer's chain is not valid DER") from None
    leaf = certs[0]
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        spiffe_id = verify_svid(leaf, peer_role=peer_role)
    except PeerVerificationError:
        raise
    except ValueError as exc:  # cryptography parses extensions lazily: a malformed one surfaces here
        raise PeerVerificationError(f"the peer's certificate has a malformed extension: {exc}") from None
    if spiffe_id.trust_domain not in trust_domains:
        listed = ", ".join(sorted(trust_domains)) or "none"
        raise PeerVerificationError(f"trust domain {spiffe_id.trust_domain!r} of {spiffe_id.uri} is not trusted "
                                    f"(trusted: {listed}; add it to MeshConfig trustDomainAliases to accept it)")
    if moment < leaf.not_valid_before_utc:
        raise PeerVerificationError(f"certificate of {spiffe_id.uri} is not valid before "
                                    f"{leaf.not_valid_before_utc.isoformat()}")
    if moment > leaf.not_valid_after_utc:
        raise PeerVerificationError(f"certificate of {spiffe_id.uri} expired at {leaf.not_valid_after_utc.isoformat()}")
    try:
        _verifier(_store(bytes(roots_pem)), moment, allow_legacy_chain).verify(leaf, certs[1:])
    except VerificationError as exc:
        profile = "extension" in str(exc)  # the RFC 5280 profile, not trust, is what failed
        hint = " (a pre-RFC 5280 CA chain needs allow_legacy_chain)" if profile and not allow_legacy_chain else ""
        raise PeerVerificationError(f"certificate chain of {spiffe_id.uri} does not verify to a trusted root: "
                                    f"{exc}{hint}") from None
    return PeerIdentity(spiffe_id, tuple(bytes(d) for d in chain_der))


def verify_svid(leaf: x509.Certificate, *, peer_role: PeerRole | None = None) -> SpiffeId:
    """The X509-SVID rules for a leaf (SPIFFE X509-SVID.md §4-5), without the chain."""
    if leaf.version is not x509.Version.v3:
        raise PeerVerificationError("certificate is not X.509 v3, so it cannot carry a SPIFFE ID")
    exts = leaf.extensions
    try:
        names = list(exts.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        raise PeerVerificationError("certificate has no subjectAltName, so no SPIFFE ID") from None
    for name in names:
        # A NUL lets a C consumer read a shorter name than the one signed (CVE-2025-66220, CVE-2026-47778).
        value = name.value
        if (isinstance(value, str) and "\x00" in value) or (isinstance(value, bytes) and b"\x00" in value):
            raise PeerVerificationError("a subjectAltName contains a NUL byte")
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    if len(uris) != 1:
        raise PeerVerificationError(f"certificate must have exactly one URI SAN (the SPIFFE ID), it has {len(uris)}")
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except ValueError as exc:
        raise PeerVerificationError(str(exc)) from None
    try:
        if exts.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise PeerVerificationError(f"certificate of {spiffe_id.uri} is a CA certificate, not a workload leaf")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise PeerVerificationError(f"certificate of {spiffe_id.uri} has no keyUsage "
                                    "(an X509-SVID leaf must assert digitalSignature)") from None
    if not usage.digital_signature:
        raise PeerVerificationError(f"certificate of {spiffe_id.uri} lacks the digitalSignature key usage")
    if usage.key_cert_sign or usage.crl_sign:
        raise PeerVerificationError(f"certificate of {spiffe_id.uri} may sign certificates or CRLs; a leaf must not")
    _check_eku(leaf, spiffe_id, peer_role)
    _check_key(leaf, spiffe_id)
    return spiffe_id


def peer_chain(ssl_obj: ssl.SSLObject | ssl.SSLSocket) -> tuple[bytes, ...]:
    """The chain the peer sent, leaf first, as DER; empty when it sent none.

    Python 3.13 made ``get_unverified_chain`` public; 3.10-3.12 have it on the private
    ``_sslobj``, returning certificate objects. Without either only the leaf is available
    (``getpeercert(binary_form=True)``), which still verifies when the roots hold every
    intermediate.
    """
    getter = getattr(ssl_obj, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_obj, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        # Server side, 3.11 puts the peer's (possibly absent) leaf first: a certificate-less client gives [None].
        chain = [c for c in getter() or () if c is not None]
        if chain:
            return tuple(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
                         for c in chain)
    leaf = ssl_obj.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


def peer_from_ssl_object(ssl_obj: ssl.SSLObject | ssl.SSLSocket, roots_pem: bytes, *,
                         trust_domains: Collection[str], allow_legacy_chain: bool = False,
                         peer_role: PeerRole | None = None, now: datetime | None = None) -> PeerIdentity | None:
    """The verified identity of a TLS connection's peer; None when the peer sent no certificate."""
    chain = peer_chain(ssl_obj)
    if not chain:
        return None
    return verify_peer(chain, roots_pem, trust_domains=trust_domains, now=now,
                       allow_legacy_chain=allow_legacy_chain, peer_role=peer_role)


def _check_eku(leaf: x509.Certificate, spiffe_id: SpiffeId, role: PeerRole | None) -> None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # RFC 5280: no extendedKeyUsage means any purpose; X509-SVID only says SHOULD
    wanted = {"client": [ExtendedKeyUsageOID.CLIENT_AUTH], "server": [ExtendedKeyUsageOID.SERVER_AUTH],
              None: [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]}[role]
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku or any(oid in eku for oid in wanted):
        return
    raise PeerVerificationError(f"certificate of {spiffe_id.uri} is not meant for TLS "
                                f"{'client or server' if role is None else role} authentication (extendedKeyUsage)")


def _check_key(leaf: x509.Certificate, spiffe_id: SpiffeId) -> None:
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise PeerVerificationError(f"certificate of {spiffe_id.uri} has a {key.key_size}-bit RSA key; "
                                        f"at least {MIN_RSA_BITS} bits are required")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise PeerVerificationError(f"certificate of {spiffe_id.uri} uses curve {key.curve.name}; "
                                        "P-256, P-384 or P-521 is required")
    else:
        raise PeerVerificationError(f"certificate of {spiffe_id.uri} has a key type pymesh does not accept")


@lru_cache(maxsize=32)
def _store(roots_pem: bytes) -> Store:
    # Parsing a bundle per handshake would cost more than the verification itself; bundles change rarely.
    try:
        roots = x509.load_pem_x509_certificates(roots_pem)
    except ValueError:
        raise PeerVerificationError("the trusted root bundle holds no readable PEM certificate") from None
    return Store(roots)


def _verifier(store: Store, now: datetime, legacy: bool) -> ClientVerifier:
    # The client verifier checks no subject name (SPIFFE IDs are not DNS names) and is right for
    # both directions once its fixed clientAuth EKU rule is replaced by _check_eku's role-aware one.
    builder = PolicyBuilder().store(store).time(now).max_chain_depth(_MAX_CHAIN)
    ca, ee = _LEGACY_POLICIES if legacy else _STRICT_POLICIES
    return builder.extension_policies(ca_policy=ca, ee_policy=ee).build_client_verifier()


def _eku_checked_elsewhere(policy: Policy, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None) -> None:
    return None


def _must_be_ca(policy: Policy, cert: x509.Certificate, ext: x509.BasicConstraints) -> None:
    if not ext.ca:
        raise ValueError("basicConstraints does not mark it as a CA")


def _must_sign_certs(policy: Policy, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("keyUsage does not allow certificate signing")


_STRICT_POLICIES = (
    ExtensionPolicy.webpki_defaults_ca(),
    ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_checked_elsewhere),
)
# What the legacy switch gives up: key identifiers and the criticality rules of RFC 5280's
# profile. What it keeps: signatures, validity periods, the CA flag, keyCertSign when a
# keyUsage is present, path length, algorithms and key sizes.
_LEGACY_POLICIES = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _must_be_ca)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _must_sign_certs),
    ExtensionPolicy.permit_all(),
)
