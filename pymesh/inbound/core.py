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

A step may declare that its answer depends only on the request line, the Host, the destination
port, the verified peer and what its :class:`MemoReads` names (the addresses, a few headers):
:func:`memoizable`. When every step does, :attr:`Compiled.verdicts` remembers each answer
under those values, so an adapter that can build that key (ASGI) answers a repeat request
without building an :class:`InboundRequest` or running a step. An answer that rests on a cached
JWT is replayed only while the token is in date and its key set unchanged
(``Context.recheck``); one that a step marks ``ctx.replayable = False`` (a 401) never is.
Steps that keep state or log per request (Mixer checks, CUSTOM, AUDIT) do not declare it.

Steps do no I/O. One that needs some (a JWKS fetch to wait for, a CUSTOM authorizer to ask)
returns a :class:`Pending`; ``Inbound.start`` runs the steps synchronously and stops there with
a :class:`Suspended`, which ``Inbound.handle`` (WSGI) resumes blocking and ``Inbound.ahandle``
(ASGI) after awaiting, giving the result back to the step. The two drivers are the same
three-line loop; every decision lives in the steps. The ASGI middleware calls ``start`` itself,
so a request that needs no I/O costs no extra coroutine.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx

from pymesh.inbound.authn import Identity
from pymesh.inbound.headers import IDENTITY_HEADERS, TrustedProxies, strip_identity_headers, xfcc_peer
from pymesh.inbound.jwks import JwksRegistry
from pymesh.inbound.lists import ListRegistry
from pymesh.inbound.paths import Normalized
from pymesh.inbound.peer import PeerPolicy, compose, peer_step
from pymesh.inbound.policy import paths_step, policy_step
from pymesh.inbound.request import ANONYMOUS, NO_CLAIMS, Caller, Denial, InboundRequest, MemoReads
from pymesh.inbound.trust import LocalIdentity, PeerVerifier
from pymesh.security.ca import MeshCA
from pymesh.security.identity import PeerIdentity, WorkloadCertificate
from pymesh.security.rotation import CertificateSource
from pymesh.security.verify import PeerVerificationError
from pymesh.snapshot.snapshot import Snapshot

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

__all__ = ["STEP_FACTORIES", "Compiled", "Context", "Inbound", "MemoReads", "Pending", "Shared", "Step",
           "StepFactory", "Suspended", "Verdict", "VerdictMemo", "compile_inbound", "memoizable", "peer_policy"]

log = logging.getLogger("pymesh.inbound")
_AMBIGUOUS_HOST = Denial(400, b"Bad Request", (("content-type", "text/plain"),))
_NOTHING_MORE = MemoReads()
_VERDICTS_SIZE = 1024  # remembered answers per snapshot; cleared when full, like the path memo
_REST = 16 * _VERDICTS_SIZE  # requests a memo that did not pay for itself sits out


class Context:
    """Per-request state the steps share; the adapters read it once the steps are done.

    A plain slotted class rather than a dataclass: one is built per request, and this
    ``__init__`` is several times cheaper than a dataclass's with a ``default_factory``.
    """

    __slots__ = ("anonymous_caller", "caller", "claims", "edit", "identity", "normalized", "path", "peer",
                 "peer_error", "recheck", "replayable", "request_principal", "response_headers", "snapshot")

    def __init__(self, snapshot: Snapshot, peer: PeerIdentity | None, peer_error: str | None = None) -> None:
        self.snapshot = snapshot
        self.peer = peer  # the verified peer; the peer step clears it under DISABLE
        self.peer_error = peer_error  # a certificate was presented and failed verification
        self.path: str | None = None  # the normalized path (with "?query") to hand the app; None: unchanged
        self.request_principal: str | None = None  # "iss/sub" of a verified JWT
        self.claims: Mapping[str, Any] = NO_CLAIMS
        self.caller: Caller | None = None  # set when every step let the request through
        self.normalized: Normalized | None = None  # the path and query policies judge (the paths step)
        self.identity: Identity | None = None  # the verified JWT
        self.response_headers: tuple[tuple[str, str], ...] = ()  # for the app's response (a CUSTOM authorizer's)
        self.anonymous_caller: Caller = ANONYMOUS  # the Caller without a peer, prebuilt with a cached token
        # For the verdict memo (Compiled.remember): whether this answer may be replayed, while what stays
        # true, and the header change that made request.headers (names dropped, pairs added).
        self.replayable = True
        self.recheck: Callable[[], bool] | None = None
        self.edit: tuple[frozenset[str], tuple[tuple[str, str], ...]] | None = None

    def make_caller(self) -> Caller:
        peer = self.peer
        if peer is None:
            if self.request_principal is None and not self.claims:
                return ANONYMOUS
            hint = self.anonymous_caller
            if hint.request_principal == self.request_principal and hint.claims is self.claims:
                return hint
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


@dataclass(frozen=True, slots=True)
class Suspended:
    """The pipeline stopped at a step's :class:`Pending`: do its I/O, then ``resume`` with the result."""

    pending: Pending
    steps: tuple[Step, ...]
    index: int  # of the step that asked
    request: InboundRequest
    ctx: Context

    def resume(self, result: Any) -> Context | Denial | Suspended:
        out = self.pending.resume(result)
        if isinstance(out, Pending):
            return Suspended(out, self.steps, self.index, self.request, self.ctx)
        if out is not None:
            return out
        return _run(self.steps, self.index + 1, self.request, self.ctx)


def _run(steps: tuple[Step, ...], start: int, request: InboundRequest, ctx: Context) -> Context | Denial | Suspended:
    """Run ``steps[start:]`` until one answers; the Context (``caller`` set) when none does."""
    for index in range(start, len(steps)):
        out = steps[index](request, ctx)
        if out is not None:
            return Suspended(out, steps, index, request, ctx) if isinstance(out, Pending) else out
    ctx.caller = ctx.make_caller()
    return ctx


class _Clients:
    """The mesh clients a CUSTOM authorizer is called with, made on first use."""

    __slots__ = ("async_", "sync")

    def __init__(self) -> None:
        self.sync: httpx.Client | None = None
        self.async_: httpx.AsyncClient | None = None


class Shared:
    """What outlives a snapshot for one middleware: JWKS caches, the clients a CUSTOM authorizer is
    called with (through the mesh, so its traffic is routed like any other).

    All of it ends with the mesh (``Mesh.close``), or when the middleware is garbage collected.
    """

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.jwks = JwksRegistry()
        self.lists = ListRegistry()
        self._clients = _Clients()
        self._lock = threading.Lock()
        mesh.on_close(self.close)
        # Not a method of self: a finalizer that referred to this object would keep it alive.
        self._finalizer = weakref.finalize(self, _release, self.jwks, self.lists, self._clients)

    def client(self) -> httpx.Client:
        with self._lock:
            if self._clients.sync is None:
                self._clients.sync = self.mesh.client()
            return self._clients.sync

    def async_client(self) -> httpx.AsyncClient:
        with self._lock:
            if self._clients.async_ is None:
                self._clients.async_ = self.mesh.async_client()
            return self._clients.async_

    def close(self) -> None:
        self._finalizer()  # runs _release once, whichever comes first


def _release(jwks: JwksRegistry, lists: ListRegistry, clients: _Clients) -> None:
    jwks.close()
    lists.close()
    sync, clients.sync = clients.sync, None
    if sync is not None:
        sync.close()
    # An async client can only be closed on its loop; dropping it lets its connections go.
    clients.async_ = None


def memoizable(step: Step, reads: MemoReads = _NOTHING_MORE) -> Step:
    """Declare that ``step`` answers from the method, target, Host, destination port, verified peer
    and ``reads`` alone, changing nothing else than ``ctx.edit`` describes: its answers may be
    remembered per snapshot (see :attr:`Compiled.verdicts`)."""
    setattr(step, "memo_reads", reads)  # noqa: B010 (closures and instances alike)
    return step


class Verdict:
    """A remembered answer: the Denial, or the app's Caller and what to change before it runs.

    A plain slotted class: one is built per memo miss, and a frozen dataclass's ``__init__``
    costs several times as much. Treat it as immutable.
    """

    __slots__ = ("add", "caller", "denial", "drop", "edits_headers", "path", "recheck")

    def __init__(self, denial: Denial | None, caller: Caller | None, path: str | None = None,
                 drop: frozenset[bytes] = frozenset(), add: tuple[tuple[bytes, bytes], ...] = (),
                 recheck: Callable[[], bool] | None = None) -> None:
        self.denial = denial
        self.caller = caller
        self.path = path  # the normalized target to hand the app; None: unchanged
        self.drop = drop  # header names the app does not receive
        self.add = add  # and those it receives on top
        self.recheck = recheck  # False: stale (a token expired, its keys rotated)
        self.edits_headers = bool(drop or add)  # read per replay


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


class VerdictMemo:
    """The remembered answers of one snapshot (at most ``_VERDICTS_SIZE``), with a brake.

    Looking up and storing costs a request the memo cannot help about 2 µs. When a whole fill
    of the memo saw fewer hits than half its size, traffic is not repeating (unique ids in
    paths or queries): the memo rests for the next ``_REST`` requests, then tries again.
    """

    __slots__ = ("_answers", "_hits", "_resting")

    def __init__(self) -> None:
        self._answers: dict[Any, Verdict] = {}
        self._hits = 0
        self._resting = 0  # requests left to pass without looking

    def active(self) -> bool:
        resting = self._resting
        if resting > 0:  # threads may race here: the count may end a little off, never below zero for long
            self._resting = resting - 1
            return False
        return True

    def get(self, key: Any) -> Verdict | None:
        verdict = self._answers.get(key)
        if verdict is not None:
            self._hits += 1
        return verdict

    def __setitem__(self, key: Any, verdict: Verdict) -> None:
        answers = self._answers
        if len(answers) >= _VERDICTS_SIZE:
            if self._hits < _VERDICTS_SIZE // 2:
                self._resting = _REST
            self._hits = 0
            answers.clear()  # not an eviction loop: threads share this dict without a lock
        answers[key] = verdict

    def __getitem__(self, key: Any) -> Verdict:
        return self._answers[key]

    def __len__(self) -> int:
        return len(self._answers)

    def items(self) -> Iterable[tuple[Any, Verdict]]:
        return list(self._answers.items())


@dataclass(frozen=True, slots=True)
class Compiled:
    """The pipeline for one snapshot's own workload.

    ``verdicts`` is None unless every step is :func:`memoizable`; the key is the adapter's and must
    hold what ``reads`` names (the union of the steps').
    """

    snapshot: Snapshot
    peer: PeerPolicy
    steps: tuple[Step, ...]
    names: tuple[str, ...]
    verdicts: VerdictMemo | None = None
    reads: MemoReads = _NOTHING_MORE
    keyed_headers: frozenset[bytes] = frozenset()  # reads.headers as the ASGI byte names

    def remember(self, key: Any, request: InboundRequest, ctx: Context, out: Context | Denial | Suspended) -> None:
        """Keep the answer ``out`` for ``request`` under ``key``, if it is one to replay."""
        verdicts = self.verdicts
        if verdicts is None or not ctx.replayable or isinstance(out, Suspended) or ctx.response_headers:
            return
        if request.headers_changed and ctx.edit is None:
            return  # a change no step described: hand it over once, never replay it
        if isinstance(out, Denial):
            verdict = Verdict(out, None, recheck=ctx.recheck)
        elif ctx.edit is None:
            verdict = Verdict(None, out.caller, out.path, recheck=ctx.recheck)
        else:
            drop, add = ctx.edit
            try:
                names = frozenset([n.encode("latin-1") for n in drop])
                pairs = tuple([(k.encode("latin-1"), v.encode("latin-1")) for k, v in add])
            except UnicodeEncodeError:
                return  # the full pipeline fails the same way every time
            verdict = Verdict(None, out.caller, out.path, names, pairs, ctx.recheck)
        verdicts[key] = verdict


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
    declared: list[MemoReads | None] = [getattr(step, "memo_reads", None) for step in steps]
    reads = [r for r in declared if r is not None]
    if len(reads) < len(declared) or not all(n.isascii() for r in reads for n in r.headers):
        return Compiled(snapshot, peer_policy(snapshot), tuple(steps), tuple(names))
    union = MemoReads(any(r.addresses for r in reads), frozenset().union(*(r.headers for r in reads)))
    return Compiled(snapshot, peer_policy(snapshot), tuple(steps), tuple(names), VerdictMemo(), union,
                    frozenset(n.encode("ascii") for n in union.headers))


class Inbound:
    """What ASGI and WSGI middleware share: mesh, identity, trusted proxies, compiled pipeline."""

    __slots__ = ("_compile_lock", "_compiled", "factories", "identity", "mesh", "proxied", "proxies", "shared",
                 "verifier")

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
        self.proxied = bool(self.proxies)  # read per request: most middlewares trust no proxy
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

    def start(self, request: InboundRequest, peer_error: str | None = None,
              compiled: Compiled | None = None, key: Any = None) -> Context | Denial | Suspended:
        """Run the pipeline up to its first I/O: the Context to go on, the Denial to answer, or
        a :class:`Suspended` to drive. Without I/O (the common case) no coroutine is involved.
        ``compiled``: the pipeline the caller already read (:meth:`compiled`), so both agree;
        ``key``: remember the answer under it (:meth:`Compiled.remember`)."""
        if compiled is None:
            compiled = self.compiled()
        if "," in request.host:
            # Two Host headers (joined by the server, or by the ASGI adapter): which one would the
            # app read? RFC 9112 answers 400, and policies never judge an ambiguous host.
            return _AMBIGUOUS_HOST
        if self.proxied and self.proxies.trusts(request.source_ip, request.peer):
            if request.peer is None and peer_error is None:
                request.peer = xfcc_peer(request.header_values("x-forwarded-client-cert"))
        elif request.has_any(IDENTITY_HEADERS):
            request.headers = strip_identity_headers(request.headers)
        ctx = Context(compiled.snapshot, request.peer, peer_error)
        out = _run(compiled.steps, 0, request, ctx)
        if key is not None:
            compiled.remember(key, request, ctx, out)
        return out

    def handle(self, request: InboundRequest, peer_error: str | None = None) -> Context | Denial:
        """Run the pipeline, blocking for any I/O a step needs (WSGI); the Context (with ``caller``
        set) to go on, or the Denial to answer."""
        out = self.start(request, peer_error)
        while isinstance(out, Suspended):
            out = out.resume(out.pending.run())
        return out

    async def ahandle(self, request: InboundRequest, peer_error: str | None = None) -> Context | Denial:
        """The same, awaiting the I/O (ASGI). Only the waiting differs from ``handle``."""
        out = self.start(request, peer_error)
        while isinstance(out, Suspended):
            out = out.resume(await out.pending.arun())
        return out
