"""SpiffeId parsing and WorkloadCertificate loading."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from pymesh import Workload
from pymesh.security import CertificateError, MeshCA, SpiffeId, WorkloadCertificate


def test_parse_and_render() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/tutorial/sa/customer")
    assert (sid.trust_domain, sid.namespace, sid.service_account) == ("cluster.local", "tutorial", "customer")
    assert sid.uri == "spiffe://cluster.local/ns/tutorial/sa/customer"
    assert sid.principal == "cluster.local/ns/tutorial/sa/customer"
    assert sid == SpiffeId("cluster.local", "tutorial", "customer")
    assert hash(sid) == hash(SpiffeId("cluster.local", "tutorial", "customer"))
    me = Workload(name="customer", namespace="tutorial", service_account="customer")
    assert SpiffeId.parse(me.spiffe_id()) == sid  # the same spelling as the Workload's


@pytest.mark.parametrize(("uri", "reason"), [
    ("https://cluster.local/ns/a/sa/b", "scheme"),
    ("SPIFFE://cluster.local/ns/a/sa/b", "scheme"),
    ("spiffe:cluster.local/ns/a/sa/b", "scheme"),
    ("spiffe:///ns/a/sa/b", "trust domain is empty"),
    ("spiffe://cluster.local", "needs a path"),
    ("spiffe://cluster.local/", "needs a path"),
    ("spiffe://Cluster.local/ns/a/sa/b", "lowercase"),
    ("spiffe://cluster.local:443/ns/a/sa/b", "no port"),
    ("spiffe://user@cluster.local/ns/a/sa/b", "no port, user info"),
    ("spiffe://cluster.local/ns/a/sa/b/", "empty segment"),
    ("spiffe://cluster.local/ns//sa/b", "empty segment"),
    ("spiffe://cluster.local/ns/../sa/b", "'.' or '..'"),
    ("spiffe://cluster.local/ns/a%2Fb/sa/c", "percent-encoding"),
    ("spiffe://cluster.local/ns/a/sa/b?x=1", "query or fragment"),
    ("spiffe://cluster.local/ns/a/sa/b#f", "query or fragment"),
    ("spiffe://cluster.local/workload/x", "/ns/<namespace>/sa/<service-account>"),
    ("spiffe://cluster.local/sa/b/ns/a", "/ns/<namespace>/sa/<service-account>"),
    ("spiffe://cluster.local/ns/a/sa/b\x00", "NUL"),
    ("spiffe://cluster.local/ns/" + "x" * 2100 + "/sa/b", "2048"),
])
def test_invalid_ids_are_refused_with_a_reason(uri: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        SpiffeId.parse(uri)


def test_constructor_applies_the_same_rules() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        SpiffeId("Cluster.local", "a", "b")
    with pytest.raises(ValueError, match="path segment"):
        SpiffeId("cluster.local", "a b", "c")


def test_from_dir_round_trip_and_key_mode(tmp_path: Path, mesh_ca: MeshCA) -> None:
    cert = mesh_ca.issue("tutorial", "customer")
    cert.write(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "key.pem").st_mode) == 0o600
    loaded = WorkloadCertificate.from_dir(tmp_path)
    assert loaded == cert
    assert loaded.spiffe_id.uri == "spiffe://cluster.local/ns/tutorial/sa/customer"
    assert b"PRIVATE KEY" not in repr(loaded).encode()
    assert "key_pem" not in repr(loaded)


def test_from_dir_names_the_missing_or_bad_file(tmp_path: Path, mesh_ca: MeshCA) -> None:
    mesh_ca.issue("a", "b").write(tmp_path)
    (tmp_path / "root-cert.pem").unlink()
    with pytest.raises(CertificateError, match=r"root-cert\.pem"):
        WorkloadCertificate.from_dir(tmp_path)
    (tmp_path / "root-cert.pem").write_bytes(mesh_ca.root_pem)
    (tmp_path / "key.pem").write_bytes(mesh_ca.issue("a", "other").key_pem)
    with pytest.raises(CertificateError, match=r"key\.pem does not belong"):
        WorkloadCertificate.from_dir(tmp_path)
    (tmp_path / "cert-chain.pem").write_text("not a certificate")
    with pytest.raises(CertificateError, match=r"cert-chain\.pem"):
        WorkloadCertificate.from_dir(tmp_path)


def test_a_certificate_without_a_spiffe_id_is_no_workload_certificate(samples: Path) -> None:
    # Istio's sample intermediate and its key: a valid pair, but no workload identity.
    with pytest.raises(CertificateError, match="exactly one URI SAN"):
        WorkloadCertificate.from_pem((samples / "ca-cert.pem").read_bytes(), (samples / "ca-key.pem").read_bytes(),
                                     (samples / "root-cert.pem").read_bytes())
