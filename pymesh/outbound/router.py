"""Routing: from a request to a decision, with no I/O.

A ``Router`` belongs to one snapshot. It compiles each virtual host's http routes the
first time a request needs them (matchers, cumulative weight tables, header
operations, delegates merged into their root routes) and keeps them; a reload builds a
new router beside the new snapshot. ``decide`` is a dict lookup for the host, the
ordered match of the first route that applies, and a weighted pick.

Outcomes, as a sidecar would answer:
- a VirtualService owns the host: first matching route wins; none matches -> 404 NR;
- a service without a VirtualService: its default route;
- an unknown host: passed through under ALLOW_ANY, 502 under REGISTRY_ONLY.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pymesh.config.hosts import candidates, fqdn
from pymesh.config.resource import Resource
from pymesh.outbound.match import CATCH_ALL, CompiledMatch, applies_to, compile_match
from pymesh.outbound.request import RequestInfo
from pymesh.outbound.resilience.fault import FaultPolicy
from pymesh.outbound.resilience.retry import NO_RETRY, RetryPolicy
from pymesh.outbound.shaping import NO_OPS, HeaderOps, RegexRewrite, compile_headers, redirect_location, rewrite_path
from pymesh.snapshot.clusters import Cluster
from pymesh.snapshot.registry import Service
from pymesh.snapshot.snapshot import Snapshot

__all__ = ["CompiledRoute", "LocalReply", "Outcome", "Router", "Target"]

_MAX_AUTHORITIES = 10_000  # bound on the per-router cache of resolved request hosts


@dataclass(frozen=True, slots=True)
class Target:
    """One weighted destination of a route, with the header operations that go with it."""

    host: str  # FQDN
    subset: str
    port: int | None  # the destination port; None: the request's, or the service's only port
    weight: int
    request_ops: HeaderOps = NO_OPS
    response_ops: HeaderOps = NO_OPS


@dataclass(frozen=True, slots=True)
class Mirror:
    host: str
    subset: str
    port: int | None
    percentage: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledRoute:
    virtual_service: Resource[Any] | None  # None: the default route of a service with no VirtualService
    index: int
    name: str
    matches: tuple[CompiledMatch, ...]  # empty: every request
    targets: tuple[Target, ...] = ()
    cumulative: tuple[int, ...] = ()
    redirect: Any = None
    direct_response: Any = None
    rewrite_uri: str = ""
    rewrite_authority: str = ""
    regex_rewrite: RegexRewrite | None = None
    request_ops: HeaderOps = NO_OPS  # route level, for local replies
    response_ops: HeaderOps = NO_OPS
    mirrors: tuple[Mirror, ...] = ()
    timeout: float | None = None
    retries: Any = None
    fault: Any = None
    cors: Any = None
    retry_policy: RetryPolicy = NO_RETRY
    fault_policy: FaultPolicy | None = None

    blocks: tuple[CompiledMatch, ...] = field(init=False, repr=False, compare=False)  # matches, or CATCH_ALL
    total: int = field(init=False, repr=False, compare=False)  # the weight sum the pick draws within
    rewrites: bool = field(init=False, repr=False, compare=False)  # the path may change on the way up

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", self.matches or (CATCH_ALL,))
        object.__setattr__(self, "total", self.cumulative[-1] if self.cumulative else 0)
        object.__setattr__(self, "rewrites", bool(self.rewrite_uri) or self.regex_rewrite is not None)

    def matching(self, info: RequestInfo) -> CompiledMatch | None:
        for m in self.blocks:
            if m.test(info):
                return m
        return None

    def pick(self, rng: random.Random) -> Target:
        targets = self.targets
        if len(targets) == 1:
            return targets[0]
        return targets[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response the mesh gives itself, as Envoy's local replies."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    flags: str = ""  # Envoy response flags, e.g. "NR"
    reason: str = ""


@dataclass(slots=True, kw_only=True)
class Outcome:
    """What to do with a request. Read-only: a forward without rewrites is one record, prebuilt per
    (match, target, port) and shared by every request that takes it (a plain slotted record, not a
    frozen one: local replies are built per request, and frozen dataclasses cost ~2 µs more to build)."""

    kind: Literal["forward", "passthrough", "local"]
    host: str  # FQDN (or the host as given, for pass-through)
    port: int  # the service port the request goes to
    route: CompiledRoute | None = None
    match: CompiledMatch | None = None
    target: Target | None = None
    cluster: Cluster | None = None
    path: str | None = None  # after rewrites; None: the request's own path, unchanged
    authority: str | None = None  # a rewritten Host, or None to keep the caller's
    local: LocalReply | None = None


@dataclass(frozen=True, slots=True)
class _Host:
    """What a request host resolved to, cached per host as written by callers."""

    fqdn: str
    routes: tuple[CompiledRoute, ...] | None  # None: no VirtualService owns the host
    service: Service | None


@dataclass(slots=True)
class Router:
    snapshot: Snapshot
    _hosts: dict[str, _Host] = field(default_factory=dict)
    _compiled: dict[int, tuple[CompiledRoute, ...]] = field(default_factory=dict)
    # (id of a target, request port, id of the match) -> the forward; targets live as long as this router
    _forwards: dict[tuple[int, int, int], Outcome] = field(default_factory=dict)

    # -- resolution ------------------------------------------------------------------

    def resolve(self, host: str, port: int | None = None) -> _Host:
        """What ``host`` resolves to (the port does not change it: routes match on ports themselves)."""
        found = self._hosts.get(host)
        if found is None:
            found = self._resolve(host)
            if len(self._hosts) >= _MAX_AUTHORITIES:
                self._hosts.clear()
            self._hosts[host] = found
        return found

    def _resolve(self, host: str) -> _Host:
        snap = self.snapshot
        ns = snap.workload.namespace
        vh = snap.routes.resolve(host, ns)
        svc = snap.registry.resolve(host, ns)
        if vh is not None:
            name = vh.host if not vh.host.startswith("*") else candidates(host, ns)[0]
            return _Host(name, self._routes_for(vh.service), svc)
        if svc is not None:
            name = svc.host if not svc.host.startswith("*") else host
            default = CompiledRoute(virtual_service=None, index=0, name="default", matches=(),
                                    targets=(Target(name, "", None, 1),), cumulative=(1,),
                                    retry_policy=RetryPolicy.compile(None, snap.mesh_config.default_http_retry_policy))
            return _Host(name, (default,), svc)
        return _Host(host, None, None)

    def _routes_for(self, vs: Resource[Any]) -> tuple[CompiledRoute, ...]:
        compiled = self._compiled.get(id(vs))
        if compiled is None:
            compiled = self._compiled[id(vs)] = tuple(_compile_vs(vs, self.snapshot))
        return compiled

    # -- decision ----------------------------------------------------------------------

    def decide(self, info: RequestInfo, rng: random.Random) -> Outcome:
        resolved = self._hosts.get(info.host) or self.resolve(info.host)
        port = info.port
        if port is None:
            port = 443 if info.scheme == "https" else 80
        routes = resolved.routes
        if routes is None:
            if self.snapshot.mesh_config.outbound_traffic_policy.mode == "REGISTRY_ONLY":
                return _local(resolved.fqdn, port, 502, b"", "NR", "host is outside the mesh registry (REGISTRY_ONLY)")
            return Outcome(kind="passthrough", host=info.host, port=port, path=info.path)
        for route in routes:
            for match in route.blocks:
                if match.test(info):
                    if route.redirect is None and route.direct_response is None and route.targets:
                        return self._forward(route, match, info, resolved, port, rng)
                    return self._act(route, match, info, resolved, port)
        return _local(resolved.fqdn, port, 404, b"", "NR", "no route matched")

    def _forward(
        self, route: CompiledRoute, match: CompiledMatch, info: RequestInfo, resolved: _Host, port: int,
        rng: random.Random,
    ) -> Outcome:
        target = route.pick(rng)
        key = (id(target), port, id(match))
        forward = self._forwards.get(key)
        if forward is None:
            service = resolved.service if target.host == resolved.fqdn else self.snapshot.registry.get(target.host)
            dest_port = target.port or _service_port(service, port)
            forward = self._forwards[key] = Outcome(
                kind="forward", host=target.host, port=dest_port, route=route, match=match, target=target,
                cluster=self.snapshot.clusters.get(target.host, target.subset, dest_port),
                authority=target.request_ops.authority or route.rewrite_authority or None)
        if not route.rewrites:
            return forward
        path = rewrite_path(info.path, uri=route.rewrite_uri, uri_kind=match.uri_kind, matched=match.uri_value,
                            regex=route.regex_rewrite)
        return Outcome(kind="forward", host=forward.host, port=forward.port, route=route, match=match, target=target,
                       cluster=forward.cluster, path=path, authority=forward.authority)

    def _act(self, route: CompiledRoute, match: CompiledMatch, info: RequestInfo, resolved: _Host, port: int
             ) -> Outcome:
        """A route that answers locally: a redirect, a direct response, or no destination."""
        if route.redirect is not None:
            location = redirect_location(
                route.redirect, scheme=info.scheme, host=info.host, port=info.port, path=info.path,
                uri_kind=match.uri_kind, matched=match.uri_value,
            )
            code = route.redirect.redirect_code or 301
            reply = LocalReply(code, b"", (("location", location),), "", "redirect")
            return Outcome(kind="local", host=resolved.fqdn, port=port, route=route, match=match, local=reply)
        if route.direct_response is not None:
            body = route.direct_response.body.content if route.direct_response.body is not None else b""
            headers = (("content-type", "text/plain"),) if body else ()
            reply = LocalReply(route.direct_response.status, body, headers, "", "direct response")
            return Outcome(kind="local", host=resolved.fqdn, port=port, route=route, match=match, local=reply)
        return _local(resolved.fqdn, port, 404, b"", "NR", "route has no destination")


def _service_port(service: Service | None, request_port: int) -> int:
    if service is not None and len(service.ports) == 1:
        return service.ports[0].number
    return request_port


def _local(host: str, port: int, status: int, body: bytes, flags: str, reason: str) -> Outcome:
    return Outcome(kind="local", host=host, port=port, local=LocalReply(status, body, (), flags, reason))


# -- compiling VirtualServices -----------------------------------------------------------


def _compile_vs(vs: Resource[Any], snap: Snapshot) -> list[CompiledRoute]:
    out: list[CompiledRoute] = []
    spec = vs.spec
    for i, http in enumerate(spec.http):
        blocks = _blocks(http, tuple(spec.gateways), snap)
        if blocks is None:
            continue  # every match block is for other workloads or gateways
        if http.delegate is not None:
            delegate = snap.routes.delegate(http.delegate.name, http.delegate.namespace or vs.namespace)
            if delegate is None:
                continue  # Istio drops a route whose delegate does not exist
            for j, inner in enumerate(delegate.spec.http):
                inner_blocks = _blocks(inner, (), snap)
                if inner_blocks is None:
                    continue
                merged = tuple(o.merged(b) for o in (blocks or (CATCH_ALL,)) for b in (inner_blocks or (CATCH_ALL,)))
                if merged == (CATCH_ALL,):
                    merged = ()
                out.append(_compile_route(delegate, j, inner, merged, snap, root=http, root_vs=vs))
            continue
        out.append(_compile_route(vs, i, http, blocks, snap))
    return out


def _blocks(http: Any, vs_gateways: tuple[str, ...], snap: Snapshot) -> tuple[CompiledMatch, ...] | None:
    """Compiled match blocks; () matches everything; None: no block can apply here."""
    if not http.match:
        if vs_gateways and "mesh" not in vs_gateways:
            return None
        return ()
    kept = tuple(compile_match(m) for m in http.match if applies_to(m, vs_gateways, snap.workload))
    return kept or None


def _inherit(route: Any, root: Any, name: str) -> Any:
    value = getattr(route, name)
    if root is None:
        return value
    empty = value is None or value == ()
    return getattr(root, name) if empty else value


def _compile_route(
    vs: Resource[Any], index: int, http: Any, matches: Sequence[CompiledMatch], snap: Snapshot,
    *, root: Any = None, root_vs: Resource[Any] | None = None,
) -> CompiledRoute:
    ns = vs.namespace
    headers = _inherit(http, root, "headers")
    route_req, route_resp = compile_headers(http.legacy_headers, headers)
    targets = []
    for dest in http.route:
        d = dest.destination
        req, resp = compile_headers(http.legacy_headers, headers, dest.legacy_headers, dest.headers)
        port = d.port.number if d.port is not None and d.port.number else None
        targets.append(Target(fqdn(d.host, ns), d.subset, port, dest.weight, req, resp))
    if len(targets) > 1:
        targets = [t for t in targets if t.weight > 0]
    cumulative: list[int] = []
    total = 0
    for t in targets:
        total += t.weight if len(targets) > 1 else 1
        cumulative.append(total)
    rewrite = _inherit(http, root, "rewrite")
    mirror_ns = root_vs.namespace if root_vs is not None and not http.mirror_policies else ns
    mirror_policies = http.mirror_policies or (root.mirror_policies if root is not None else ())
    mirrors = tuple(
        Mirror(fqdn(m.destination.host, mirror_ns), m.destination.subset,
               m.destination.port.number if m.destination.port is not None and m.destination.port.number else None,
               m.effective_percentage)
        for m in mirror_policies
    )
    name = http.name if root is None else "-".join(x for x in (root.name, http.name) if x)
    retries = _inherit(http, root, "retries")
    fault = _inherit(http, root, "fault")
    return CompiledRoute(
        virtual_service=vs,
        index=index,
        name=name,
        matches=tuple(matches),
        targets=tuple(targets),
        cumulative=tuple(cumulative),
        redirect=http.redirect,
        direct_response=_inherit(http, root, "direct_response"),
        rewrite_uri=rewrite.uri if rewrite is not None else "",
        rewrite_authority=rewrite.authority if rewrite is not None else "",
        regex_rewrite=RegexRewrite.compile(rewrite.uri_regex_rewrite)
        if rewrite is not None and rewrite.uri_regex_rewrite is not None else None,
        request_ops=route_req,
        response_ops=route_resp,
        mirrors=mirrors,
        timeout=_inherit(http, root, "timeout"),
        retries=retries,
        fault=fault,
        cors=_inherit(http, root, "cors_policy"),
        retry_policy=RetryPolicy.compile(retries, snap.mesh_config.default_http_retry_policy),
        fault_policy=FaultPolicy.compile(fault),
    )
