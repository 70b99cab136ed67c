"""PeerAuthentication composition (no I/O): inheritance, precedence, selectors, ports, legacy Policy peers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import pymesh
from pymesh.inbound.core import Context, peer_policy
from pymesh.inbound.peer import PEER_DENIAL, PeerPolicy, peer_step
from pymesh.inbound.request import InboundRequest
from pymesh.security.identity import PeerIdentity, SpiffeId
from tests.inbound.helpers import peer_auth

MakeMesh = Callable[..., pymesh.Mesh]


def policy(make_mesh: MakeMesh, yaml: str) -> PeerPolicy:
    return peer_policy(make_mesh(yaml).snapshot)


def test_no_policy_is_permissive(make_mesh: MakeMesh) -> None:
    p = policy(make_mesh, "")
    assert (p.mode, dict(p.ports), p.decided_by) == ("PERMISSIVE", {}, ())


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        # mesh -> namespace -> workload, the narrowest non-UNSET wins
        ([("STRICT", "istio-system", "")], "STRICT"),
        ([("STRICT", "istio-system", ""), ("UNSET", "shop", "")], "STRICT"),
        ([("STRICT", "istio-system", ""), ("", "shop", "")], "STRICT"),  # mtls absent is UNSET
        ([("STRICT", "istio-system", ""), ("PERMISSIVE", "shop", ""), ("UNSET", "shop", "app: web")], "PERMISSIVE"),
        ([("DISABLE", "shop", ""), ("STRICT", "shop", "app: web")], "STRICT"),
        ([("STRICT", "shop", ""), ("DISABLE", "shop", "app: web")], "DISABLE"),
        ([("UNSET", "istio-system", ""), ("UNSET", "shop", ""), ("UNSET", "shop", "app: web")], "PERMISSIVE"),
        # a selector that does not match, another namespace, a root-namespace selector: not applied
        ([("STRICT", "shop", "app: other")], "PERMISSIVE"),
        ([("STRICT", "elsewhere", "")], "PERMISSIVE"),
        ([("STRICT", "istio-system", "app: web")], "PERMISSIVE"),
    ],
    ids=["mesh", "ns-unset", "ns-absent", "ns-over-mesh", "workload-over-ns", "workload-disable",
         "all-unset", "selector-miss", "other-ns", "root-selector-ignored"],
)
def test_inheritance(make_mesh: MakeMesh, docs: list[tuple[str, str, str]], expected: str) -> None:
    yaml = "".join(peer_auth(mode, name=f"pa{i}", namespace=ns, selector=sel) for i, (mode, ns, sel) in enumerate(docs))
    assert policy(make_mesh, yaml).mode == expected


def test_oldest_wins_at_one_level(make_mesh: MakeMesh) -> None:
    yaml = (peer_auth("DISABLE", name="a-new", created="2024-06-01T00:00:00Z")
            + peer_auth("STRICT", name="z-old", created="2020-01-01T00:00:00Z"))
    p = policy(make_mesh, yaml)
    assert p.mode == "STRICT"
    assert p.decided_by == ("shop/z-old",)


def test_port_level_mtls(make_mesh: MakeMesh) -> None:
    yaml = peer_auth("STRICT", name="ns") + peer_auth(
        "", name="web", selector="app: web",
        ports="8080: {mode: PERMISSIVE}\n    9000: {mode: UNSET}\n    9001: {mode: DISABLE}")
    p = policy(make_mesh, yaml)
    assert p.mode == "STRICT"  # the workload policy is UNSET: the namespace's STRICT
    assert dict(p.ports) == {8080: "PERMISSIVE", 9000: "STRICT", 9001: "DISABLE"}  # UNSET port inherits
    assert [p.mode_for(port) for port in (8080, 9000, 9001, 8443)] == ["PERMISSIVE", "STRICT", "DISABLE", "STRICT"]


def test_port_level_comes_from_the_workload_policy_only(make_mesh: MakeMesh) -> None:
    # the oldest workload policy wins whole; the younger one's ports do not apply
    yaml = (peer_auth("PERMISSIVE", name="old", selector="app: web", created="2020-01-01T00:00:00Z")
            + peer_auth("PERMISSIVE", name="new", selector="app: web", ports="8080: {mode: STRICT}",
                        created="2025-01-01T00:00:00Z"))
    p = policy(make_mesh, yaml)
    assert (p.mode, dict(p.ports)) == ("PERMISSIVE", {})


LEGACY_MESH = """
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec:
  peers:
  - mtls:
---
"""


def legacy_policy(name: str, spec: str, namespace: str = "shop") -> str:
    return (f"apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n---\n")


@pytest.mark.parametrize(
    ("yaml", "mode", "ports"),
    [
        (LEGACY_MESH, "STRICT", {}),  # `- mtls:` (null) is STRICT in the legacy API
        (LEGACY_MESH + legacy_policy("default", "  peers:\n  - mtls: {mode: PERMISSIVE}"), "PERMISSIVE", {}),
        (LEGACY_MESH + legacy_policy("default", "  peers:\n  - mtls: {}\n  peerIsOptional: true"), "PERMISSIVE", {}),
        (LEGACY_MESH + legacy_policy("default", "  origins: []"), "DISABLE", {}),  # no peers: plaintext
        (LEGACY_MESH + legacy_policy("web-8080", "  targets:\n  - name: web\n    ports:\n    - number: 8080\n"
                                                 "  peers:\n  - mtls: {mode: PERMISSIVE}"),
         "STRICT", {8080: "PERMISSIVE"}),
        (legacy_policy("web", "  targets:\n  - name: web\n  peers:\n  - mtls: {}"), "STRICT", {}),
        (legacy_policy("other", "  targets:\n  - name: other\n  peers:\n  - mtls: {}"), "PERMISSIVE", {}),
    ],
    ids=["meshpolicy", "ns-permissive", "peer-optional", "no-peers", "target-port", "target", "other-target"],
)
def test_legacy_policy_peers(make_mesh: MakeMesh, yaml: str, mode: str, ports: dict[int, str]) -> None:
    p = policy(make_mesh, yaml)
    assert (p.mode, dict(p.ports)) == (mode, ports)


# -- the step ------------------------------------------------------------------------------------------

PEER = PeerIdentity(SpiffeId("cluster.local", "tutorial", "customer"), ())


def run(policy: PeerPolicy, *, port: int = 8080, peer: PeerIdentity | None = None,
        error: str | None = None, make_mesh: MakeMesh) -> tuple[object, PeerIdentity | None]:
    request = InboundRequest("GET", "/", "web", (), "http", "10.0.0.1", 5000, "10.0.0.2", port, peer)
    ctx = Context(make_mesh("").snapshot, peer, error)
    return peer_step(policy)(request, ctx), ctx.peer


@pytest.mark.parametrize(
    ("mode", "peer", "error", "denied", "recorded"),
    [
        ("STRICT", None, None, True, False),
        ("STRICT", PEER, None, False, True),
        ("STRICT", None, "bad chain", True, False),
        ("PERMISSIVE", None, None, False, False),
        ("PERMISSIVE", PEER, None, False, True),
        ("PERMISSIVE", None, "bad chain", True, False),  # a presented, invalid certificate is refused
        ("DISABLE", PEER, None, False, False),  # no mTLS: a certificate is not an identity
        ("DISABLE", None, "bad chain", False, False),
    ],
)
def test_step(make_mesh: MakeMesh, mode: str, peer: PeerIdentity | None, error: str | None,
              denied: bool, recorded: bool) -> None:
    verdict, kept = run(PeerPolicy(mode), peer=peer, error=error, make_mesh=make_mesh)  # type: ignore[arg-type]
    assert (verdict is PEER_DENIAL) is denied
    assert (kept is not None) is recorded


def test_step_uses_the_destination_port(make_mesh: MakeMesh) -> None:
    from types import MappingProxyType

    p = PeerPolicy("PERMISSIVE", MappingProxyType({8080: "STRICT"}))
    assert run(p, port=8080, make_mesh=make_mesh)[0] is PEER_DENIAL
    assert run(p, port=9090, make_mesh=make_mesh)[0] is None


def test_denial_is_istio_peer_authentication_failure() -> None:
    assert PEER_DENIAL.status == 401
    assert PEER_DENIAL.body == b"Peer authentication failed."
    assert ("connection", "close") in PEER_DENIAL.headers
