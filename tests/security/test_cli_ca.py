"""``pymesh ca init`` / ``pymesh ca issue``, and what tools nobody here wrote make of the output."""

from __future__ import annotations

import io
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pymesh.cli import main
from pymesh.security import MeshCA, WorkloadCertificate, client_context, server_context, verify_peer, verify_server
from tests.security.conftest import TLSServer

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not on PATH")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_then_issue_round_trip(tmp_path: Path) -> None:
    code, text = run("ca", "init", "--trust-domain", "cluster.local", "--out", str(tmp_path / "ca"))
    assert code == 0, text
    assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == ["root-cert.pem", "root-key.pem"]
    assert mode(tmp_path / "ca" / "root-key.pem") == 0o600
    code, text = run("ca", "issue", "--ca", str(tmp_path / "ca"), "--namespace", "tutorial",
                     "--service-account", "customer", "--out", str(tmp_path / "customer"))
    assert code == 0, text
    assert "spiffe://cluster.local/ns/tutorial/sa/customer" in text
    assert sorted(p.name for p in (tmp_path / "customer").iterdir()) == ["cert-chain.pem", "key.pem", "root-cert.pem"]
    assert mode(tmp_path / "customer" / "key.pem") == 0o600
    cert = WorkloadCertificate.from_dir(tmp_path / "customer")
    assert cert.spiffe_id.principal == "cluster.local/ns/tutorial/sa/customer"
    assert (cert.not_after - cert.not_before).total_seconds() == pytest.approx(24 * 3600, abs=120)
    assert cert.root_pem == (tmp_path / "ca" / "root-cert.pem").read_bytes()
    verify_peer(cert.chain_der, cert.root_pem, trust_domains={"cluster.local"})


def test_init_refuses_to_overwrite_a_key_unless_forced(tmp_path: Path) -> None:
    assert run("ca", "init", "--out", str(tmp_path))[0] == 0
    first = (tmp_path / "root-key.pem").read_bytes()
    assert run("ca", "init", "--out", str(tmp_path))[0] == 1
    assert (tmp_path / "root-key.pem").read_bytes() == first
    assert run("ca", "init", "--out", str(tmp_path), "--force")[0] == 0
    assert (tmp_path / "root-key.pem").read_bytes() != first


def test_intermediate_under_a_plug_in_root(tmp_path: Path) -> None:
    assert run("ca", "init", "--trust-domain", "example.org", "--out", str(tmp_path / "root"))[0] == 0
    code, text = run("ca", "init", "--trust-domain", "example.org", "--out", str(tmp_path / "inter"),
                     "--root-cert", str(tmp_path / "root" / "root-cert.pem"),
                     "--root-key", str(tmp_path / "root" / "root-key.pem"))
    assert code == 0, text
    files = sorted(p.name for p in (tmp_path / "inter").iterdir())
    assert files == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]  # Istio's cacerts layout
    assert mode(tmp_path / "inter" / "ca-key.pem") == 0o600
    assert (tmp_path / "inter" / "root-cert.pem").read_bytes() == (tmp_path / "root" / "root-cert.pem").read_bytes()
    code, text = run("ca", "issue", "--ca", str(tmp_path / "inter"), "--namespace", "ns1",
                     "--service-account", "web", "--out", str(tmp_path / "web"), "--key", "rsa", "--ttl", "2h",
                     "--dns", "web.ns1.svc")
    assert code == 0, text
    cert = WorkloadCertificate.from_dir(tmp_path / "web")
    assert cert.spiffe_id.uri == "spiffe://example.org/ns/ns1/sa/web"  # trust domain read back from the CA
    assert len(cert.chain_der) == 2  # leaf + intermediate
    assert (cert.not_after - cert.not_before).total_seconds() == pytest.approx(2 * 3600, abs=120)
    verify_peer(cert.chain_der, cert.root_pem, trust_domains={"example.org"})


def test_istio_sample_cacerts_folder_issues_certificates(samples: Path, tmp_path: Path) -> None:
    code, text = run("ca", "issue", "--ca", str(samples), "--namespace", "foo", "--service-account", "foo",
                     "--out", str(tmp_path / "w"))
    assert code == 0, text
    cert = WorkloadCertificate.from_dir(tmp_path / "w")
    assert cert.root_pem == (samples / "root-cert.pem").read_bytes()
    verify_peer(cert.chain_der, cert.root_pem, trust_domains={"cluster.local"}, allow_legacy_chain=True)


def test_bad_arguments_fail_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("ca", "issue", "--ca", str(tmp_path / "nothing"), "--namespace", "a", "--service-account", "b",
               "--out", str(tmp_path / "o"))[0] == 1
    assert "is not a CA folder" in capsys.readouterr().err
    assert run("ca", "init", "--out", str(tmp_path / "ca"))[0] == 0
    assert run("ca", "issue", "--ca", str(tmp_path / "ca"), "--namespace", "a/b", "--service-account", "b",
               "--out", str(tmp_path / "o"))[0] == 1
    assert "must be /ns/<namespace>/sa/<service-account>" in capsys.readouterr().err
    assert run("ca", "issue", "--ca", str(tmp_path / "ca"), "--namespace", "a", "--service-account", "b",
               "--out", str(tmp_path / "o"), "--ttl", "200d")[0] == 1
    assert "maximum" in capsys.readouterr().err
    assert run("ca", "init", "--out", str(tmp_path / "x"), "--root-cert", "only-one")[0] == 2


# -- interoperability with OpenSSL ---------------------------------------------------------------

@needs_openssl
def test_openssl_verify_accepts_the_output_under_x509_strict(tmp_path: Path) -> None:
    assert run("ca", "init", "--out", str(tmp_path / "root"))[0] == 0
    assert run("ca", "init", "--out", str(tmp_path / "inter"), "--root-cert", str(tmp_path / "root/root-cert.pem"),
               "--root-key", str(tmp_path / "root/root-key.pem"))[0] == 0
    for ca in ("root", "inter"):
        assert run("ca", "issue", "--ca", str(tmp_path / ca), "--namespace", "a", "--service-account", "b",
                   "--out", str(tmp_path / f"w-{ca}"))[0] == 0
        w = tmp_path / f"w-{ca}"
        done = subprocess.run([OPENSSL or "openssl", "verify", "-x509_strict", "-purpose", "sslclient",
                               "-CAfile", str(w / "root-cert.pem"), "-untrusted", str(w / "cert-chain.pem"),
                               str(w / "cert-chain.pem")], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stdout + done.stderr
        assert ": OK" in done.stdout


@needs_openssl
def test_openssl_s_client_against_a_pymesh_server(tmp_path: Path, servers: Callable[..., TLSServer]) -> None:
    ca = MeshCA.init()
    ca.issue("a", "client").write(tmp_path / "client")
    server = servers(server_context(ca.issue("a", "server"), require_client_cert=True), ca.root_pem)
    c = tmp_path / "client"
    proc = subprocess.Popen([OPENSSL or "openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_3",
                             "-cert", str(c / "cert-chain.pem"), "-key", str(c / "key.pem"),
                             "-CAfile", str(c / "root-cert.pem"), "-verify_return_error", "-quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:  # until the server's answer, or s_client gives up and exits
            lines.append(line)
            if line.startswith("ok "):
                break
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait(timeout=5)
        proc.stdout.close()
    assert "ok cluster.local/ns/a/sa/client\n" in lines, "".join(lines)
    assert server.wait()[0].peer is not None


@needs_openssl
def test_a_pymesh_client_against_openssl_s_server(tmp_path: Path) -> None:
    ca = MeshCA.init()
    ca.issue("a", "server").write(tmp_path / "server")
    s = tmp_path / "server"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([OPENSSL or "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
                             "-cert", str(s / "cert-chain.pem"), "-key", str(s / "key.pem"),
                             "-CAfile", str(s / "root-cert.pem"), "-Verify", "1", "-verify_return_error", "-rev"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 5
        while "ACCEPT" not in proc.stdout.readline():
            assert time.monotonic() < deadline, "openssl s_server did not start"
            assert proc.poll() is None, "openssl s_server exited"
        ctx = client_context(ca.issue("a", "client"), roots_pem=ca.root_pem)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            peer = verify_server(tls, ca.root_pem, trust_domains={"cluster.local"},
                                 expected=["spiffe://cluster.local/ns/a/sa/server"])
            tls.sendall(b"hello from pymesh\n")
            echoed = b""
            while b"\n" not in echoed:
                chunk = tls.recv(100)
                assert chunk, "s_server closed before echoing"
                echoed += chunk
        output = proc.communicate(timeout=5)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert peer.principal == "cluster.local/ns/a/sa/server"
    assert echoed.strip() == b"hello from pymesh"[::-1]  # -rev: s_server sends each line back reversed
    assert "verify return:1" in output, output


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not on PATH")
def test_curl_with_a_client_certificate(tmp_path: Path, servers: Callable[..., TLSServer]) -> None:
    assert run("ca", "init", "--out", str(tmp_path / "ca"))[0] == 0
    assert run("ca", "issue", "--ca", str(tmp_path / "ca"), "--namespace", "a", "--service-account", "curl",
               "--out", str(tmp_path / "c"))[0] == 0
    ca = MeshCA.load(tmp_path / "ca")
    site = ca.issue("a", "server", dns_names=["server.mesh.test"])
    server = servers(server_context(site, require_client_cert=True), ca.root_pem, linger=False)
    c = tmp_path / "c"
    url = f"https://server.mesh.test:{server.port}/"
    done = subprocess.run([CURL or "curl", "-sS", "--http0.9", "--max-time", "5",
                           "--resolve", f"server.mesh.test:{server.port}:127.0.0.1",
                           "--cacert", str(c / "root-cert.pem"), "--cert", str(c / "cert-chain.pem"),
                           "--key", str(c / "key.pem"), url], capture_output=True, text=True, timeout=10)
    # The test server answers its one line before reading the request, so curl prints it raw.
    assert done.stdout == "ok cluster.local/ns/a/sa/curl\n", done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    without_cert = subprocess.run([CURL or "curl", "-sS", "--http0.9", "--max-time", "5",
                                   "--resolve", f"server.mesh.test:{server.port}:127.0.0.1",
                                   "--cacert", str(c / "root-cert.pem"), url],
                                  capture_output=True, text=True, timeout=10)
    assert not without_cert.stdout.startswith("ok"), without_cert.stdout  # STRICT: refused at TLS
    assert without_cert.returncode != 0
