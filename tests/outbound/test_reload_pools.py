"""Reloads and endpoint pools: same TLS settings keep their pools; removed endpoints' pools close."""

from __future__ import annotations

import time
from pathlib import Path

import pymesh
from pymesh.outbound.transport import MeshTransport
from pymesh.testing.upstream import service_yaml
from tests.outbound.conftest import StartUpstream, docs
from tests.outbound.test_resilience_e2e import URL, dest_rule


def test_a_reload_closes_the_pools_of_removed_endpoints(servers: StartUpstream, tmp_path: Path) -> None:
    a, b, c = servers("svc-a"), servers("svc-b"), servers("svc-c")
    rule = dest_rule("{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 2}}}")
    config = tmp_path / "mesh.yaml"
    config.write_text(docs(service_yaml("svc", "ns1", [a, b]), rule))
    workload = pymesh.Workload(name="caller", namespace="ns1", labels={"app": "caller"})
    with pymesh.Mesh.from_path(config, workload=workload) as mesh, mesh.client() as client:
        for _ in range(4):
            assert client.get(URL).status_code == 200
        transport = client._transport
        assert isinstance(transport, MeshTransport)
        assert len(transport._pools) == 2
        config.write_text(docs(service_yaml("svc", "ns1", [c]), rule))  # a and b are gone
        mesh.reload()
        time.sleep(1.1)  # stale pools are looked for at most once a second
        for _ in range(3):
            r = client.get(URL)
            assert r.status_code == 200
        assert {p.address.port for p in transport._pools.values()} == {c.port}
        state = next(iter(mesh._runtime._entries.values()))
        assert state.connections.open == 1  # a's and b's idle connections no longer hold slots
