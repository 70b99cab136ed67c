"""Fixtures for the inbound tests: two mesh CAs, meshes for workload ``shop/web``, clients, apps.

- ``ca`` / ``other_ca``: two unrelated mesh CAs for the same trust domain (session scope).
- ``make_mesh(yaml)``: a mesh for workload ``shop/web`` (labels ``app: web``), closed at teardown.
- ``starlette_app``: answers ``GET /who`` with what the middleware handed it (caller, TLS, headers).
- ``client(cert=None, roots=None)``: an httpx client presenting ``cert``, trusting ``roots``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

import pymesh
from pymesh.security.ca import MeshCA
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.tls import client_context
from tests.inbound.helpers import TIMEOUT, WORKLOAD, who


@pytest.fixture(scope="session")
def ca() -> MeshCA:
    return MeshCA.init("cluster.local")


@pytest.fixture(scope="session")
def other_ca() -> MeshCA:
    return MeshCA.init("cluster.local")


@pytest.fixture(scope="session")
def customer_cert(ca: MeshCA) -> WorkloadCertificate:
    return ca.issue("tutorial", "customer")


@pytest.fixture
def make_mesh() -> Iterator[Callable[..., pymesh.Mesh]]:
    meshes: list[pymesh.Mesh] = []

    def make(yaml: str = "", workload: pymesh.Workload = WORKLOAD) -> pymesh.Mesh:
        mesh = pymesh.Mesh.from_yaml(yaml, workload=workload)
        meshes.append(mesh)
        return mesh

    yield make
    for mesh in meshes:
        mesh.close()


@pytest.fixture
def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/who", who)])


@pytest.fixture
def client() -> Iterator[Callable[..., httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(cert: WorkloadCertificate | None = None, roots: bytes | None = None) -> httpx.Client:
        verify: ssl.SSLContext | bool = False
        if roots is not None:
            verify = client_context(cert, roots_pem=roots)
        c = httpx.Client(verify=verify, timeout=TIMEOUT)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


