"""Clients nobody here wrote: curl and openssl s_client against ``pymesh.serve``."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import pymesh
from pymesh.security.ca import MeshCA
from pymesh.serving import Server
from tests.inbound.helpers import peer_auth
from tests.inbound.test_serve import app

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("openssl") is None,
                                reason="curl and openssl are needed")

MakeMesh = Callable[..., pymesh.Mesh]


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "5", *args], capture_output=True, text=True, timeout=15)


@pytest.fixture
def files(ca: MeshCA, tmp_path: Path) -> Path:
    ca.issue("tutorial", "customer").write(tmp_path / "client")
    return tmp_path / "client"


def test_curl_with_a_client_certificate(ca: MeshCA, make_mesh: MakeMesh, files: Path) -> None:
    server_cert = ca.issue("shop", "web", dns_names=["localhost"])  # curl checks the host name
    with Server(app(), mesh=make_mesh(peer_auth("STRICT")), certificate=server_cert) as server:
        url = f"https://localhost:{server.port}/who"
        ok = curl("--cacert", str(files / "root-cert.pem"), "--cert", str(files / "cert-chain.pem"),
                  "--key", str(files / "key.pem"), url)
        no_cert = curl("--cacert", str(files / "root-cert.pem"), url)
        plaintext = curl(f"http://localhost:{server.port}/who")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["caller"]["spiffe_id"] == "spiffe://cluster.local/ns/tutorial/sa/customer"
    assert no_cert.returncode != 0
    assert plaintext.returncode != 0
    assert plaintext.stdout == ""


def test_curl_plaintext_and_mtls_on_one_permissive_port(ca: MeshCA, make_mesh: MakeMesh, files: Path) -> None:
    server_cert = ca.issue("shop", "web", dns_names=["localhost"])
    with Server(app(), mesh=make_mesh(peer_auth("PERMISSIVE")), certificate=server_cert) as server:
        plaintext = curl(f"http://localhost:{server.port}/who")
        mtls = curl("--cacert", str(files / "root-cert.pem"), "--cert", str(files / "cert-chain.pem"),
                    "--key", str(files / "key.pem"), f"https://localhost:{server.port}/who")
    assert json.loads(plaintext.stdout)["caller"]["principal"] is None
    assert json.loads(mtls.stdout)["caller"]["principal"] == "cluster.local/ns/tutorial/sa/customer"


def test_openssl_s_client(ca: MeshCA, make_mesh: MakeMesh, files: Path) -> None:
    with Server(app(), mesh=make_mesh(peer_auth("STRICT")), ca=ca) as server:
        request = "GET /who HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
        ok = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-quiet", "-verify_return_error",
             "-CAfile", str(files / "root-cert.pem"), "-cert", str(files / "cert-chain.pem"),
             "-key", str(files / "key.pem")],
            input=request, capture_output=True, text=True, timeout=15)
        refused = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-quiet",
             "-CAfile", str(files / "root-cert.pem")],
            input=request, capture_output=True, text=True, timeout=15)
    assert "HTTP/1.1 200" in ok.stdout, ok.stderr
    assert "cluster.local/ns/tutorial/sa/customer" in ok.stdout
    # Nothing is served. (asyncio may drop the connection before its certificate_required alert is
    # flushed, so the client reads an end of stream where Envoy would send the alert.)
    assert "HTTP/1.1" not in refused.stdout
