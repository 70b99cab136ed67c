"""TLS origination: which TLS a cluster's endpoints get, per DestinationRule ``tls`` and auto-mTLS.

========================  ===================================================================
``tls.mode``              what pymesh does for a plain ``http://`` request
========================  ===================================================================
``ISTIO_MUTUAL``          mutual TLS with the workload's identity; the server must present an
                          SVID from the mesh roots and a trust domain of the mesh (or an alias),
                          and be one of the identities expected for the destination (below)
``MUTUAL``                TLS with ``clientCertificate``/``privateKey`` from files, the server
                          checked against ``caCertificates`` (else the system roots) and
                          ``subjectAltNames`` (else the SNI name)
``SIMPLE``                the same without a client certificate
``DISABLE``               plaintext, even where auto-mTLS would choose mTLS
unset                     auto-mTLS (MeshConfig ``enableAutoMtls``, on by default): ISTIO_MUTUAL
                          toward endpoints labelled ``security.istio.io/tlsMode: istio`` (what
                          Istio's injector puts on a workload with a sidecar, and what a
                          WorkloadEntry for a pymesh workload should carry), when this workload
                          has an identity; plaintext otherwise
========================  ===================================================================

Secure naming (ISTIO_MUTUAL): the expected identities are ``tls.subjectAltNames`` when given,
else the destination's ServiceEntry ``subjectAltNames`` plus the SPIFFE IDs of its endpoints'
service accounts; with none known, any identity that verifies against the roots is accepted,
as Istio does. The check runs after the handshake and before a byte of the request is sent.

Istio's SNI for ISTIO_MUTUAL (``outbound_.<port>_.<subset>_.<host>``) and ALPN
(``istio-http/1.1``, ``istio``, ``http/1.1``) are sent, so a real Envoy sidecar's inbound
listener accepts the connection. A request the app itself sends as ``https://`` keeps the
app's TLS, verified against the host name; pymesh never wraps it in a second TLS layer.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pymesh.security.rotation import CertificateSource
    from pymesh.snapshot.registry import Endpoint, Service

__all__ = ["ISTIO_ALPN", "TLS_MODE_LABEL", "IdentityMissingError", "Origination", "ServerRefusedError",
           "originations"]

TLS_MODE_LABEL = "security.istio.io/tlsMode"
ISTIO_ALPN = ("istio-http/1.1", "istio", "http/1.1")

Mode = Literal["ISTIO_MUTUAL", "MUTUAL", "SIMPLE"]


class IdentityMissingError(ssl.SSLError):
    """ISTIO_MUTUAL was asked for, but this workload has no certificate to present."""


class ServerRefusedError(ssl.SSLError):
    """The server's certificate verified, but it is not who the destination should be."""


@dataclass(eq=False, slots=True)
class Origination:
    """TLS toward one cluster's endpoints: the context to dial with, the name to send, what to check.

    Equal when ``key`` (what the settings say) is: a reload that rebuilds a cluster's state with
    the same TLS settings gets an equal one, so endpoint pools keyed on it are kept, not leaked.
    """

    mode: Mode
    sni: str | None
    _make: Callable[[], ssl.SSLContext]
    _check: Callable[[Any], None] | None = None
    _version: Callable[[], int] | None = None  # the identity's version: a rotation makes a new context
    key: tuple[Any, ...] = ()
    _cached: tuple[int, ssl.SSLContext] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Origination) and (self.key == other.key if self.key else self is other)

    def __hash__(self) -> int:
        return hash(self.key) if self.key else id(self)

    def context(self) -> ssl.SSLContext:
        """The context for a new connection (the current certificate, after any rotation)."""
        version = self._version() if self._version is not None else 0
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._lock:
            ctx = self._make()
            self._cached = (version, ctx)
            return ctx

    def check(self, ssl_object: Any) -> None:
        """After the handshake, before the request: raises ``ServerRefusedError`` on a wrong server."""
        if self._check is not None:
            try:
                self._check(ssl_object)
            except ValueError as exc:  # pymesh.security's PeerVerificationError
                raise ServerRefusedError(str(exc)) from exc


def originations(
    tls: Any, service: Service | None, endpoints: tuple[Endpoint, ...], *, host: str, port: int, subset: str,
    identity: CertificateSource | None, trust_domain: str, aliases: Collection[str], auto_mtls: bool,
) -> tuple[Origination | None, ...]:
    """One ``Origination`` (or None: plaintext) per endpoint, sharing objects where they are the same."""
    mode = tls.mode if tls is not None else None
    if mode == "DISABLE":
        return (None,) * len(endpoints)
    if mode in ("SIMPLE", "MUTUAL"):
        one = _files(tls, host)
        return (one,) * len(endpoints)
    mutual: Origination | None = None
    if mode == "ISTIO_MUTUAL" or (auto_mtls and identity is not None and tls is None):
        names = tuple(tls.subject_alt_names) if tls is not None and tls.subject_alt_names else _expected(
            service, endpoints, trust_domain)
        mutual = _istio(identity, names, sni=(tls.sni if tls is not None and tls.sni else
                                              f"outbound_.{port}_.{subset}_.{host}"),
                        trust_domains=(trust_domain, *aliases))
    if mode == "ISTIO_MUTUAL":
        return (mutual,) * len(endpoints)
    return tuple(mutual if e.labels.get(TLS_MODE_LABEL) == "istio" else None for e in endpoints)


def _expected(service: Service | None, endpoints: tuple[Endpoint, ...], trust_domain: str) -> tuple[str, ...]:
    names = list(service.subject_alt_names) if service is not None else []
    namespace = service.namespace if service is not None else ""
    for e in endpoints:
        if e.service_account and namespace:
            names.append(f"spiffe://{trust_domain}/ns/{namespace}/sa/{e.service_account}")
    return tuple(dict.fromkeys(names))


def _istio(identity: CertificateSource | None, expected: tuple[str, ...], *, sni: str,
           trust_domains: tuple[str, ...]) -> Origination:
    from pymesh.security.tls import client_context, verify_server  # the TLS stack loads only when used

    def make() -> ssl.SSLContext:
        if identity is None:
            raise IdentityMissingError("ISTIO_MUTUAL needs a workload identity: give the Workload a cert_dir "
                                       "(or PYMESH_CERT_DIR), or the Mesh a ca")
        return client_context(identity.current, roots_pem=identity.roots_pem, alpn_protocols=ISTIO_ALPN,
                              allow_legacy_chain=identity.allow_legacy_chain)

    def check(ssl_object: Any) -> None:
        assert identity is not None
        verify_server(ssl_object, identity.roots_pem, trust_domains=trust_domains, expected=expected,
                      allow_legacy_chain=identity.allow_legacy_chain)

    version = (lambda: identity.version) if identity is not None else None
    return Origination("ISTIO_MUTUAL", sni, make, check, version,
                       ("ISTIO_MUTUAL", sni, expected, trust_domains, id(identity)))


def _files(tls: Any, host: str) -> Origination:
    from pymesh.security.tls import check_subject_alt_names, mutual_context, simple_context

    names = tuple(tls.subject_alt_names)
    skip = bool(tls.insecure_skip_verify)
    options: dict[str, Any] = {"ca_certificates": tls.ca_certificates or None, "subject_alt_names": names,
                               "insecure_skip_verify": skip}
    if tls.mode == "MUTUAL":
        def make() -> ssl.SSLContext:
            return mutual_context(client_certificate=tls.client_certificate, private_key=tls.private_key, **options)
    else:
        def make() -> ssl.SSLContext:
            return simple_context(**options)
    # getpeercert(True), positionally: httpcore's sync stream hands out the internal _ssl object,
    # whose getpeercert takes no keywords.
    check = None if skip or not names else (lambda obj: check_subject_alt_names(obj.getpeercert(True), names))
    return Origination(tls.mode, tls.sni or host, make, check, None,
                       (tls.mode, tls.sni or host, names, skip, tls.ca_certificates, tls.client_certificate,
                        tls.private_key))
