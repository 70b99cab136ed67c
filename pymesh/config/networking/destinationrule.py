"""DestinationRule (networking.istio.io): what happens to traffic after routing picked a service.

Fields follow istio/api ``networking/v1alpha3/destination_rule.proto``; the load balancer
messages live in :mod:`pymesh.config.networking.loadbalancer`. Rules follow Istio's
``ValidateDestinationRule`` and ``agent.ValidateTLS``. Models are plain data: the snapshot
resolves precedence (port-level over top-level, subset over rule) from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pymesh.config.common import WorkloadSelector
from pymesh.config.decode import Checker, Invalid, field
from pymesh.config.networking._netcheck import (
    check_export_to,
    check_fqdn,
    check_wildcard_domain,
    is_dns_label,
    is_ip,
)
from pymesh.config.networking.loadbalancer import (
    ConsistentHashLB,
    HTTPCookie,
    LoadBalancerSettings,
    LocalityLoadBalancerSetting,
    WarmupConfiguration,
    ZoneAwareLoadBalancerSetting,
)
from pymesh.config.resource import KindSpec
from pymesh.config.types import Duration, DurationOrZero, Labels, NonNegInt, Port, ranged

__all__ = [
    "KINDS",
    "ClientTLSSettings",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "DestinationRule",
    "HTTPCookie",
    "HTTPSettings",
    "Http2KeepAlive",
    "LoadBalancerSettings",
    "LocalityLoadBalancerSetting",
    "OutlierDetection",
    "PortSelector",
    "PortTrafficPolicy",
    "ProxyProtocol",
    "RetryBudget",
    "Subset",
    "TCPSettings",
    "TcpKeepalive",
    "TrafficPolicy",
    "TunnelSettings",
    "WarmupConfiguration",
    "ZoneAwareLoadBalancerSetting",
]


def _non_negative(limit: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < 0:
            raise Invalid(f"must be non-negative, got {value}")
        if value > limit:
            raise Invalid(f"{value} is too large (at most {limit})")
        return value

    return check


Int32 = Annotated[int, _non_negative(2**31 - 1)]  # int32 fields Istio requires to be non-negative
UInt32 = Annotated[int, _non_negative(2**32 - 1)]
Percent100 = Annotated[int, ranged(0, 100, "percentage")]

# -- connection pool ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpKeepalive:
    probes: UInt32 = 0  # 0: the OS default
    time: Duration | None = None
    interval: Duration | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TCPSettings:
    max_connections: Int32 = 0  # 0: Istio's default, 2^32-1
    connect_timeout: Duration | None = None  # None: MeshConfig connectTimeout (10s)
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: DurationOrZero | None = None  # None: 1h; 0: never


@dataclass(frozen=True, slots=True, kw_only=True)
class Http2KeepAlive:
    """HTTP/2 PING keepalive; Istio requires both fields."""

    interval: Duration
    timeout: Duration


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPSettings:
    http1_max_pending_requests: Int32 = 0
    http2_max_requests: Int32 = 0
    max_requests_per_connection: Int32 = 0  # 0: unlimited; 1: no keep-alive
    max_retries: Int32 = 0
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] = "DEFAULT"
    use_client_protocol: bool = False
    max_concurrent_streams: Int32 = 0
    http2_keep_alive: Http2KeepAlive | None = None

    def _check(self, v: Checker) -> None:
        if self.h2_upgrade_policy == "UPGRADE" and self.use_client_protocol:
            v.error("use client protocol must not be true when H2UpgradePolicy is UPGRADE", "useClientProtocol")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionPoolSettings:
    """Circuit-breaker limits per upstream host (Envoy cluster thresholds)."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None

    def _check(self, v: Checker) -> None:
        if self.tcp is None and self.http is None:
            v.error("connection pool must have at least one field (tcp or http)")


# -- outlier detection ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetection:
    """Passive health checking. The ``consecutive*`` counts are UInt32Value: None is "unset", not 0."""

    consecutive_errors: NonNegInt | None = field(
        default=None,
        deprecated="current Istio ignores consecutiveErrors since 1.7; pymesh honours it as gateway errors, "
        "as Istio 1.1–1.6 did",  # noqa: RUF001  (the en dash is meant)
    )
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: UInt32 | None = None
    consecutive_gateway_errors: UInt32 | None = None
    consecutive_5xx_errors: UInt32 | None = None
    interval: Duration | None = None  # None: 10s
    base_ejection_time: Duration | None = None  # None: 30s
    max_ejection_percent: Percent100 = 0  # 0: Istio's default, 10
    min_health_percent: Percent100 = 0
    outlier_detection_http_error_codes: tuple[Annotated[int, ranged(100, 599, "HTTP status")], ...] = ()

    def _check(self, v: Checker) -> None:
        if not self.split_external_local_origin_errors and self.consecutive_local_origin_failures:
            v.error("outlier detection consecutive local origin failures is specified, but split external "
                    "local origin errors is set to false", "consecutiveLocalOriginFailures")


# -- TLS --------------------------------------------------------------------------------------

TLSMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTLSSettings:
    """TLS the sidecar originates to the upstream."""

    mode: TLSMode = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool | None = None
    ca_crl: str = ""

    def _check(self, v: Checker) -> None:
        if self.credential_name.startswith("configmap://"):
            ns, _, name = self.credential_name.removeprefix("configmap://").partition("/")
            if not ns or not name:
                v.error(f"invalid configmap:// credentialName {self.credential_name!r}: expected "
                        "configmap://namespace/name", "credentialName")
            elif ns != v.namespace or not v.namespace:
                v.error("invalid configmap:// credentialName: namespace must match the configuration namespace "
                        f"{v.namespace!r}", "credentialName")
        if self.insecure_skip_verify:
            if self.mode == "SIMPLE" and (self.ca_certificates or self.credential_name or self.subject_alt_names):
                v.error("cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify "
                        "is set true", "insecureSkipVerify")
            if self.mode == "MUTUAL" and (self.ca_certificates or self.subject_alt_names):
                v.error("cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
                        "insecureSkipVerify")
        files = [wire for value, wire in (
            (self.client_certificate, "clientCertificate"), (self.private_key, "privateKey"),
            (self.ca_certificates, "caCertificates"), (self.ca_crl, "caCrl"),
        ) if value]
        if self.mode == "ISTIO_MUTUAL":
            # Istio silently replaces these with the mesh certificates; pymesh says so instead.
            for wire in [*files, *(["credentialName"] if self.credential_name else [])]:
                v.error(f"ISTIO_MUTUAL uses the mesh certificates; {wire} must not be set", wire)
        elif self.mode in ("SIMPLE", "MUTUAL") and self.credential_name:
            if files:
                v.error("cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
                        files[0])
        elif self.mode == "MUTUAL":
            if not self.client_certificate:
                v.error("client certificate required for mutual tls", "clientCertificate")
            if not self.private_key:
                v.error("private key required for mutual tls", "privateKey")


# -- traffic policy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelSettings:
    """Tunnel TCP to ``targetHost:targetPort`` over HTTP CONNECT or POST."""

    protocol: Literal["CONNECT", "POST"] = "CONNECT"
    target_host: str
    target_port: Port

    def _check(self, v: Checker) -> None:
        if not is_ip(self.target_host) and check_fqdn(self.target_host) is not None:
            v.error(f"tunnel target host must be valid FQDN or IP address, not {self.target_host!r}", "targetHost")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyProtocol:
    version: Literal["V1", "V2"] = "V1"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudget:
    """Concurrent retries as a share of active requests (replaces ``maxRetries``)."""

    percent: Annotated[float, ranged(0.0, 100.0, "percent")] | None = None  # None: 20
    min_retry_concurrency: UInt32 = 0  # 0: 3
    budget_interval: DurationOrZero | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PortSelector:
    number: Annotated[int, ranged(1, 65535, "port")] = 0  # 0: not given
    # Istio 1.0/1.1 also selected ports by name (a oneof with number), removed later; kept so
    # seed-era DestinationRules load.
    name: str = field(default="", deprecated="port selection by name was removed after Istio 1.1; use number")

    def _check(self, v: Checker) -> None:
        if not self.number and not self.name:
            v.error("portTrafficPolicy must have valid port: number is required", "number")
        elif self.number and self.name:
            v.error("only one of number or name may be set", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class PortTrafficPolicy:
    """Settings for one port. They REPLACE the four top-level components, with no inheritance."""

    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None

    def _check(self, v: Checker) -> None:
        if self.port is None:
            v.error("portTrafficPolicy must have valid port", "port")
        if (self.load_balancer is None and self.connection_pool is None and self.outlier_detection is None
                and self.tls is None):
            v.error("port traffic policy must have at least one field "
                    "(loadBalancer, connectionPool, outlierDetection or tls)")
        _warn_failover(v, self.load_balancer, self.outlier_detection)


def _warn_failover(v: Checker, lb: LoadBalancerSettings | None, outlier: OutlierDetection | None) -> None:
    if lb is not None and lb.has_failover and outlier is None:
        v.warn("outlier detection policy must be provided for failover", "loadBalancer")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficPolicy:
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None

    def for_port(self, number: int, name: str = "") -> PortTrafficPolicy | None:
        """The ``portLevelSettings`` entry for a port, or None. The first match wins, as in Istio.

        ``name`` also matches the Istio 1.0/1.1 by-name selectors.
        """
        for entry in self.port_level_settings:
            port = entry.port
            if port is not None and ((port.number and port.number == number) or (name and port.name == name)):
                return entry
        return None

    def _check(self, v: Checker) -> None:
        if (self.load_balancer is None and self.connection_pool is None and self.outlier_detection is None
                and self.tls is None and not self.port_level_settings and self.tunnel is None
                and self.proxy_protocol is None and self.retry_budget is None):
            v.error("traffic policy must have at least one field")
        if self.tunnel is not None and self.proxy_protocol is not None:
            v.error("tunnel and proxyProtocol must not be set together", "proxyProtocol")
        _warn_failover(v, self.load_balancer, self.outlier_detection)
        seen: set[int | str] = set()
        for i, entry in enumerate(self.port_level_settings):
            if entry.port is None:
                continue
            key: int | str = entry.port.number or entry.port.name
            if key in seen:
                v.warn(f"portLevelSettings has another entry for port {key}; only the first one applies",
                       "portLevelSettings", i, "port")
            seen.add(key)


# -- the rule ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Subset:
    """Named endpoints of the host (by label), optionally with their own policy."""

    name: str
    labels: Labels = field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None

    def _check(self, v: Checker) -> None:
        if not self.name:
            v.error("subset name cannot be empty", "name")
        elif not is_dns_label(self.name):
            v.error(f"subset name is invalid: {self.name} (it must be a DNS-1123 label)", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationRule:
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] = ()
    workload_selector: WorkloadSelector | None = None

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def _check(self, v: Checker) -> None:
        problem = check_wildcard_domain(self.host)
        if problem:
            v.error(problem, "host")
        seen: set[str] = set()
        for i, s in enumerate(self.subsets):
            if s.name in seen:
                v.error(f"duplicate subset names: {s.name}", "subsets", i, "name")
            seen.add(s.name)
        check_export_to(v, self.export_to, with_selector=self.workload_selector is not None)
        if self.workload_selector is not None and not self.workload_selector.match_labels:
            v.warn("workload selector specified without labels", "workloadSelector")


KINDS: tuple[KindSpec, ...] = (
    KindSpec("networking.istio.io", "DestinationRule", ("v1", "v1beta1", "v1alpha3"), DestinationRule),
)
