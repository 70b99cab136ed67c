"""Workload identity and mutual TLS: SPIFFE IDs, the mesh CA, peer verification, TLS contexts, rotation.

Everything here is importable from ``pymesh.security``; the submodules are:

- ``identity``: ``SpiffeId``, ``PeerIdentity``, ``WorkloadCertificate`` (Istio's file layout)
- ``ca``: ``MeshCA``, a root or intermediate that issues workload certificates
- ``verify``: ``verify_peer`` / ``peer_from_ssl_object``, the SPIFFE X509-SVID rules
- ``tls``: server, ISTIO_MUTUAL, SIMPLE and MUTUAL contexts; secure naming
- ``rotation``: ``CertificateSource``, renewal before expiry and the contexts that follow it
"""

from __future__ import annotations

from pymesh.security.ca import DEFAULT_TTL, MeshCA
from pymesh.security.identity import CertificateError, PeerIdentity, SpiffeId, WorkloadCertificate
from pymesh.security.rotation import CertificateSource, merge_roots
from pymesh.security.tls import (
    TLS12_CIPHERS,
    check_server_identity,
    check_subject_alt_names,
    client_context,
    mutual_context,
    server_context,
    simple_context,
    verify_server,
)
from pymesh.security.verify import PeerVerificationError, peer_chain, peer_from_ssl_object, verify_peer

__all__ = [
    "DEFAULT_TTL",
    "TLS12_CIPHERS",
    "CertificateError",
    "CertificateSource",
    "MeshCA",
    "PeerIdentity",
    "PeerVerificationError",
    "SpiffeId",
    "WorkloadCertificate",
    "check_server_identity",
    "check_subject_alt_names",
    "client_context",
    "merge_roots",
    "mutual_context",
    "peer_chain",
    "peer_from_ssl_object",
    "server_context",
    "simple_context",
    "verify_peer",
    "verify_server",
]

for _cls in (CertificateError, CertificateSource, MeshCA, PeerIdentity, PeerVerificationError, SpiffeId,
             WorkloadCertificate):
    _cls.__module__ = "pymesh.security"
