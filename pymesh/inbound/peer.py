"""PeerAuthentication: which connections a workload accepts, composed once per snapshot.

Composition follows istiod's ``ComposePeerAuthentication`` (pilot/pkg/model/authentication.go):
of the policies that select the workload, the oldest at each level wins (mesh = root
namespace without selector, namespace = no selector, workload = selector); the mode is the
workload's if set, else the namespace's, else the mesh's, else PERMISSIVE. ``portLevelMtls``
comes from the workload-level policy only; an UNSET port entry takes the workload's
effective mode. The Istio 1.x ``Policy``/``MeshPolicy`` ``peers`` arrive here already
translated into PeerAuthentication resources (:mod:`pymesh.snapshot.legacy`), so one engine
enforces both.

At request time the decision is a dict lookup on the destination port:

- STRICT: a verified client certificate is required; without one the request is refused.
- PERMISSIVE: plaintext and mTLS are both accepted; the identity is recorded when present.
- DISABLE: the mesh does no mTLS; a certificate the server happened to verify is not an
  identity (Envoy would not have terminated that TLS), so none is recorded.

In every mode but DISABLE, a certificate that was presented and fails verification is
refused: Envoy's listener fails that handshake even under PERMISSIVE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from pymesh.config.resource import Resource
from pymesh.config.security import MtlsMode, PeerAuthentication
from pymesh.inbound.request import Denial, InboundRequest, MemoReads

if TYPE_CHECKING:
    from pymesh.inbound.core import Context

__all__ = ["PEER_DENIAL", "Mode", "PeerPolicy", "compose", "peer_step"]

Mode = Literal["DISABLE", "PERMISSIVE", "STRICT"]
_STRICTNESS: dict[str, int] = {"DISABLE": 0, "PERMISSIVE": 1, "STRICT": 2}

# istio/proxy's authn filter answered a failed peer check with this 401 (Istio 1.x). A sidecar
# under STRICT resets the TCP connection instead; middleware runs after the server accepted the
# request, so it answers this and asks the server to close the connection.
PEER_DENIAL: Final = Denial(
    401,
    b"Peer authentication failed.",
    (("content-type", "text/plain"), ("connection", "close")),
)


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """The effective mTLS mode of one workload, with its port-level overrides resolved."""

    mode: Mode = "PERMISSIVE"
    ports: Mapping[int, Mode] = field(default_factory=lambda: MappingProxyType({}))
    decided_by: tuple[str, ...] = ()  # "namespace/name" of the policies that contributed, widest first

    def mode_for(self, port: int) -> Mode:
        """The mode for a request that arrived on workload port ``port``."""
        return self.ports.get(port, self.mode)

    @property
    def modes(self) -> frozenset[Mode]:
        return frozenset((self.mode, *self.ports.values()))


def _level(res: Resource[Any], root: str) -> int:
    spec: PeerAuthentication = res.spec
    if spec.selector is not None and spec.selector.match_labels:
        return 2  # workload
    return 0 if res.namespace == root else 1


def _set(mode: MtlsMode) -> Mode | None:
    return None if mode == "UNSET" else mode


def compose(policies: Iterable[Resource[Any]], root_namespace: str) -> PeerPolicy:
    """The effective policy from the PeerAuthentications that select one workload."""
    winners: dict[int, Resource[Any]] = {}
    for res in policies:
        spec: PeerAuthentication = res.spec
        if res.namespace == root_namespace and spec.selector is not None and spec.selector.match_labels:
            continue  # istiod ignores a root-namespace PeerAuthentication with a selector
        level = _level(res, root_namespace)
        if level not in winners or res.age < winners[level].age:
            winners[level] = res
    mode: Mode = "PERMISSIVE"
    for level in (0, 1, 2):
        if level in winners:
            mode = _set(winners[level].spec.mode) or mode
    ports: dict[int, Mode] = {}
    if 2 in winners:
        for port, mtls in winners[2].spec.port_level_mtls.items():
            ports[port] = _set(mtls.mode) or mode
    decided = tuple(f"{winners[lv].namespace}/{winners[lv].name}" for lv in (0, 1, 2) if lv in winners)
    return PeerPolicy(mode, MappingProxyType(ports), decided)


def peer_step(policy: PeerPolicy) -> _PeerStep:
    return _PeerStep(policy)


class _PeerStep:
    """The pipeline step: admit or refuse the connection's peer, and record its identity."""

    __slots__ = ("_mode", "_ports")
    memo_reads: ClassVar[MemoReads] = MemoReads()  # the port and the peer only (core.memoizable)

    def __init__(self, policy: PeerPolicy) -> None:
        self._mode: Mode = policy.mode
        self._ports = dict(policy.ports)

    def __call__(self, request: InboundRequest, ctx: Context) -> Denial | None:
        if not self._ports:
            mode = self._mode
        elif request.port_known:
            mode = self._ports.get(request.destination_port, self._mode)
        else:  # a client-chosen port must not pick a weaker mode: the strictest of them all applies
            mode = max((self._mode, *self._ports.values()), key=_STRICTNESS.__getitem__)
        if mode == "DISABLE":
            ctx.peer = None
            request.peer = None  # nothing downstream (authorization, legacy bindings) may count it
            return None
        if ctx.peer_error is not None:
            return PEER_DENIAL
        if mode == "STRICT" and ctx.peer is None:
            return PEER_DENIAL
        return None

    def __repr__(self) -> str:
        return f"peer_step(mode={self._mode}, ports={self._ports})"
