"""The inbound pipeline, framework-neutral: what both middlewares run for every request.

The order, top to bottom (DESIGN.md, "The way a request travels"):

1. identity headers      stripped on arrival unless a trusted proxy sent them, so no later
                         step (and not the app) reads a client's own claim about itself
2. peer authentication   the PeerAuthentication mode for the destination port decides whether
                         a verified client certificate is required, and whether it counts
3. path normalization    before anything matches a path, so every policy and the app judge
                         the same path (``policy.paths_step``)
4. request authn (JWT)   after the peer step, so a refused connection costs no token
                         verification; then the Istio 1.x origin rules (``policy.policy_step``)
5. authorization         last, with the peer and request principals known: DENY, ALLOW and
                         AUDIT policies, the Mixer list checks, then a CUSTOM authorizer
6. the app               with a frozen :class:`~pymesh.inbound.request.Caller` in
                         ``scope["pymesh"]`` / ``environ["pymesh"]``

Steps 2-5 are :data:`Step` callables compiled once per (snapshot, workload) by the
factories in :data:`STEP_FACTORIES`; a factory returns None when nothing applies, so a
feature that is not configured costs nothing. The compiled pipeline is cached by snapshot
identity: ``mesh.reload()`` takes effect on the next request.

Steps do no I/O. One that needs some (a JWKS fetch to wait for, a CUSTOM authorizer to ask)
returns a :class:`Pending`; ``Inbound.handle`` (WSGI) runs it blocking, ``Inbound.ahandle``
(ASGI) awaits it, and both give its result back to the step. The two drivers are the same
five-line loop; every decision lives in the steps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx

from pymesh.inbound.authn import Identity
from pymesh.inbound.headers import TrustedProxies, strip_identity_headers, xfcc_peer
from pymesh.inbound.jwks import JwksRegistry
from pymesh.inbound.lists import ListRegistry
from pymesh.inbound.paths import Normalized
from pymesh.inbound.peer import PeerPolicy, compose, peer_step
from pymesh.inbound.policy import paths_step, policy_step
from pymesh.inbound.request import ANONYMOUS, NO_CLAIMS, Caller, Denial, InboundRequest
from pymesh.inbound.trust import LocalIdentity, PeerVerifier
from pymesh.security.ca import MeshCA
from pymesh.security.identity import PeerIdentity, WorkloadCertificate
from pymesh.security.rotation import CertificateSource
from pymesh.security.verify import PeerVerificationError
from pymesh.snapshot.snapshot import Snapshot

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

__all__ = ["STEP_FACTORIES", "Compiled", "Context", "Inbound", "Pending", "Shared", "Step", "StepFactory",
           "compile_inbound", "peer_policy"]

log = logging.getLogger("pymesh.inbound")


@dataclass(slots=True)
class Context:
    """Per-request state the steps share; the adapters read it once the steps are done."""

    snapshot: Snapshot
    peer: PeerIdentity | None  # the verified peer; the peer step clears it under DISABLE
    peer_error: str | None = None  # a certificate was presented and failed verification
    path: str | None = None  # the normalized path (with "?query") to hand the app; None: raw_path unchanged
    request_principal: str | None = None  # "iss/sub" of a verified JWT
    claims: Mapping[str, Any] = field(default_factory=lambda: NO_CLAIMS)
    caller: Caller | None = None  # set when every step let the request through
    normalized: Normalized | None = None  # the path and query policies judge (the paths step)
    identity: Identity | None = None  # the verified JWT
    response_headers: tuple[tuple[str, str], ...] = ()  # for the app's response (a CUSTOM authorizer's)

    def make_caller(self) -> Caller:
        peer = self.peer
        if peer is None:
            if self.request_principal is None and not self.claims:
                return ANONYMOUS
            return Caller(None, None, None, self.request_principal, self.claims)
        sid = peer.spiffe_id
        return Caller(sid.principal, sid.uri, sid.namespace, self.request_principal, self.claims)


@dataclass(frozen=True, slots=True)
class Pending:
    """I/O a step needs before it can answer: the sync driver calls ``run()``, the async one
    awaits ``arun()``; the result goes to ``resume``, whose answer is the step's."""

    run: Callable[[], Any]
    arun: Callable[[], Awaitable[Any]]
    resume: Callable[[Any], Denial | Pending | None]


Step: TypeAlias = Callable[[InboundRequest, Context], "Denial | Pending | None"]
"""One pipeline step: ``None`` lets the request go on, a ``Denial`` answers it locally, a
``Pending`` asks the driver for I/O first. A step may replace ``request.headers`` (the app
receives the final tuple) or set ``ctx.path``; it never does I/O itself."""


class Shared:
    """What outlives a snapshot for one middleware: JWKS caches, the clients a CUSTOM authorizer is
    called with (through the mesh, so its traffic is routed like any other)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.jwks = JwksRegistry()
        self.lists = ListRegistry()
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = self.mesh.client()
            return self._client

    def async_client(self) -> httpx.AsyncClient:
        with self._lock:
            if self._async_client is None:
                self._async_client = self.mesh.async_client()
            return self._async_client

    def close(self) -> None:
        self.jwks.close()
        self.lists.close()
        if self._client is not None:
            self._client.close()


StepFactory: TypeAlias = Callable[[Snapshot, Shared], Step | None]
"""Compiles one step for a snapshot's own workload (``snapshot.local_policies``); None when
nothing applies."""


def peer_policy(snapshot: Snapshot) -> PeerPolicy:
    """The PeerAuthentication in force for the snapshot's own workload."""
    return compose(snapshot.local_policies.peer_authentication, snapshot.mesh_config.root_namespace)


def _peer_factory(snapshot: Snapshot, shared: Shared) -> Step | None:
    return peer_step(peer_policy(snapshot))


# The steps after the header stripping, in order.
STEP_FACTORIES: tuple[tuple[str, StepFactory], ...] = (
    ("peer", _peer_factory),  # first: a refused connection reaches no other step
    ("paths", paths_step),
    ("policy", policy_step),  # JWT and origins, then authorization, Mixer checks, CUSTOM
)


@dataclass(frozen=True, slots=True)
class Compiled:
    """The pipeline for one snapshot's own workload."""

    snapshot: Snapshot
    peer: PeerPolicy
    steps: tuple[Step, ...]
    names: tuple[str, ...]


def compile_inbound(
    snapshot: Snapshot, shared: Shared, factories: Iterable[tuple[str, StepFactory]] = STEP_FACTORIES
) -> Compiled:
    steps: list[Step] = []
    names: list[str] = []
    for name, factory in factories:
        step = factory(snapshot, shared)
        if step is not None:
            steps.append(step)
            names.append(name)
    return Compiled(snapshot, peer_policy(snapshot), tuple(steps), tuple(names))


class Inbound:
    """What ASGI and WSGI middleware share: mesh, identity, trusted proxies, compiled pipeline."""

    __slots__ = ("_compile_lock", "_compiled", "factories", "identity", "mesh", "proxies", "shared", "verifier")

    def __init__(
        self,
        mesh: Mesh,
        *,
        certificate: WorkloadCertificate | CertificateSource | None = None,
        ca: MeshCA | None = None,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.mesh = mesh
        self.identity = LocalIdentity(mesh, certificate=certificate, ca=ca)
        self.verifier = PeerVerifier(mesh, self.identity)
        self.proxies = TrustedProxies(trusted_proxies)
        self.factories: tuple[tuple[str, StepFactory], ...] = STEP_FACTORIES  # read at each compile
        self.shared = Shared(mesh)
        self._compiled: Compiled | None = None
        self._compile_lock = threading.Lock()

    def compiled(self) -> Compiled:
        compiled = self._compiled
        if compiled is not None and compiled.snapshot is self.mesh.snapshot:
            return compiled
        with self._compile_lock:  # one compile at a time, always of the newest snapshot: a late compile
            snapshot = self.mesh.snapshot  # of an older one would close the caches the newer one uses
            compiled = self._compiled
            if compiled is not None and compiled.snapshot is snapshot:
                return compiled
            compiled = self._compiled = compile_inbound(snapshot, self.shared, self.factories)
            if "STRICT" in compiled.peer.modes and not self.verifier.enabled:
                log.warning("pymesh: PeerAuthentication STRICT applies to %r but it has no certificate "
                            "(cert_dir or a CA); every request will be refused", snapshot.workload)
        return compiled

    def verify(self, chain_der: tuple[bytes, ...]) -> tuple[PeerIdentity | None, str | None]:
        """(peer, None) for a chain that verifies, (None, reason) otherwise; (None, None) without a chain
        or when this workload has no mTLS identity to verify against."""
        if not chain_der or not self.verifier.enabled:
            return None, None
        try:
            return self.verifier.verify(chain_der), None
        except PeerVerificationError as exc:
            log.info("pymesh: peer certificate refused: %s", exc.reason)
            return None, exc.reason

    def handle(self, request: InboundRequest, peer_error: str | None = None) -> Context | Denial:
        """Run the pipeline, blocking for any I/O a step needs (WSGI); the Context (with ``caller``
        set) to go on, or the Denial to answer."""
        compiled, ctx = self._begin(request, peer_error)
        for step in compiled.steps:
            out = step(request, ctx)
            while isinstance(out, Pending):
                out = out.resume(out.run())
            if out is not None:
                return out
        ctx.caller = ctx.make_caller()
        return ctx

    async def ahandle(self, request: InboundRequest, peer_error: str | None = None) -> Context | Denial:
        """The same, awaiting the I/O (ASGI). Only the waiting differs from ``handle``."""
        compiled, ctx = self._begin(request, peer_error)
        for step in compiled.steps:
            out = step(request, ctx)
            while isinstance(out, Pending):
                out = out.resume(await out.arun())
            if out is not None:
                return out
        ctx.caller = ctx.make_caller()
        return ctx

    def _begin(self, request: InboundRequest, peer_error: str | None) -> tuple[Compiled, Context]:
        compiled = self.compiled()
        if self.proxies and self.proxies.trusts(request.source_ip, request.peer):
            if request.peer is None and peer_error is None:
                request.peer = xfcc_peer(request.header_values("x-forwarded-client-cert"))
        else:
            request.headers = strip_identity_headers(request.headers)
        return compiled, Context(compiled.snapshot, request.peer, peer_error)
