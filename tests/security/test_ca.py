"""MeshCA: what its certificates carry, saving and loading, and Istio's plug-in layouts."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pymesh.security import CertificateError, MeshCA, verify_peer
from tests.security.conftest import TD


def leaf_of(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem)[0]


def test_workload_certificate_extensions(mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("tutorial", "customer", dns_names=["customer.tutorial.svc"])
    leaf = leaf_of(cert.cert_chain_pem)
    root = leaf_of(mesh_ca.root_pem)
    exts = leaf.extensions
    assert leaf.subject == x509.Name([])
    san = exts.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty, so RFC 5280 requires a critical SAN
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/tutorial/sa/customer"]
    assert san.value.get_values_for_type(x509.DNSName) == ["customer.tutorial.svc"]
    bc = exts.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    usage = exts.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=24, minutes=1)
    assert leaf.issuer == root.subject


def test_rsa_keys_on_request(mesh_ca: MeshCA) -> None:
    key = leaf_of(mesh_ca.issue("a", "b", key="rsa").cert_chain_pem).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048
    with pytest.raises(ValueError, match="'ec'"):
        mesh_ca.issue("a", "b", key="dsa")  # type: ignore[arg-type]


def test_root_certificate_extensions(mesh_ca: MeshCA) -> None:
    root = leaf_of(mesh_ca.root_pem)
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length is None
    usage = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert root.issuer == root.subject
    assert mesh_ca.is_root
    assert mesh_ca.trust_domain == TD


def test_ttl_limits(mesh_ca: MeshCA) -> None:
    with pytest.raises(ValueError, match="maximum"):
        mesh_ca.issue("a", "b", ttl=timedelta(days=91))
    with pytest.raises(ValueError, match="positive"):
        mesh_ca.issue("a", "b", ttl=timedelta(0))
    short_ca = MeshCA.init(TD, ttl=timedelta(hours=2))
    cert = short_ca.issue("a", "b", ttl=timedelta(days=30))
    assert cert.not_after == short_ca.not_after  # never outlives its CA
    expired = MeshCA.init(TD, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(CertificateError, match="expired"):
        expired.issue("a", "b")


def test_save_and_load_a_root(tmp_path: Path, mesh_ca: MeshCA) -> None:
    written = mesh_ca.save(tmp_path)
    assert [p.name for p in written] == ["root-cert.pem", "root-key.pem"]
    assert stat.S_IMODE(os.stat(tmp_path / "root-key.pem").st_mode) == 0o600
    loaded = MeshCA.load(tmp_path)
    assert loaded.root_pem == mesh_ca.root_pem
    assert loaded.trust_domain == TD
    verify_peer(loaded.issue("a", "b").chain_der, mesh_ca.root_pem, trust_domains={TD})


def test_intermediate_round_trip_keeps_trust_domain(tmp_path: Path) -> None:
    root = MeshCA.init("example.org")
    root.save(tmp_path / "root")
    inter = MeshCA.from_plugin(root.cert_pem, (tmp_path / "root" / "root-key.pem").read_bytes(),
                               trust_domain="example.org")
    assert not inter.is_root
    inter.save(tmp_path / "inter")
    loaded = MeshCA.load(tmp_path / "inter")
    assert loaded.trust_domain == "example.org"
    cert = loaded.issue("a", "b")
    assert cert.spiffe_id.trust_domain == "example.org"
    verify_peer(cert.chain_der, root.root_pem, trust_domains={"example.org"})
    ca_cert = leaf_of((tmp_path / "inter" / "ca-cert.pem").read_bytes())
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_plugin_key_must_match_and_be_a_ca(tmp_path: Path, mesh_ca: MeshCA, other_ca: MeshCA) -> None:
    other_ca.save(tmp_path)
    with pytest.raises(CertificateError, match="does not belong"):
        MeshCA.from_plugin(mesh_ca.cert_pem, (tmp_path / "root-key.pem").read_bytes())
    leaf = mesh_ca.issue("a", "b")
    with pytest.raises(CertificateError, match="not marked as a CA"):
        MeshCA.from_plugin(leaf.cert_chain_pem, leaf.key_pem)


def test_istio_sample_cacerts_load_and_issue(samples: Path) -> None:
    ca = MeshCA.load(samples)  # ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem
    assert not ca.is_root
    assert ca.trust_domain == TD
    cert = ca.issue("foo", "foo")
    assert len(cert.chain_der) == 2
    assert cert.root_pem == (samples / "root-cert.pem").read_bytes()
    verify_peer(cert.chain_der, cert.root_pem, trust_domains={TD}, allow_legacy_chain=True)
    with pytest.raises(Exception, match="allow_legacy_chain"):
        verify_peer(cert.chain_der, cert.root_pem, trust_domains={TD})


def test_istio_sample_as_plug_in_root_for_a_new_intermediate(samples: Path) -> None:
    inter = MeshCA.from_plugin((samples / "ca-cert.pem").read_bytes() + (samples / "root-cert.pem").read_bytes(),
                               (samples / "ca-key.pem").read_bytes())
    cert = inter.issue("a", "b")
    assert len(cert.chain_der) == 3  # leaf, the new intermediate, Istio's sample intermediate
    assert cert.root_pem == (samples / "root-cert.pem").read_bytes()
    verify_peer(cert.chain_der, cert.root_pem, trust_domains={TD}, allow_legacy_chain=True)


def test_trusting_widens_the_bundle_it_hands_out(mesh_ca: MeshCA, other_ca: MeshCA) -> None:
    both = mesh_ca.trusting(other_ca.root_pem)
    assert both.root_pem == mesh_ca.root_pem + other_ca.root_pem
    assert both.trusting(other_ca.root_pem).root_pem == both.root_pem
    assert both.issue("a", "b").root_pem == both.root_pem
    assert "KEY" not in repr(both)
