"""VirtualService (networking.istio.io v1, v1beta1, v1alpha3): HTTP, TLS and TCP routing rules.

The HTTP messages an ``HTTPRoute`` is made of, and the shared ``Destination``, are in
``vs_http.py``; everything is re-exported here. Rules follow istio/istio
``pkg/config/validation`` (``ValidateVirtualService``, ``validateHTTPRoute`` ...). What
Istio itself only warns about (unreachable or duplicate rules) is left to the
cross-document analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pymesh.config import hosts as hostnames
from pymesh.config.decode import Checker, field
from pymesh.config.networking._netcheck import check_export_to, is_dns_label, is_ip
from pymesh.config.networking.vs_http import (
    CorsPolicy,
    Delegate,
    Destination,
    Headers,
    HTTPBody,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRouteDestination,
    OptionalPort,
    PortSelector,
    RegexRewrite,
    StringMatch,
    check_gateway_names,
    check_header_additions,
    check_header_removals,
    host_problem,
    is_jwt_claim_key,
    legacy_headers,
)
from pymesh.config.resource import KindSpec
from pymesh.config.types import Duration, Labels, Percent, check_cidr_or_ip, ranged

__all__ = [
    "KINDS",
    "CorsPolicy",
    "Delegate",
    "Destination",
    "HTTPBody",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "Headers",
    "L4MatchAttributes",
    "PortSelector",
    "RegexRewrite",
    "RouteDestination",
    "StringMatch",
    "TCPRoute",
    "TLSMatchAttributes",
    "TLSRoute",
    "VirtualService",
]

MESH = "mesh"  # the reserved gateway name meaning "every sidecar"


def _removed(old: str, new: str) -> str:
    return f"{old} is an Istio 1.0/1.1 field that current Istio removed; use {new}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRoute:
    """One HTTP rule: conditions (``match``) and exactly one action (route, redirect, directResponse, delegate)."""

    name: str = ""
    match: tuple[HTTPMatchRequest, ...] = ()  # empty: matches every request
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None  # whole request, all retries included; unset: none
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    mirror_percentage: Percent | None = None  # for ``mirror``; unset: 100
    mirror_percent: Annotated[int, ranged(0, 100, "mirrorPercent")] | None = field(
        default=None, deprecated='using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None
    # Istio 1.0/1.1 fields, removed later (reserved 5, 11-15); kept so seed-era samples load.
    websocket_upgrade: bool | None = field(default=None, deprecated=(
        "websocketUpgrade is an Istio 1.0 field that current Istio removed; WebSocket upgrades are always "
        "allowed, so remove it"))
    append_headers: Mapping[str, str] | None = field(default=None, deprecated=_removed(
        "appendHeaders", "headers.request.add"))
    remove_response_headers: tuple[str, ...] | None = field(default=None, deprecated=_removed(
        "removeResponseHeaders", "headers.response.remove"))
    append_response_headers: Mapping[str, str] | None = field(default=None, deprecated=_removed(
        "appendResponseHeaders", "headers.response.add"))
    remove_request_headers: tuple[str, ...] | None = field(default=None, deprecated=_removed(
        "removeRequestHeaders", "headers.request.remove"))
    append_request_headers: Mapping[str, str] | None = field(default=None, deprecated=_removed(
        "appendRequestHeaders", "headers.request.add"))

    @property
    def legacy_headers(self) -> Headers | None:
        """The Istio 1.0/1.1 header fields as a ``Headers`` value (None when none is set)."""
        request_add = {**(self.append_headers or {}), **(self.append_request_headers or {})}
        return legacy_headers(request_add, self.remove_request_headers,
                              self.append_response_headers, self.remove_response_headers)

    @property
    def mirror_policies(self) -> tuple[HTTPMirrorPolicy, ...]:
        """``mirrors``, or ``mirror`` with its percentage (mirrorPercentage, else mirrorPercent, else 100)."""
        if self.mirror is None:
            return self.mirrors
        if self.mirror_percentage is not None:
            share = self.mirror_percentage
        else:
            share = Percent(value=100.0 if self.mirror_percent is None else float(self.mirror_percent))
        return (HTTPMirrorPolicy(destination=self.mirror, percentage=share),)

    def _check(self, v: Checker) -> None:
        self._check_action(v)
        if self.mirror is not None and self.mirrors:
            v.error("HTTP route cannot contain both mirror and mirrors", "mirrors")
        if self.mirror is None and (self.mirror_percentage is not None or self.mirror_percent is not None):
            v.warn("mirrorPercentage has no effect without mirror",
                   "mirrorPercentage" if self.mirror_percentage is not None else "mirrorPercent")
        _check_total_weight(v, [d.weight for d in self.route])
        redirect = self.redirect
        if redirect is not None and redirect.prefix_rewrite:
            for i, m in enumerate(self.match):
                if m.uri is not None and m.uri.kind != "prefix":
                    v.error("redirect prefixRewrite requires all URI matches to use prefix match type",
                            "match", i, "uri")
        self._check_authority(v)
        check_header_additions(v, self.append_headers or {}, "appendHeaders", request=True)
        check_header_additions(v, self.append_request_headers or {}, "appendRequestHeaders", request=True)
        check_header_removals(v, self.remove_request_headers or (), "removeRequestHeaders")
        check_header_additions(v, self.append_response_headers or {}, "appendResponseHeaders", request=False)
        check_header_removals(v, self.remove_response_headers or (), "removeResponseHeaders")

    def _check_action(self, v: Checker) -> None:
        if self.delegate is not None:  # a root route: the delegate VirtualService supplies the action
            for name, given in (("route", bool(self.route)), ("redirect", self.redirect is not None)):
                if given:
                    label = f" {self.name}" if self.name else ""
                    v.error(f"root HTTP route{label} must not specify {name}: it delegates", name)
            return
        if self.redirect is not None:
            excluded = {"route": bool(self.route), "fault": self.fault is not None,
                        "rewrite": self.rewrite is not None, "directResponse": self.direct_response is not None}
            action = "redirect"
        elif self.direct_response is not None:
            excluded = {"route": bool(self.route), "fault": self.fault is not None,
                        "rewrite": self.rewrite is not None}
            action = "directResponse"
        else:
            if not self.route:
                v.error("HTTP route, redirect or direct_response is required: an HTTP route needs one of route, "
                        "redirect, directResponse or delegate")
            return
        for name, given in excluded.items():
            if given:
                v.error(f"HTTP route cannot contain both {name} and {action}", name)

    def _check_authority(self, v: Checker) -> None:
        current = self.rewrite.authority if self.rewrite is not None else ""
        for op, name, value in self.headers.authority_ops if self.headers is not None else ():
            if current:
                v.error(f"authority header cannot be set multiple times: have {current!r}, attempting to set "
                        f"{value!r}", "headers", "request", op, name)
                return
            current = value


def _check_total_weight(v: Checker, weights: list[int]) -> None:
    if len(weights) > 1 and sum(weights) == 0:
        v.error("total destination weight = 0: give at least one destination a positive weight "
                "(weights are relative)", "route")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDestination:
    destination: Destination
    weight: Annotated[int, ranged(0, None, "weight")] = 0


def _check_l4_match(v: Checker, subnets: tuple[str, ...], gateways: tuple[str, ...], source_namespace: str) -> None:
    for i, subnet in enumerate(subnets):
        problem = check_cidr_or_ip(subnet)
        if problem:
            v.error(problem, "destinationSubnets", i)
    check_gateway_names(v, gateways, "gateways")
    if source_namespace and not is_dns_label(source_namespace):
        v.error(f"sourceNamespace match {source_namespace} is invalid", "sourceNamespace")


@dataclass(frozen=True, slots=True, kw_only=True)
class L4MatchAttributes:
    destination_subnets: tuple[str, ...] = ()  # IP or CIDR of the original destination
    port: OptionalPort = 0
    source_subnet: str = ""  # hidden in the API; not used by Istio
    source_labels: Labels = dataclasses.field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""

    def _check(self, v: Checker) -> None:
        _check_l4_match(v, self.destination_subnets, self.gateways, self.source_namespace)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSMatchAttributes:
    sni_hosts: tuple[str, ...]  # checked against the VirtualService hosts in VirtualService._check
    destination_subnets: tuple[str, ...] = ()
    port: OptionalPort = 0
    source_labels: Labels = dataclasses.field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""
    # Istio 1.0/1.1 field, removed later (reserved 4); kept so seed-era samples load.
    source_subnet: str | None = field(default=None, deprecated=(
        "sourceSubnet is an Istio 1.0/1.1 field of TLS matches that current Istio removed; it was never used"))

    def _check(self, v: Checker) -> None:
        if not self.sni_hosts:
            v.error("TLS match must have at least one SNI host", "sniHosts")
        _check_l4_match(v, self.destination_subnets, self.gateways, self.source_namespace)


@dataclass(frozen=True, slots=True, kw_only=True)
class TCPRoute:
    match: tuple[L4MatchAttributes, ...] = ()  # empty: every connection
    route: tuple[RouteDestination, ...] = ()

    def _check(self, v: Checker) -> None:
        if not self.route:
            v.error("TCP route is required: list at least one destination", "route")
        _check_total_weight(v, [d.weight for d in self.route])


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSRoute:
    """Routing of TLS that is passed through unterminated, by the ClientHello SNI."""

    match: tuple[TLSMatchAttributes, ...]
    route: tuple[RouteDestination, ...] = ()

    def _check(self, v: Checker) -> None:
        if not self.match:
            v.error("TLS route must have at least one match condition", "match")
        if not self.route:
            v.error("TLS route is required: list at least one destination", "route")
        _check_total_weight(v, [d.weight for d in self.route])


def _sni_domain_problem(domain: str) -> str | None:
    """``outbound_.<port>_._.<host>``: the SNI Istio generates for AUTO_PASSTHROUGH gateways."""
    parts = domain.split("_")
    if len(parts) < 4:
        return f"domain name {domain!r} invalid, should follow 'outbound_.<port>_._.<hostname>' format"
    port, host = parts[1].strip("."), parts[3].strip(".")
    if not any(c.isdigit() for c in port):
        return f"domain name {domain!r} invalid (label {port!r} invalid)"
    if not any(c.isalpha() for c in host):
        return f"domain name {domain!r} invalid (label {host!r} invalid)"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualService:
    """Routing rules for ``hosts``, applied at sidecars (``mesh``) and/or the listed ``gateways``."""

    hosts: tuple[str, ...] = ()  # empty: a delegate, reachable only through another VS's ``delegate``
    gateways: tuple[str, ...] = ()  # empty: ["mesh"]
    http: tuple[HTTPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    export_to: tuple[str, ...] = ()

    @property
    def is_delegate(self) -> bool:
        return not self.hosts

    @property
    def applies_to_mesh(self) -> bool:
        """Do the rules apply at sidecars (no gateways listed, or ``mesh`` among them)?"""
        return not self.gateways or MESH in self.gateways

    def _check(self, v: Checker) -> None:
        if not (self.http or self.tcp or self.tls):
            v.error("http, tcp or tls must be provided in virtual service")
        if self.is_delegate:
            for name, given in (("gateways", self.gateways), ("tls", self.tls), ("tcp", self.tcp)):
                if given:
                    v.error(f"delegate virtual service must have no {name} specified (a VirtualService "
                            "without hosts is a delegate)", name)
            for i, route in enumerate(self.http):
                if route.delegate is not None:
                    v.error("delegate HTTP route cannot contain delegate (delegation is one level only)",
                            "http", i, "delegate")
        check_gateway_names(v, self.gateways, "gateways")
        if self.applies_to_mesh:
            self._check_jwt_claim_routes(v)
        self._check_hosts(v)
        self._check_sni_hosts(v)
        check_export_to(v, self.export_to)

    def _check_jwt_claim_routes(self, v: Checker) -> None:
        for i, route in enumerate(self.http):
            for j, m in enumerate(route.match):
                for where, table in (("headers", m.headers), ("withoutHeaders", m.without_headers)):
                    for key in filter(is_jwt_claim_key, table):
                        v.error(f"JWT claim based routing (key: {key}) is only supported for gateway, found no "
                                f"gateways: {list(self.gateways)}", "http", i, "match", j, where, key)

    def _host_problem(self, host: str, *, sni: bool) -> str | None:
        if sni and not self.applies_to_mesh and host.startswith("outbound_"):
            return _sni_domain_problem(host)
        return host_problem(host)

    def _check_hosts(self, v: Checker) -> None:
        valid = True
        sni = any(m.sni_hosts for t in self.tls for m in t.match)
        for i, host in enumerate(self.hosts):
            problem = self._host_problem(host, sni=sni)
            if problem and not is_ip(host):
                v.error(problem, "hosts", i)
                valid = False
            elif host == "*" and self.applies_to_mesh:
                v.error("wildcard host * is not allowed for virtual services bound to the mesh gateway", "hosts", i)
                valid = False
        if not valid:
            return
        low = [h.lower() for h in self.hosts]
        for j in range(len(low)):
            for i in range(j):
                if hostnames.matches(low[i], low[j]) or hostnames.matches(low[j], low[i]):
                    v.error(f"duplicate hosts in virtual service: {self.hosts[i]} & {self.hosts[j]}", "hosts", j)

    def _check_sni_hosts(self, v: Checker) -> None:
        low = [h.lower() for h in self.hosts]
        for i, route in enumerate(self.tls):
            for j, m in enumerate(route.match):
                for k, sni in enumerate(m.sni_hosts):
                    at = ("tls", i, "match", j, "sniHosts", k)
                    problem = self._host_problem(sni, sni=True)
                    if problem and is_ip(sni):
                        v.warn(f"using an IP address ({sni!r}) goes against SNI spec and most clients do not "
                               "support this", *at)
                    elif problem:
                        v.error(problem, *at)
                    elif not any(hostnames.matches(h, sni.lower()) for h in low):
                        v.error(f"SNI host {sni!r} is not a compatible subset of any of the virtual service hosts: "
                                f"[{', '.join(self.hosts)}]", *at)


KINDS = (KindSpec("networking.istio.io", "VirtualService", ("v1", "v1beta1", "v1alpha3"), VirtualService),)
