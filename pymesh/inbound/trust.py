"""This workload's certificate and the roots it trusts, and peer chains verified against them.

The certificate comes from, in order: one given to the middleware or ``pymesh.serve``
(``certificate=``, a ``WorkloadCertificate`` or a ``CertificateSource``), a CA given to them
(``ca=``), else the mesh's own ``mesh.identity`` (the workload's ``cert_dir`` with Istio's
``cert-chain.pem``/``key.pem``/``root-cert.pem``, or the mesh's ``ca``), the one its clients
present too. Without any of these mTLS is off for the workload: no chain can be
verified, so no peer has an identity.

Renewal is :class:`pymesh.security.rotation.CertificateSource`'s (Istio's grace ratio and
jitter, backoff on failure); it is checked whenever a connection or a chain needs the
certificate, and a running server switches new handshakes to the new certificate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pymesh.security.identity import PeerIdentity, WorkloadCertificate
from pymesh.security.rotation import CertificateSource
from pymesh.security.verify import PeerVerificationError, verify_peer

if TYPE_CHECKING:
    from pymesh.mesh import Mesh
    from pymesh.security.ca import MeshCA

__all__ = ["LocalIdentity", "PeerVerifier"]

log = logging.getLogger("pymesh.inbound")

_CACHE_SIZE = 1024


class LocalIdentity:
    """Where this workload's certificate comes from; ``current()`` renews it when due."""

    __slots__ = ("source",)

    def __init__(
        self,
        mesh: Mesh,
        *,
        certificate: WorkloadCertificate | CertificateSource | None = None,
        ca: MeshCA | None = None,
    ) -> None:
        if isinstance(certificate, CertificateSource):
            self.source: CertificateSource | None = certificate
        elif certificate is not None:
            self.source = CertificateSource(certificate)
        elif ca is not None:
            made = CertificateSource.for_workload(mesh.workload, ca=ca, trust_domain=mesh.snapshot.trust_domain)
            self.source = made.start() if made is not None else None  # renews in the background
        else:
            self.source = mesh.identity  # the mesh's own: one certificate for calls made and served

    @property
    def configured(self) -> bool:
        return self.source is not None

    def current(self) -> WorkloadCertificate | None:
        """The certificate to present now. Renewal is the source's background thread's job: issuing
        or reading files here would block the event loop of an ASGI server."""
        source = self.source
        return None if source is None else source.current

    @property
    def roots_pem(self) -> bytes:
        """The trusted roots: the certificate's, plus any added for a CA rotation."""
        return b"" if self.source is None else self.source.roots_pem

    @property
    def allow_legacy_chain(self) -> bool:
        """The source's compatibility switch for pre-RFC 5280 CA chains, so the chain check here
        agrees with the handshake's."""
        return self.source is not None and self.source.allow_legacy_chain


class PeerVerifier:
    """Verifies peer chains against this workload's roots and the mesh's trust domains.

    Verdicts are cached by chain (a keep-alive connection sends the same chain with every
    request) until the leaf expires or the roots change.
    """

    __slots__ = ("_cache", "_clock", "_identity", "_lock", "_mesh")

    def __init__(
        self, mesh: Mesh, identity: LocalIdentity, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._mesh = mesh
        self._identity = identity
        self._clock = clock
        self._cache: dict[tuple[bytes, tuple[bytes, ...], frozenset[str]], tuple[PeerIdentity, datetime]] = {}
        self._lock = threading.Lock()  # WSGI servers verify from many threads; held for dict updates only

    @property
    def enabled(self) -> bool:
        return self._identity.configured

    def trust_domains(self) -> frozenset[str]:
        snap = self._mesh.snapshot
        return frozenset((snap.trust_domain, *snap.mesh_config.trust_domain_aliases))

    def verify(self, chain_der: Sequence[bytes]) -> PeerIdentity:
        """The identity the chain proves; ``PeerVerificationError`` otherwise."""
        if self._identity.current() is None:
            raise PeerVerificationError("this workload has no certificate, so no trusted roots")
        roots = self._identity.roots_pem
        chain = tuple(chain_der)
        domains = self.trust_domains()
        key = (roots, chain, domains)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and now <= hit[1]:
            return hit[0]
        peer = verify_peer(chain, roots, trust_domains=domains, now=now,
                           allow_legacy_chain=self._identity.allow_legacy_chain)
        entry = (peer, min(_not_after(der) for der in chain))  # until the first certificate of the chain expires
        with self._lock:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[key] = entry
        return peer


def _not_after(der: bytes) -> datetime:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).not_valid_after_utc
