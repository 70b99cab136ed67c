"""The middleware's verdict cache for a peer chain lasts until the first certificate of the chain
expires, not only the leaf: an intermediate that expires earlier ends the peer's welcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import pymesh
from pymesh.inbound.trust import LocalIdentity, PeerVerifier
from pymesh.security import MeshCA, PeerVerificationError
from pymesh.security.identity import WorkloadCertificate
from tests.inbound.helpers import WORKLOAD


def der_chain(cert: WorkloadCertificate) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(cert.cert_chain_pem)]


def test_a_cached_peer_is_verified_again_once_its_intermediate_expires() -> None:
    root = MeshCA.init("cluster.local")
    intermediate = MeshCA.from_plugin(root.cert_pem, root._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    leaf = intermediate.issue("shop", "friend", ttl=timedelta(days=30))
    # The same intermediate (same name and key) re-issued to expire in 2 days: the leaf outlives it.
    now = datetime.now(UTC)
    long_lived = intermediate._cert
    short = (x509.CertificateBuilder(extensions=list(long_lived.extensions))
             .subject_name(long_lived.subject).issuer_name(long_lived.issuer).public_key(long_lived.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(long_lived.not_valid_before_utc).not_valid_after(now + timedelta(days=2))
             .sign(root._key, long_lived.signature_hash_algorithm))  # type: ignore[arg-type]
    chain = [der_chain(leaf)[0], short.public_bytes(serialization.Encoding.DER)]

    clock = [now]
    with pymesh.Mesh.from_yaml("", workload=WORKLOAD, ca=root) as mesh:
        verifier = PeerVerifier(mesh, LocalIdentity(mesh, ca=root), clock=lambda: clock[0])
        assert verifier.verify(chain).principal == "cluster.local/ns/shop/sa/friend"  # and now cached
        clock[0] = now + timedelta(days=1)
        assert verifier.verify(chain).principal == "cluster.local/ns/shop/sa/friend"
        clock[0] = now + timedelta(days=3)  # the leaf is still valid; its intermediate is not
        with pytest.raises(PeerVerificationError):
            verifier.verify(chain)
