"""ServiceEntry and WorkloadEntry (networking.istio.io): services and endpoints outside Kubernetes.

Fields follow istio/api ``networking/v1alpha3/service_entry.proto`` and ``workload_entry.proto``;
rules follow Istio's ``ValidateServiceEntry`` / ``validateWorkloadEntry`` and the CRD's CEL rules.
A WorkloadEntry is both a kind of its own and the type of ``ServiceEntry.endpoints``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pymesh.config.decode import Checker, Invalid, field
from pymesh.config.networking._netcheck import (
    UNIX_PREFIX,
    ServiceProtocol,
    check_export_to,
    check_fqdn,
    check_unix_address,
    check_wildcard_domain,
    is_dns_label,
    is_http,
    is_ip,
    is_tls,
)
from pymesh.config.resource import KindSpec
from pymesh.config.types import Labels, NonNegInt, Port, check_cidr_or_ip

__all__ = [
    "KINDS",
    "Location",
    "Resolution",
    "ServiceEntry",
    "ServicePort",
    "WorkloadEntry",
    "WorkloadSelector",
]

Location = Literal["MESH_EXTERNAL", "MESH_INTERNAL"]
Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]
_TCP_LIKE = frozenset({"TCP", "HTTPS", "TLS", "MONGO", "REDIS", "MYSQL"})


def _target_port(value: int) -> int:
    if value and not 1 <= value <= 65535:
        raise Invalid(f"port must be between 1-65535, got {value}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadEntry:
    """One endpoint: an IP, a host name (DNS resolution), or ``unix://`` socket, with its labels."""

    address: str = ""
    ports: Mapping[str, Port] = field(default_factory=dict)  # service port name -> endpoint port
    labels: Labels = field(default_factory=dict)
    network: str = ""
    locality: str = ""  # region/zone/subzone
    weight: NonNegInt = 0  # 0: 1
    service_account: str = ""

    @property
    def is_unix(self) -> bool:
        return self.address.startswith(UNIX_PREFIX)

    def _check(self, v: Checker) -> None:
        if not self.address:
            if not self.network:
                v.error("Address is required (or a network, for an endpoint behind a network gateway)", "address")
            else:
                v.warn(f"address is unset with network {self.network!r}", "address")
        elif self.is_unix:
            problem = check_unix_address(self.address.removeprefix(UNIX_PREFIX))
            if problem:
                v.error(f"{problem}: {self.address!r}", "address")
            if self.ports:
                v.error(f"UDS may not include ports: unix endpoint {self.address} must not include ports", "ports")
        elif not is_ip(self.address) and check_fqdn(self.address) is not None:
            v.error(f"endpoint address {self.address!r} is not a valid FQDN or an IP address", "address")
        for name in self.ports:
            if not is_dns_label(name):
                v.error(f"port name must be valid: invalid port name {name!r}", "ports", name)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    number: Port
    protocol: ServiceProtocol = ""  # upper case; "" = detect
    name: str
    target_port: Annotated[int, _target_port] = 0  # 0: the port number

    def _check(self, v: Checker) -> None:
        if not is_dns_label(self.name):
            v.error(f"invalid port name: {self.name!r} (it must be a DNS-1123 label)", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSelector:
    """``workloadSelector: {labels}``: WorkloadEntries and pods in the ServiceEntry's namespace."""

    labels: Labels = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceEntry:
    hosts: tuple[str, ...]
    addresses: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    location: Location = "MESH_EXTERNAL"
    resolution: Resolution = "NONE"
    endpoints: tuple[WorkloadEntry, ...] = ()
    workload_selector: WorkloadSelector | None = None
    export_to: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()

    def _check(self, v: Checker) -> None:
        self._check_hosts(v)
        self._check_ports(v)
        if self.workload_selector is not None:
            if self.endpoints:
                v.error("only one of WorkloadSelector or Endpoints can be set", "workloadSelector")
            if not self.workload_selector.labels:
                v.warn("workload selector specified without labels: it selects every workload in the namespace",
                       "workloadSelector")
        if any("/" in a for a in self.addresses) and self.resolution not in ("NONE", "STATIC"):
            v.error("CIDR addresses are allowed only for NONE/STATIC resolution types", "addresses")
        self._check_resolution(v)
        if self.resolution != "NONE" and len(self.hosts) > 1:
            for i, port in enumerate(self.ports):
                if not is_http(port.protocol) and not is_tls(port.protocol):
                    v.error("multiple hosts provided with non-HTTP, non-TLS ports (the hosts cannot be told apart)",
                            "ports", i, "protocol")
                    break
        check_export_to(v, self.export_to, service_entry=True)

    def _check_hosts(self, v: Checker) -> None:
        if not self.hosts:
            v.error("service entry must have at least one host", "hosts")
        for i, host in enumerate(self.hosts):
            if host == "*":
                v.error("hostname cannot be wildcard: host '*' is not allowed", "hosts", i)
                continue
            problem = check_wildcard_domain(host)
            if problem:
                v.error(problem, "hosts", i)
            elif "*" in host and not host.startswith("*.") and self.resolution != "DYNAMIC_DNS":
                v.warn(f"partial wildcard {host!r} not allowed", "hosts", i)
        for i, address in enumerate(self.addresses):
            problem = check_cidr_or_ip(address)
            if problem:
                v.error(problem, "addresses", i)

    def _check_ports(self, v: Checker) -> None:
        names: set[str] = set()
        numbers: set[int] = set()
        for i, port in enumerate(self.ports):
            if port.name in names:
                v.error(f"service entry port name {port.name!r} already defined", "ports", i, "name")
            if port.number in numbers:
                v.error(f"service entry port {port.number} already defined", "ports", i, "number")
            names.add(port.name)
            numbers.add(port.number)
        for i, ep in enumerate(self.endpoints):
            for name, number in ep.ports.items():
                if name not in names:
                    v.error(f"endpoint port {number} is not defined by the service entry (no port named {name!r})",
                            "endpoints", i, "ports", name)

    def _check_resolution(self, v: Checker) -> None:
        res = self.resolution
        if res == "NONE":
            if self.endpoints:
                v.error("NONE mode cannot set endpoints (no endpoints should be provided for resolution type NONE)",
                        "endpoints")
            if self.workload_selector is not None:
                v.warn("workloadSelector should not be set when resolution mode is NONE", "workloadSelector")
        elif res == "STATIC":
            for i, ep in enumerate(self.endpoints):
                if ep.address and not ep.is_unix and not is_ip(ep.address) and check_fqdn(ep.address) is None:
                    v.error(f"endpoint address {ep.address!r} is not a valid IP address (resolution STATIC needs "
                            "IPs; use DNS for host names)", "endpoints", i, "address")
                if ep.is_unix and len(self.ports) != 1:
                    v.error("exactly 1 service port required for unix endpoints", "endpoints", i, "address")
        elif res in ("DNS", "DNS_ROUND_ROBIN"):
            if not self.endpoints:
                for i, host in enumerate(self.hosts):
                    problem = check_fqdn(host)
                    if problem and host != "*":
                        v.error(f"hosts must be FQDN if no endpoints are provided for resolution mode {res}: {problem}",
                                "hosts", i)
                        break
            if res == "DNS_ROUND_ROBIN" and len(self.endpoints) > 1:
                v.error("DNS_ROUND_ROBIN mode cannot have multiple endpoints (there must only be 0 or 1)",
                        "endpoints")
            for i, ep in enumerate(self.endpoints):
                if ep.is_unix:
                    v.error(f"endpoint address {ep.address!r} is not a valid FQDN or an IP address", "endpoints", i,
                            "address")
            if self.addresses and len(self.hosts) > 1 and any(p.protocol in _TCP_LIKE for p in self.ports):
                v.warn("service entry can not have more than one host specified simultaneously with address and "
                       "tcp port", "hosts")
        else:  # DYNAMIC_DNS
            for i, host in enumerate(self.hosts):
                if not host.startswith("*"):
                    v.error(f"host must be wildcarded for resolution mode {res}", "hosts", i)
            if self.addresses:
                v.error(f"addresses cannot be set for resolution type {res}", "addresses")
            if self.endpoints:
                v.error(f"endpoints cannot be set for resolution type {res}", "endpoints")
            for i, port in enumerate(self.ports):
                if port.protocol not in ("HTTP", "TLS", "GRPC", "HTTP2"):
                    v.error(f"only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type {res}",
                            "ports", i, "protocol")


KINDS: tuple[KindSpec, ...] = (
    KindSpec("networking.istio.io", "ServiceEntry", ("v1", "v1beta1", "v1alpha3"), ServiceEntry),
    KindSpec("networking.istio.io", "WorkloadEntry", ("v1", "v1beta1", "v1alpha3"), WorkloadEntry),
)
