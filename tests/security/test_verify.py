"""verify_peer: the X509-SVID rules, the chain, the trust domains and the legacy-chain switch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from pymesh.security import MeshCA, PeerVerificationError, verify_peer
from pymesh.security.ca import BACKDATE
from tests.security.conftest import TD, ca_key, forge

URI = x509.UniformResourceIdentifier
ID = "spiffe://cluster.local/ns/a/sa/b"


def ku(*, cert_sign: bool = False, digital_signature: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature, False, True, False, False, cert_sign, False, False, False)


def check(chain: tuple[bytes, ...], roots: bytes, **kw: object) -> str:
    """The reason verify_peer refuses ``chain``."""
    with pytest.raises(PeerVerificationError) as info:
        verify_peer(chain, roots, trust_domains=kw.pop("trust_domains", {TD}), **kw)  # type: ignore[arg-type]
    return info.value.reason


def test_a_well_formed_forged_leaf_passes(ca_dir: Path, mesh_ca: MeshCA) -> None:
    # The baseline: forge() with defaults makes a valid SVID, so each failure below is its one change.
    peer = verify_peer(forge(ca_dir), mesh_ca.root_pem, trust_domains={TD})
    assert peer.spiffe_id.uri == ID


@pytest.mark.parametrize(("sans", "reason"), [
    ([], "no subjectAltName"),
    ([x509.DNSName("b.a.svc")], "exactly one URI SAN"),
    ([URI(ID), URI("spiffe://cluster.local/ns/a/sa/c")], "exactly one URI SAN"),
    ([URI("https://cluster.local/ns/a/sa/b")], "scheme must be 'spiffe://'"),
    ([URI("spiffe://cluster.local")], "needs a path"),
    ([URI("spiffe://Cluster.local/ns/a/sa/b")], "lowercase"),
    ([URI("spiffe://cluster.local/ns/a%2Fb/sa/b")], "percent-encoding"),
    ([URI("spiffe://cluster.local/ns/a/sa/b/extra")], "must be /ns/<namespace>/sa/<service-account>"),
    ([URI("spiffe://cluster.local/ns/a/sa/b\x00.evil")], "NUL"),
    ([URI(ID), x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x05ab\x00cd")], "NUL"),
    ([URI("spiffe://cluster.local/ns/" + "a" * 3000 + "/sa/b")], "longer than 2048 bytes"),
], ids=["no-san", "dns-only", "two-uris", "https", "no-path", "uppercase-td", "percent", "extra-segment", "nul",
        "othername-nul", "too-long"])
def test_san_anomalies_are_refused(ca_dir: Path, mesh_ca: MeshCA, sans: list[x509.GeneralName],
                                   reason: str) -> None:
    assert reason in check(forge(ca_dir, sans=sans), mesh_ca.root_pem)


def test_leaf_that_is_a_ca_or_signs_certificates_is_refused(ca_dir: Path, mesh_ca: MeshCA) -> None:
    assert "is a CA certificate" in check(forge(ca_dir, ca=True, key_usage=ku(cert_sign=True)), mesh_ca.root_pem)
    assert "may sign certificates" in check(forge(ca_dir, key_usage=ku(cert_sign=True)), mesh_ca.root_pem)
    assert "no keyUsage" in check(forge(ca_dir, key_usage=None), mesh_ca.root_pem)
    assert "digitalSignature" in check(forge(ca_dir, key_usage=ku(digital_signature=False)), mesh_ca.root_pem)


def test_extended_key_usage_follows_the_role(ca_dir: Path, mesh_ca: MeshCA) -> None:
    code_signing = forge(ca_dir, eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    assert "not meant for TLS" in check(code_signing, mesh_ca.root_pem)
    server_only = forge(ca_dir, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    verify_peer(server_only, mesh_ca.root_pem, trust_domains={TD}, peer_role="server")
    assert "client authentication" in check(server_only, mesh_ca.root_pem, peer_role="client")
    verify_peer(forge(ca_dir, eku=[]), mesh_ca.root_pem, trust_domains={TD})  # no EKU: any purpose (RFC 5280)


def test_weak_keys_are_refused(ca_dir: Path, mesh_ca: MeshCA) -> None:
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "1024-bit RSA" in check(forge(ca_dir, key=weak_rsa), mesh_ca.root_pem)
    p192 = ec.generate_private_key(ec.SECP192R1())
    assert "P-256" in check(forge(ca_dir, key=p192), mesh_ca.root_pem)
    # (SHA-1 signatures: cryptography 50 refuses to create one, so that case cannot be forged here.)


def test_trust_domains_and_aliases(mesh_ca: MeshCA) -> None:
    foreign = mesh_ca.issue("a", "b", trust_domain="evil.td")
    assert "trust domain 'evil.td'" in check(foreign.chain_der, mesh_ca.root_pem)
    peer = verify_peer(foreign.chain_der, mesh_ca.root_pem, trust_domains={TD, "evil.td"})
    assert peer.principal == "evil.td/ns/a/sa/b"


def test_validity_window_has_no_skew_allowance(mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("a", "b", ttl=timedelta(hours=1))
    start, end = cert.not_before, cert.not_after
    verify_peer(cert.chain_der, mesh_ca.root_pem, trust_domains={TD}, now=start)
    verify_peer(cert.chain_der, mesh_ca.root_pem, trust_domains={TD}, now=end)
    assert "not valid before" in check(cert.chain_der, mesh_ca.root_pem, now=start - timedelta(seconds=1))
    assert "expired" in check(cert.chain_der, mesh_ca.root_pem, now=end + timedelta(seconds=1))
    assert start == cert.not_after - timedelta(hours=1) - BACKDATE


def test_chain_must_reach_a_configured_root(mesh_ca: MeshCA, other_ca: MeshCA) -> None:
    cert = other_ca.issue("a", "b")
    assert "does not verify to a trusted root" in check(cert.chain_der, mesh_ca.root_pem)
    # Either root of an overlapping bundle will do.
    verify_peer(cert.chain_der, mesh_ca.root_pem + other_ca.root_pem, trust_domains={TD})


def test_intermediates_the_peer_sends_are_used_and_needed(tmp_path: Path, mesh_ca: MeshCA) -> None:
    mesh_ca.save(tmp_path / "root")
    inter = MeshCA.from_plugin(mesh_ca.cert_pem, (tmp_path / "root" / "root-key.pem").read_bytes())
    cert = inter.issue("a", "b")
    assert len(cert.chain_der) == 2
    verify_peer(cert.chain_der, mesh_ca.root_pem, trust_domains={TD})
    assert "does not verify" in check(cert.chain_der[:1], mesh_ca.root_pem)  # intermediate missing


def test_path_length_zero_intermediate_cannot_issue_a_ca(tmp_path: Path, mesh_ca: MeshCA) -> None:
    mesh_ca.save(tmp_path / "root")
    inter = MeshCA.from_plugin(mesh_ca.cert_pem, (tmp_path / "root" / "root-key.pem").read_bytes())
    inter.save(tmp_path / "inter")
    # An intermediate signed by the pathlen:0 intermediate, then a leaf under it.
    sub = MeshCA.from_plugin((tmp_path / "inter" / "cert-chain.pem").read_bytes(),
                             (tmp_path / "inter" / "ca-key.pem").read_bytes())
    cert = sub.issue("a", "b")
    assert len(cert.chain_der) == 3
    assert "path length" in check(cert.chain_der, mesh_ca.root_pem)
    assert "path length" in check(cert.chain_der, mesh_ca.root_pem, allow_legacy_chain=True)


def test_istio_sample_chain_only_with_the_switch(samples: Path) -> None:
    chain = tuple(c.public_bytes(serialization.Encoding.DER)
                  for c in x509.load_pem_x509_certificates((samples / "workload-foo-cert.pem").read_bytes()))
    roots = (samples / "root-cert.pem").read_bytes()
    domains = {"trust-domain-foo"}
    reason = check(chain, roots, trust_domains=domains)
    assert "allow_legacy_chain" in reason
    peer = verify_peer(chain, roots, trust_domains=domains, allow_legacy_chain=True)
    assert peer.spiffe_id.uri == "spiffe://trust-domain-foo/ns/foo/sa/foo"
    # The switch relaxes the profile, not trust: the sample leaf still needs the sample root.
    assert "does not verify" in check(chain, MeshCA.init().root_pem, trust_domains=domains, allow_legacy_chain=True)
    # Nor the SVID rules: the sample intermediate itself is no workload identity.
    assert "exactly one URI SAN" in check(chain[1:], roots, trust_domains=domains, allow_legacy_chain=True)


def test_legacy_switch_still_requires_ca_flags(tmp_path: Path, mesh_ca: MeshCA) -> None:
    # A leaf used as an issuer: signatures check out, but it is no CA, with or without the switch.
    mesh_ca.save(tmp_path / "root")
    fake_ca = mesh_ca.issue("a", "fake-ca")
    issuer = x509.load_pem_x509_certificate(fake_ca.cert_chain_pem)
    issuer_key = serialization.load_pem_private_key(fake_ca.key_pem, password=None)
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
            .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([URI(ID)]), critical=False)
            .add_extension(ku(), critical=True)
            .sign(issuer_key, hashes.SHA256()))
    chain = (leaf.public_bytes(serialization.Encoding.DER), fake_ca.chain_der[0])
    assert "does not verify" in check(chain, mesh_ca.root_pem)
    assert "does not verify" in check(chain, mesh_ca.root_pem, allow_legacy_chain=True)


def test_garbage_and_empty_chains(mesh_ca: MeshCA) -> None:
    assert "sent no certificate" in check((), mesh_ca.root_pem)
    assert "not valid DER" in check((b"\x30\x03junk",), mesh_ca.root_pem)
    assert "at most" in check(tuple([mesh_ca.issue("a", "b").chain_der[0]] * 9), mesh_ca.root_pem)


def test_malformed_san_is_refused_not_crashed_on(ca_dir: Path, mesh_ca: MeshCA) -> None:
    # A subjectAltName whose bytes do not parse: the parser's ValueError must become a verdict.
    garbage_san = x509.UnrecognizedExtension(x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x86\x01")
    signer = x509.load_pem_x509_certificate((ca_dir / "root-cert.pem").read_bytes())
    now = datetime.now(UTC)
    bad = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(signer.subject)
           .public_key(ec.generate_private_key(ec.SECP256R1()).public_key()).serial_number(7)
           .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
           .add_extension(garbage_san, critical=True)
           .sign(ca_key(ca_dir), hashes.SHA256()))
    assert "malformed extension" in check((bad.public_bytes(serialization.Encoding.DER),), mesh_ca.root_pem)


def test_a_single_string_is_not_taken_for_a_set_of_trust_domains(mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("a", "b", trust_domain="local")
    with pytest.raises(TypeError, match="not one string"):
        verify_peer(cert.chain_der, mesh_ca.root_pem, trust_domains="cluster.local")
