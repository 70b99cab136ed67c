"""The request-policy steps of the inbound pipeline: path normalization, then who the caller is
(JWT, the Istio 1.x origin rules), then what it may do (AuthorizationPolicy, the Mixer checks,
a CUSTOM authorizer last).

The engines are in ``paths``, ``authn``, ``authz``, ``extauthz`` and ``legacy``; this module
compiles them once per snapshot and strings them together. Three things need I/O and come
back to the driver as a ``Pending``: keys a token needs that are still being fetched (waited
for up to ``KEYS_WAIT`` seconds, then the token is judged with what there is: never a
fallback key), a Mixer ``providerUrl`` list on its first fetch (up to ``LIST_WAIT``), and the
call to a CUSTOM authorizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from pymesh.inbound.authn import NO_TOKEN, Authenticator, AuthnOutcome, Identity, KeysPending
from pymesh.inbound.authz import Authorizer, Decision
from pymesh.inbound.extauthz import ExtAuthz, ExtAuthzResult
from pymesh.inbound.legacy import LegacyEnforcer
from pymesh.inbound.lists import ProviderList
from pymesh.inbound.paths import Normalized, mode_of, normalize
from pymesh.inbound.request import Denial, InboundRequest, MemoReads

if TYPE_CHECKING:
    from pymesh.inbound.core import Context, Pending, Shared, Step
    from pymesh.snapshot.snapshot import Snapshot

__all__ = ["KEYS_WAIT", "LIST_WAIT", "paths_step", "policy_step"]

log = logging.getLogger("pymesh.inbound")

KEYS_WAIT = 5.0  # seconds a request waits for a JWKS fetch it needs (Istio's default fetch timeout)
LIST_WAIT = 5.0  # seconds a request waits for a Mixer list's first fetch
_KEYS_FAILED = Denial(401, b"Jwks remote fetch is failed", (("content-type", "text/plain"),))
_ESCAPED_SLASH = Denial(400, b"Bad Request", (("content-type", "text/plain"),))
_SEEN_SIZE = 1024  # normalized targets remembered per snapshot
_SEEN_LENGTH = 256  # longer targets are normalized every time, so the memory stays small


def paths_step(snapshot: Snapshot, shared: Shared) -> Step:
    """Normalize the path per MeshConfig ``pathNormalization``; every later step and the app see that path.

    An escaped slash or backslash (``%2F``, ``%5C``) that normalization keeps is refused with 400,
    as Envoy's ``REJECT_REQUEST`` does: Python frameworks route on the decoded path, so
    ``/admin%2Fusers`` would reach the app's ``/admin/users`` past a DENY on ``/admin/*``.
    ``DECODE_AND_MERGE_SLASHES`` decodes them instead, and policies judge the decoded path.
    """
    from pymesh.inbound.core import memoizable

    mode = mode_of(snapshot.mesh_config.path_normalization.normalization)
    # Normalization is a pure function of the raw target, and most traffic repeats a few
    # targets: remember the verdicts (bounded, short targets only; a new snapshot starts afresh).
    seen: dict[str, tuple[Normalized, str | None] | Denial] = {}

    def judge(raw_path: str) -> tuple[Normalized, str | None] | Denial:
        out = normalize(raw_path, mode)
        if isinstance(out, Denial):
            return out
        if out.escaped_slashes:
            return _ESCAPED_SLASH
        target = out.target
        return out, (target if target != raw_path else None)

    @memoizable
    def step(request: InboundRequest, ctx: Context) -> Denial | None:
        raw_path = request.raw_path
        verdict = seen.get(raw_path)
        if verdict is None:
            verdict = judge(raw_path)
            if len(raw_path) <= _SEEN_LENGTH:
                if len(seen) >= _SEEN_SIZE:
                    seen.clear()  # not an eviction loop: WSGI threads share this dict without a lock
                seen[raw_path] = verdict
        if isinstance(verdict, Denial):
            return verdict
        ctx.normalized, path = verdict
        if path is not None:
            ctx.path = path
        return None

    return step


def policy_step(snapshot: Snapshot, shared: Shared) -> Step | None:
    """Authentication and authorization for the snapshot's own workload; None when nothing applies."""
    from pymesh.inbound.core import Pending, memoizable

    mc = snapshot.mesh_config
    local = snapshot.local_policies
    authn = Authenticator([r.spec for r in local.request_authentication], shared.jwks)
    shared.jwks.retain(authn.caches)
    authz = Authorizer(local.authorization, providers=mc.extension_providers, trust_domain=snapshot.trust_domain,
                       trust_domain_aliases=mc.trust_domain_aliases)
    legacy = LegacyEnforcer(snapshot.legacy, snapshot.workload, snapshot.registry, trust_domain=snapshot.trust_domain,
                            lists=shared.lists)
    shared.lists.retain(legacy.lists.values())
    for warning in (*authz.warnings, *legacy.warnings):
        log.warning("pymesh: %s", warning)
    # Decided once here rather than per request: most workloads use one or two of the three.
    authn_on, legacy_on = authn.enabled, legacy.enabled
    if not (authn_on or authz.enabled or legacy_on):
        return None
    checkers: dict[str, ExtAuthz] = {}

    def ext(decision: Decision) -> ExtAuthz:
        custom = decision.custom
        assert custom is not None
        assert custom.provider is not None
        found = checkers.get(custom.name)
        if found is None:
            found = checkers[custom.name] = ExtAuthz(custom.provider, client=shared.client(),
                                                     async_client=shared.async_client())
        return found

    def step(request: InboundRequest, ctx: Context) -> Denial | Pending | None:
        norm = ctx.normalized or Normalized(*_split(request.raw_path))
        if not authn_on:
            return authorize(request, ctx, norm, NO_TOKEN)
        out = authn.authenticate(request, norm.path, norm.query)
        if isinstance(out, KeysPending):
            pending = out
            return Pending(run=lambda: pending.wait(KEYS_WAIT), arun=lambda: _wait_async(pending),
                           resume=lambda _: authorize(request, ctx, norm,
                                                      authn.authenticate(request, norm.path, norm.query, retry=False)))
        return authorize(request, ctx, norm, out)

    def authorize(request: InboundRequest, ctx: Context, norm: Normalized,
                  out: AuthnOutcome | Denial | KeysPending) -> Denial | Pending | None:
        if legacy_on:
            refused = legacy.origin(request, norm.path, out)
            if refused is not None:
                return refused
        if isinstance(out, Denial):
            ctx.replayable = False  # a 401 may not hold for long (a token not yet valid, keys on their way)
            return out
        if isinstance(out, KeysPending):
            return _KEYS_FAILED  # still no keys after the wait: refuse, never guess
        identity = out.identity
        drop = out.drop
        if drop:
            request.headers = (*[h for h in request.headers if h[0] not in drop], *out.set_headers)
            ctx.edit = (drop, out.set_headers)
        if identity is not None:
            if out.recheck is None:
                ctx.replayable = False
            ctx.recheck = out.recheck
            ctx.identity = identity
            ctx.request_principal = identity.principal
            ctx.claims = identity.claims
            ctx.anonymous_caller = out.caller
        decision = authz.check(request, norm.path, _principal_for(legacy, request, identity) if legacy_on else identity)
        if decision.audit:
            log.info("pymesh: AUDIT %s %s matched %s", request.method, norm.path, ", ".join(decision.audit))
        if not decision.allowed:
            return decision.denial
        if legacy_on:
            waiting = legacy.unready()
            if waiting:  # a providerUrl list still on its first fetch: wait for it, as Mixer loaded it first
                return Pending(run=lambda: _wait_lists(waiting), arun=lambda: asyncio.to_thread(_wait_lists, waiting),
                               resume=lambda _: mixer_then_custom(request, ctx, norm, identity, decision))
        return mixer_then_custom(request, ctx, norm, identity, decision)

    def mixer_then_custom(request: InboundRequest, ctx: Context, norm: Normalized, identity: Identity | None,
                          decision: Decision) -> Denial | Pending | None:
        if legacy_on:
            refused = legacy.mixer(request, norm.path, identity)
            if refused is not None:
                return refused
        if decision.custom is None:
            return None
        checker = ext(decision)
        return Pending(run=lambda: checker.check(request, norm.path, norm.query),
                       arun=lambda: checker.check_async(request, norm.path, norm.query),
                       resume=lambda result: _custom(request, ctx, result))

    # Without Mixer checks (lists that change, per-request state), the answer rests on the request
    # line, the peer, what authorization reads and the token headers: it may be remembered.
    reads = authz.memo_reads
    if not legacy_on and reads is not None:
        headers = reads.headers | authn.memo_headers if authn_on else reads.headers
        return memoizable(step, MemoReads(reads.addresses, headers))
    return step


def _principal_for(legacy: LegacyEnforcer, request: InboundRequest, identity: Identity | None) -> Identity | None:
    """What ``request.auth.*`` is for authorization: the token's, except under an Istio 1.x Policy with
    ``principalBinding: USE_PEER``, where the principal is the verified peer's (the claims stay the token's)."""
    peer = request.peer
    if peer is None or not legacy.enabled or not legacy.binds_peer(request.destination_port):
        return identity
    issuer, _, subject = peer.spiffe_id.principal.rpartition("/")
    if identity is None:
        return Identity(issuer, subject, {})
    return dataclasses.replace(identity, issuer=issuer, subject=subject)


def _custom(request: InboundRequest, ctx: Context, result: Any) -> Denial | None:
    assert isinstance(result, ExtAuthzResult)
    if not result.allowed:
        return result.denial
    if result.upstream_headers:
        names = {n for n, _ in result.upstream_headers}
        request.headers = (*(h for h in request.headers if h[0] not in names), *result.upstream_headers)
    if result.downstream_headers:
        ctx.response_headers = (*ctx.response_headers, *result.downstream_headers)
    return None


def _wait_lists(lists: list[ProviderList]) -> None:
    deadline = time.monotonic() + LIST_WAIT
    for item in lists:
        item.wait(max(0.0, deadline - time.monotonic()))


async def _wait_async(pending: KeysPending) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KEYS_WAIT):
            await pending.wait_async()


def _split(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query

