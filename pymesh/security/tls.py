"""TLS contexts for the mesh: serving, ISTIO_MUTUAL origination, and DestinationRule SIMPLE / MUTUAL.

The policy, in one place:

- TLS 1.2 minimum, TLS 1.3 maximum (and preferred: OpenSSL negotiates the highest both
  sides speak). TLS 1.3 suites are OpenSSL's defaults (all AEAD, all forward-secret).
- TLS 1.2 suites: Istio's list minus its two static-RSA suites, i.e. ECDHE key exchange
  with AES-GCM only (``TLS12_CIPHERS``). The dropped suites lack forward secrecy.
- Mesh peers are judged by SPIFFE ID, never by host name (``check_hostname`` is off on
  ISTIO_MUTUAL contexts; ``verify_peer`` + ``check_server_identity`` run after the
  handshake, before any request byte is sent). OpenSSL still verifies the chain during the
  handshake, with ``VERIFY_X509_STRICT`` unless the legacy-chain switch is on, so a peer
  from another CA is refused at the TLS layer.
- Every certificate in a root bundle is a trust anchor (``VERIFY_X509_PARTIAL_CHAIN``), as
  in cryptography's verifier, so both layers agree on what a bundle means.
- Servers issue no session tickets, so TLS 1.3 never resumes. A resumed session skips chain
  verification, which after a trust-bundle change (CVE-2022-21654) must not let a peer in;
  CPython has no switch for OpenSSL's server-side session-ID cache, so a TLS 1.2 client can
  still resume while its first connection is open. Every connection's peer chain is
  therefore verified again, against the current bundle, before it is used
  (``peer_from_ssl_object``, ``inbound.trust.PeerVerifier``). Client pools reuse
  connections, not sessions.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path

from cryptography import x509

from pymesh.security.identity import CERT_CHAIN_FILE, KEY_FILE, PeerIdentity, WorkloadCertificate, write_private
from pymesh.security.verify import PeerVerificationError, peer_from_ssl_object

__all__ = [
    "TLS12_CIPHERS",
    "check_server_identity",
    "check_subject_alt_names",
    "client_context",
    "mutual_context",
    "server_context",
    "simple_context",
    "verify_server",
]

TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
))


def server_context(cert: WorkloadCertificate, *, require_client_cert: bool, roots_pem: bytes | None = None,
                   allow_legacy_chain: bool = False) -> ssl.SSLContext:
    """A server context presenting ``cert``; client certificates are required (STRICT) or optional (PERMISSIVE).

    ``roots_pem`` (default: the certificate's own ``root_pem``) is what client certificates
    must chain to. Under PERMISSIVE a client that sends a certificate must still send a
    valid one: a bad certificate fails the handshake, it is never treated as plaintext.
    """
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, allow_legacy_chain)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=(roots_pem or cert.root_pem).decode("ascii"))
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    load_identity(ctx, cert)
    return ctx


def client_context(cert: WorkloadCertificate | None, *, roots_pem: bytes, allow_legacy_chain: bool = False,
                   alpn_protocols: Sequence[str] = ()) -> ssl.SSLContext:
    """An ISTIO_MUTUAL client context: presents ``cert`` (if any) and verifies the chain, not the host name.

    The caller must call ``verify_server`` (or ``peer_from_ssl_object`` then
    ``check_server_identity``) once the handshake completes and before sending a request.
    """
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, allow_legacy_chain)
    ctx.check_hostname = False  # secure naming is by SPIFFE ID, checked after the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=roots_pem.decode("ascii"))
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    if cert is not None:
        load_identity(ctx, cert)
    return ctx


def check_server_identity(peer: PeerIdentity, expected: Collection[str]) -> None:
    """Secure naming: the server must be one of the identities expected to run the destination.

    ``expected`` holds SPIFFE URIs (or Istio principals without the scheme), usually built
    from the destination's service accounts. Empty means no expectation is known, and, as
    Istio does, any identity that verified against the roots and trust domains is accepted.
    """
    if isinstance(expected, str):
        raise TypeError("expected must be a collection of SPIFFE IDs, not one string")
    if not expected:
        return
    wanted = {e if e.startswith("spiffe://") else f"spiffe://{e}" for e in expected}
    if peer.spiffe_id.uri not in wanted:
        shown = ", ".join(sorted(wanted)[:5]) + (" ..." if len(wanted) > 5 else "")
        raise PeerVerificationError(f"server identity {peer.spiffe_id.uri} is not one expected for the "
                                    f"destination ({shown})")


def verify_server(ssl_obj: ssl.SSLObject | ssl.SSLSocket, roots_pem: bytes, *, trust_domains: Collection[str],
                  expected: Collection[str] = (), allow_legacy_chain: bool = False) -> PeerIdentity:
    """After an ISTIO_MUTUAL handshake: verify the server's SVID and its name, or raise."""
    peer = peer_from_ssl_object(ssl_obj, roots_pem, trust_domains=trust_domains,
                                allow_legacy_chain=allow_legacy_chain, peer_role="server")
    if peer is None:  # cannot happen with CERT_REQUIRED, but a context built elsewhere might allow it
        raise PeerVerificationError("the server sent no certificate")
    check_server_identity(peer, expected)
    return peer


def simple_context(*, ca_certificates: str | os.PathLike[str] | None = None, subject_alt_names: Sequence[str] = (),
                   insecure_skip_verify: bool = False, alpn_protocols: Sequence[str] = ()) -> ssl.SSLContext:
    """DestinationRule ``tls.mode: SIMPLE``: TLS to a server that needs no client certificate.

    Without ``caCertificates`` the system roots are trusted (Istio 1.20+ does the same).
    With no ``subjectAltNames`` the server is checked against the host name the caller
    passes as ``server_hostname`` (the ``sni`` field, else the request host); with some,
    host-name checking is off and the caller must call ``check_subject_alt_names`` after
    the handshake. ``insecureSkipVerify`` turns every check off.
    """
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, legacy=True)  # public PKI chains are judged by OpenSSL's defaults
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_certificates:
        ctx.load_verify_locations(cafile=os.fspath(ca_certificates))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = not subject_alt_names
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def mutual_context(*, client_certificate: str | os.PathLike[str], private_key: str | os.PathLike[str],
                   ca_certificates: str | os.PathLike[str] | None = None, subject_alt_names: Sequence[str] = (),
                   insecure_skip_verify: bool = False, alpn_protocols: Sequence[str] = ()) -> ssl.SSLContext:
    """DestinationRule ``tls.mode: MUTUAL``: SIMPLE plus a client certificate from files."""
    ctx = simple_context(ca_certificates=ca_certificates, subject_alt_names=subject_alt_names,
                         insecure_skip_verify=insecure_skip_verify, alpn_protocols=alpn_protocols)
    ctx.load_cert_chain(os.fspath(client_certificate), os.fspath(private_key))
    return ctx


def check_subject_alt_names(ssl_obj: ssl.SSLObject | ssl.SSLSocket | bytes, names: Collection[str]) -> None:
    """DestinationRule ``subjectAltNames``: the server certificate must carry one of ``names`` exactly.

    A name matches a DNS SAN (case-insensitively, no wildcard expansion), a URI SAN or an IP
    SAN equal to it. Exact matching on purpose: wildcard SAN matching let nested subdomains
    through in ISTIO-SECURITY-2020-008.
    """
    if not names:
        return
    der = ssl_obj if isinstance(ssl_obj, bytes) else ssl_obj.getpeercert(binary_form=True)
    if not der:
        raise PeerVerificationError("the server sent no certificate")
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerVerificationError("the server certificate has no subjectAltName") from None
    dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    uris = set(san.get_values_for_type(x509.UniformResourceIdentifier))
    ips = set(san.get_values_for_type(x509.IPAddress))
    for name in names:
        if name.lower() in dns or name in uris or _ip(name) in ips:
            return
    raise PeerVerificationError(f"the server certificate matches none of subjectAltNames {sorted(names)}")


def load_identity(ctx: ssl.SSLContext, cert: WorkloadCertificate) -> None:
    """Load an in-memory chain and key into ``ctx``.

    ``ssl`` reads keys only from files, so they go through a private temporary folder
    (mode 0700, on ``/dev/shm`` where it exists so the key never reaches a disk) that is
    removed at once.
    """
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None  # noqa: S108
    with tempfile.TemporaryDirectory(prefix="pymesh-", dir=shm) as tmp:
        chain, key = Path(tmp) / CERT_CHAIN_FILE, Path(tmp) / KEY_FILE
        chain.write_bytes(cert.cert_chain_pem)
        write_private(key, cert.key_pem)
        ctx.load_cert_chain(chain, key)


def _base(protocol: int, legacy: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if not legacy:
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    else:
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT  # Python 3.13 sets it by default
    return ctx


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None
