"""Real TLS handshakes over 127.0.0.1 between MeshCA-issued identities."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pymesh.security import (
    MeshCA,
    PeerVerificationError,
    check_server_identity,
    check_subject_alt_names,
    client_context,
    mutual_context,
    server_context,
    simple_context,
)
from tests.security.conftest import TD, TLSServer, sample_workload, talk

Servers = Callable[..., TLSServer]


def refused(port: int, ctx: ssl.SSLContext, **kw: object) -> BaseException:
    """The connection must fail: at the handshake, or (TLS 1.3) at the first read after it."""
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, PeerVerificationError)) as info:
        talk(port, ctx, **kw)  # type: ignore[arg-type]
    return info.value


def test_mutual_handshake_both_sides_learn_the_peer(mesh_ca: MeshCA, servers: Servers) -> None:
    srv = mesh_ca.issue("tutorial", "recommendation")
    cli = mesh_ca.issue("tutorial", "customer")
    server = servers(server_context(srv, require_client_cert=True), mesh_ca.root_pem)
    reply = talk(server.port, client_context(cli, roots_pem=mesh_ca.root_pem), roots=mesh_ca.root_pem,
                 expected=["spiffe://cluster.local/ns/tutorial/sa/recommendation"], keep=True)
    try:
        assert reply.tls.version() == "TLSv1.3"
        assert reply.peer is not None
        assert reply.peer.principal == "cluster.local/ns/tutorial/sa/recommendation"
        assert reply.peer.chain_der[0] == srv.chain_der[0]  # leaf first (OpenSSL may append the root)
    finally:
        reply.tls.close()
    assert reply.principal == "cluster.local/ns/tutorial/sa/customer"
    server.wait()
    assert server.outcomes[0].error is None


def test_wrong_service_account_is_refused_by_secure_naming(mesh_ca: MeshCA, servers: Servers) -> None:
    # The server's certificate is valid and even names the host; it is the wrong workload.
    impostor = mesh_ca.issue("default", "ratings", dns_names=["reviews.default.svc.cluster.local"])
    server = servers(server_context(impostor, require_client_cert=False), mesh_ca.root_pem)
    ctx = client_context(mesh_ca.issue("default", "productpage"), roots_pem=mesh_ca.root_pem)
    with pytest.raises(PeerVerificationError, match="ns/default/sa/ratings is not one expected"):
        talk(server.port, ctx, roots=mesh_ca.root_pem, expected=["spiffe://cluster.local/ns/default/sa/reviews"])
    # The same server, when its own identity is expected, passes: the refusal was about the name.
    ok = talk(server.port, ctx, roots=mesh_ca.root_pem, expected=["cluster.local/ns/default/sa/ratings"])
    assert ok.peer is not None
    assert ok.peer.spiffe_id.service_account == "ratings"
    check_server_identity(ok.peer, [])  # no expectation known: any verified identity (Istio's behaviour)


def test_client_from_another_ca_is_refused_at_tls(mesh_ca: MeshCA, other_ca: MeshCA, servers: Servers) -> None:
    server = servers(server_context(mesh_ca.issue("a", "server"), require_client_cert=True), mesh_ca.root_pem)
    stranger = client_context(other_ca.issue("a", "client"), roots_pem=mesh_ca.root_pem)
    refused(server.port, stranger)
    server.wait()
    assert isinstance(server.outcomes[0].error, ssl.SSLError)
    assert server.outcomes[0].peer is None


def test_server_from_another_ca_is_refused_by_the_client(mesh_ca: MeshCA, other_ca: MeshCA,
                                                         servers: Servers) -> None:
    server = servers(server_context(other_ca.issue("a", "server"), require_client_cert=False), other_ca.root_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(server.port, client_context(mesh_ca.issue("a", "c"), roots_pem=mesh_ca.root_pem))


def test_strict_refuses_a_client_without_certificate(mesh_ca: MeshCA, servers: Servers) -> None:
    server = servers(server_context(mesh_ca.issue("a", "server"), require_client_cert=True), mesh_ca.root_pem)
    refused(server.port, client_context(None, roots_pem=mesh_ca.root_pem))
    server.wait()
    assert isinstance(server.outcomes[0].error, ssl.SSLError)


def test_permissive_accepts_no_certificate_but_not_a_bad_one(mesh_ca: MeshCA, other_ca: MeshCA,
                                                            servers: Servers) -> None:
    server = servers(server_context(mesh_ca.issue("a", "server"), require_client_cert=False), mesh_ca.root_pem)
    anonymous = talk(server.port, client_context(None, roots_pem=mesh_ca.root_pem))
    assert anonymous.principal == "-"
    # A certificate from another CA is refused, never downgraded to "no identity".
    refused(server.port, client_context(other_ca.issue("a", "c"), roots_pem=mesh_ca.root_pem))
    server.wait(2)
    assert server.outcomes[0].error is None
    assert server.outcomes[0].peer is None
    assert isinstance(server.outcomes[1].error, ssl.SSLError)


@pytest.mark.parametrize("shift", [timedelta(hours=-3), timedelta(hours=2)], ids=["expired", "not-yet-valid"])
def test_certificate_outside_its_validity_is_refused(mesh_ca: MeshCA, servers: Servers, shift: timedelta) -> None:
    old_ca = MeshCA.init(TD, now=datetime.now(UTC) - timedelta(days=1))
    stale = old_ca.issue("a", "client", ttl=timedelta(hours=1), now=datetime.now(UTC) + shift,
                          backdate=timedelta(0))
    server = servers(server_context(old_ca.issue("a", "server"), require_client_cert=True), old_ca.root_pem)
    refused(server.port, client_context(stale, roots_pem=old_ca.root_pem))
    server.wait()
    assert "certificate" in str(server.outcomes[0].error).lower()
    # And as a server: the client refuses it.
    bad_server = servers(server_context(stale, require_client_cert=False), old_ca.root_pem)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"expired|not yet valid"):
        talk(bad_server.port, client_context(None, roots_pem=old_ca.root_pem))


def test_other_trust_domain_is_refused_unless_aliased(mesh_ca: MeshCA, servers: Servers) -> None:
    foreign = mesh_ca.issue("a", "client", trust_domain="evil.td")
    strict = servers(server_context(mesh_ca.issue("a", "s"), require_client_cert=True), mesh_ca.root_pem)
    refused(strict.port, client_context(foreign, roots_pem=mesh_ca.root_pem))
    strict.wait()
    error = strict.outcomes[0].error
    assert isinstance(error, PeerVerificationError)
    assert "trust domain 'evil.td'" in error.reason
    aliased = servers(server_context(mesh_ca.issue("a", "s"), require_client_cert=True), mesh_ca.root_pem,
                      trust_domains=(TD, "evil.td"))
    reply = talk(aliased.port, client_context(foreign, roots_pem=mesh_ca.root_pem))
    assert reply.principal == "evil.td/ns/a/sa/client"


def test_rsa_and_ecdsa_workloads_interoperate(mesh_ca: MeshCA, servers: Servers) -> None:
    server = servers(server_context(mesh_ca.issue("a", "rsa", key="rsa"), require_client_cert=True),
                     mesh_ca.root_pem)
    reply = talk(server.port, client_context(mesh_ca.issue("a", "ec"), roots_pem=mesh_ca.root_pem),
                 roots=mesh_ca.root_pem, expected=["spiffe://cluster.local/ns/a/sa/rsa"])
    assert reply.principal == "cluster.local/ns/a/sa/ec"
    rsa_ca = MeshCA.init(TD, key="rsa")
    server = servers(server_context(rsa_ca.issue("a", "ec"), require_client_cert=True), rsa_ca.root_pem)
    reply = talk(server.port, client_context(rsa_ca.issue("a", "rsa", key="rsa"), roots_pem=rsa_ca.root_pem),
                 roots=rsa_ca.root_pem)
    assert reply.principal == "cluster.local/ns/a/sa/rsa"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_protocol_and_cipher_policy(mesh_ca: MeshCA, servers: Servers) -> None:
    server = servers(server_context(mesh_ca.issue("a", "s"), require_client_cert=False), mesh_ca.root_pem)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    refused(server.port, old)
    static_rsa = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    static_rsa.check_hostname, static_rsa.verify_mode = False, ssl.CERT_NONE
    static_rsa.maximum_version = ssl.TLSVersion.TLSv1_2
    static_rsa.set_ciphers("AES128-GCM-SHA256")  # Istio still allows it; it has no forward secrecy
    refused(server.port, static_rsa)
    tls12 = client_context(None, roots_pem=mesh_ca.root_pem)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    reply = talk(server.port, tls12, keep=True)
    try:
        assert reply.tls.version() == "TLSv1.2"
        cipher = reply.tls.cipher()
        assert cipher is not None
        assert cipher[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    finally:
        reply.tls.close()


def test_istio_sample_chain_needs_the_legacy_switch(samples: Path, servers: Servers) -> None:
    foo, bar = sample_workload(samples, "foo"), sample_workload(samples, "bar")
    roots = (samples / "root-cert.pem").read_bytes()
    domains = ("trust-domain-foo", "trust-domain-bar")
    # Strict: OpenSSL's VERIFY_X509_STRICT refuses the 2018 chain during the handshake.
    server = servers(server_context(foo, require_client_cert=True), roots, trust_domains=domains)
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(server.port, client_context(bar, roots_pem=roots), roots=roots, trust_domains=domains)
    # With the switch, both layers accept it, and the identities are the samples' own.
    server = servers(server_context(foo, require_client_cert=True, allow_legacy_chain=True), roots,
                     trust_domains=domains, legacy=True)
    reply = talk(server.port, client_context(bar, roots_pem=roots, allow_legacy_chain=True), roots=roots,
                 trust_domains=domains, legacy=True, expected=["spiffe://trust-domain-foo/ns/foo/sa/foo"])
    assert reply.principal == "trust-domain-bar/ns/bar/sa/bar"
    assert reply.peer is not None
    assert len(reply.peer.chain_der) == 2


def test_simple_and_mutual_origination(mesh_ca: MeshCA, other_ca: MeshCA, servers: Servers,
                                       tmp_path: Path) -> None:
    site = mesh_ca.issue("ext", "web", dns_names=["api.example.test"])
    (tmp_path / "ca.pem").write_bytes(mesh_ca.root_pem)
    server = servers(server_context(site, require_client_cert=False), mesh_ca.root_pem)
    ok = talk(server.port, simple_context(ca_certificates=tmp_path / "ca.pem"), server_hostname="api.example.test")
    assert ok.principal == "-"
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch"):
        talk(server.port, simple_context(ca_certificates=tmp_path / "ca.pem"), server_hostname="other.example.test")
    # subjectAltNames: the name check moves after the handshake and is exact.
    pinned = simple_context(ca_certificates=tmp_path / "ca.pem", subject_alt_names=["api.example.test"])
    reply = talk(server.port, pinned, server_hostname="whatever.test", keep=True)
    try:
        check_subject_alt_names(reply.tls, ["API.example.test"])
        check_subject_alt_names(reply.tls, ["spiffe://cluster.local/ns/ext/sa/web"])
        with pytest.raises(PeerVerificationError):
            check_subject_alt_names(reply.tls, ["*.example.test", "example.test"])
    finally:
        reply.tls.close()
    # An unknown CA fails SIMPLE, unless insecureSkipVerify.
    (tmp_path / "other.pem").write_bytes(other_ca.root_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(server.port, simple_context(ca_certificates=tmp_path / "other.pem"), server_hostname="api.example.test")
    assert talk(server.port, simple_context(insecure_skip_verify=True)).principal == "-"
    # MUTUAL: the client certificate comes from files.
    me = mesh_ca.issue("ext", "caller")
    me.write(tmp_path / "me")
    strict = servers(server_context(site, require_client_cert=True), mesh_ca.root_pem)
    ctx = mutual_context(client_certificate=tmp_path / "me" / "cert-chain.pem",
                         private_key=tmp_path / "me" / "key.pem", ca_certificates=tmp_path / "ca.pem")
    assert talk(strict.port, ctx, server_hostname="api.example.test").principal == "cluster.local/ns/ext/sa/caller"
