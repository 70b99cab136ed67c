"""A forked child (gunicorn --preload, multiprocessing's fork) starts afresh: it does not reuse
the parent's pooled sockets, and the threads a mesh runs (config watch, certificate renewal,
mirror workers) run in the child too."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

import pymesh
from pymesh.inbound.jwks import JwksCache
from pymesh.inbound.lists import ProviderList
from pymesh.security import CertificateSource, MeshCA
from pymesh.testing.upstream import Upstream, service_yaml

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


def in_child(check: object) -> int:
    """Run ``check()`` in a forked child; its exit status (0: every assertion held)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            check()  # type: ignore[operator]
            code = 0
        except BaseException as exc:  # report, then leave without running the parent's cleanups
            print(f"child failed: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def threads_named(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def test_a_forked_child_opens_its_own_connections_and_keeps_watching(tmp_path: Path) -> None:
    with Upstream("svc-v1", {"version": "v1"}).start() as upstream:
        config = tmp_path / "mesh.yaml"
        config.write_text(service_yaml("svc", "ns1", [upstream]))
        with pymesh.Mesh.from_path(config, namespace="ns1") as mesh, mesh.client() as client:
            mesh.watch(interval=0.05)
            assert client.get("http://svc:8080/").status_code == 200  # a pooled connection, in the parent
            parent_runtime = mesh._runtime
            transport = client._transport

            def check() -> None:
                assert transport._pools == {}  # type: ignore[attr-defined]  # the parent's sockets: left alone
                assert mesh._runtime is not parent_runtime  # fresh counters, gates, random sequence
                assert threads_named("pymesh-config-watch"), "the watcher was not restarted"
                assert client.get("http://svc:8080/").status_code == 200  # on a connection of its own

            assert in_child(check) == 0
            assert upstream.accepted() == 2  # the parent's connection, and the child's own
            assert client.get("http://svc:8080/").status_code == 200  # the parent's pool is unharmed
            assert upstream.accepted() == 2


def test_certificate_renewal_goes_on_in_a_forked_child() -> None:
    source = CertificateSource.from_ca(MeshCA.init("cluster.local"), "ns1", "svc").start()
    try:
        assert threads_named("pymesh-cert-rotation")

        def check() -> None:
            assert threads_named("pymesh-cert-rotation"), "renewal stopped in the child"

        assert in_child(check) == 0
    finally:
        source.stop()


def test_key_and_list_refreshes_go_on_in_a_forked_child() -> None:
    keys = JwksCache("https://keys.invalid/jwks", fetch=lambda url, timeout: b"{}")
    lists = ProviderList("https://lists.invalid/x", refresh_interval=60, ttl=120, fetch=lambda url, timeout: b"a\n")
    try:
        def check() -> None:
            assert threads_named("pymesh-jwks https://keys.invalid/jwks"), "key refresh stopped in the child"
            assert threads_named("pymesh-list https://lists.invalid/x"), "list refresh stopped in the child"

        assert in_child(check) == 0
    finally:
        keys.close()
        lists.close()
