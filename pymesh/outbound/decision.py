"""``RouteDecision``: the dry-run answer of ``mesh.route()``, and its readable form."""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pymesh.config.decode import wire_name
from pymesh.config.hosts import split_authority
from pymesh.errors import NoRouteError
from pymesh.outbound.request import RequestInfo
from pymesh.outbound.router import Outcome, Router
from pymesh.snapshot.clusters import TrafficPolicy
from pymesh.snapshot.registry import Endpoint

__all__ = ["RouteDecision", "decide", "info_for"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecision:
    """How the mesh would treat a request, computed without I/O."""

    method: str
    url: str
    host: str  # the FQDN the request's host resolved to
    action: Literal["route", "redirect", "direct_response", "passthrough"]
    virtual_service: str | None = None  # "namespace/name"
    source: str | None = None  # file:line of the VirtualService
    route_name: str = ""
    route_index: int | None = None
    match_name: str = ""
    destination_host: str | None = None
    subset: str = ""
    port: int | None = None
    cluster: str | None = None  # Envoy's name: outbound|port|subset|host
    targets: tuple[tuple[str, str, int | None, float], ...] = ()  # (host, subset, port, share %)
    path: str = ""  # as sent upstream, after rewrites
    authority: str | None = None  # a rewritten Host, if any
    status: int | None = None  # for redirects and direct responses
    location: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    traffic_policy: TrafficPolicy | None = None
    timeout: float | None = None
    retries: Any = None
    fault: Any = None
    mirrors: tuple[Any, ...] = ()
    cors_policy: Any = None

    @property
    def destination(self) -> tuple[str | None, str, int | None]:
        return (self.destination_host, self.subset, self.port)

    def lines(self) -> list[str]:
        """A readable rendering, as ``pymesh explain`` prints it."""
        out = [f"request          {self.method} {self.url}", f"host             {self.host}"]
        if self.virtual_service:
            out.append(f"virtual service  {self.virtual_service}  ({self.source})")
            rule = f"http[{self.route_index}]" + (f" {self.route_name!r}" if self.route_name else "")
            out.append(f"route            {rule}" + (f" match {self.match_name!r}" if self.match_name else ""))
        else:
            out.append("virtual service  none")
        if self.action in ("redirect", "direct_response"):
            out.append(f"action           {self.action.replace('_', ' ')} {self.status}"
                       + (f" -> {self.location}" if self.location else ""))
            return out
        if self.action == "passthrough":
            out.append("action           pass through (host not in the mesh; ALLOW_ANY)")
            return out
        shares = ", ".join(f"{h}{'/' + s if s else ''}:{p or '-'} {w:g}%" for h, s, p, w in self.targets)
        out.append(f"destinations     {shares}")
        out.append(f"chosen           {self.cluster}")
        out.append(f"upstream path    {self.path}" + (f"  host {self.authority}" if self.authority else ""))
        policy = self.traffic_policy
        if policy is not None:
            for name in ("load_balancer", "connection_pool", "outlier_detection", "tls"):
                value = getattr(policy, name)
                if value is not None:
                    out.append(f"{name.replace('_', ' '):<17} {compact(value)}")
        for name in ("timeout", "retries", "fault", "cors_policy"):
            value = getattr(self, name)
            if value is not None:
                out.append(f"{name.replace('_', ' '):<17} {compact(value)}")
        for m in self.mirrors:
            out.append(f"mirror           {m.host}{'/' + m.subset if m.subset else ''} {m.percentage:g}%")
        eps = ", ".join(
            f"{e.address}{compact(dict(e.ports)) if e.ports else ''}{' ' + e.locality if e.locality else ''}"
            for e in self.endpoints
        ) or "none (dialled by name)"
        out.append(f"endpoints        {eps}")
        return out


def compact(value: Any) -> str:
    """A config value with only the fields that differ from their defaults, in YAML's spelling."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = []
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if v != default:
                parts.append(f"{wire_name(f.name)}: {compact(v)}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, float):
        return f"{value:g}s" if value else "0s"
    if isinstance(value, tuple):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {compact(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, str) else str(value)


def info_for(method: str, url: str, headers: Mapping[str, str] | None = None, source_ip: str = "") -> RequestInfo:
    parts = urllib.parse.urlsplit(url)
    host, port = split_authority(parts.netloc)
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    lowered.setdefault("host", parts.netloc)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return RequestInfo(method=method.upper(), scheme=parts.scheme or "http", host=host, port=port, path=path,
                       headers=lowered, source_ip=source_ip)


def decide(router: Router, info: RequestInfo, url: str, rng: Any) -> RouteDecision:
    outcome: Outcome = router.decide(info, rng)
    route = outcome.route
    vs = route.virtual_service if route is not None else None
    common: dict[str, Any] = {
        "method": info.method,
        "url": url,
        "host": outcome.host,
        "virtual_service": f"{vs.namespace}/{vs.name}" if vs is not None else None,
        "source": str(vs.source) if vs is not None else None,
        "route_name": route.name if route is not None else "",
        "route_index": route.index if route is not None else None,
        "match_name": outcome.match.name if outcome.match is not None else "",
    }
    if outcome.kind == "passthrough":
        return RouteDecision(action="passthrough", path=info.path, **common)
    local = outcome.local
    if local is not None:
        if local.flags == "NR":
            raise NoRouteError(f"{local.status} NR for {info.method} {url}: {local.reason}")
        location = dict(local.headers).get("location")
        action: Literal["redirect", "direct_response"] = "redirect" if location else "direct_response"
        return RouteDecision(action=action, status=local.status, location=location, **common)
    assert route is not None
    assert outcome.target is not None
    assert outcome.cluster is not None
    total = sum(t.weight for t in route.targets) if len(route.targets) > 1 else 0
    targets = tuple(
        (t.host, t.subset, t.port, 100.0 * t.weight / total if total else 100.0) for t in route.targets
    )
    cluster = outcome.cluster
    return RouteDecision(
        action="route",
        destination_host=outcome.target.host,
        subset=outcome.target.subset,
        port=outcome.port,
        cluster=str(cluster.key),
        targets=targets,
        path=outcome.path if outcome.path is not None else info.path,
        authority=outcome.authority,
        endpoints=cluster.endpoints,
        traffic_policy=cluster.policy,
        timeout=route.timeout,
        retries=route.retries,
        fault=route.fault,
        mirrors=route.mirrors,
        cors_policy=route.cors,
        **common,
    )
