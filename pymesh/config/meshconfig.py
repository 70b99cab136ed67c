"""Mesh-wide settings: Istio's MeshConfig (``istio`` ConfigMap ``data.mesh``, or ``pymesh/v1 MeshConfig``).

Fields pymesh acts on are typed; the rest of Istio's MeshConfig is accepted as free-form
values so that a real ``istio`` ConfigMap loads unchanged, and listed in the
configuration reference as "accepted, not enforced".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pymesh.config.decode import Checker, Json, field
from pymesh.config.networking.destinationrule import LocalityLoadBalancerSetting
from pymesh.config.networking.virtualservice import HTTPRetry
from pymesh.config.types import Duration, check_dns_label

__all__ = ["MeshConfig", "OutboundTrafficPolicy", "PathNormalization"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundTrafficPolicy:
    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"


@dataclass(frozen=True, slots=True, kw_only=True)
class PathNormalization:
    # DEFAULT is BASE: RFC 3986 dot-segment removal, no slash merging.
    normalization: Literal["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] = "DEFAULT"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtensionProvider:
    """``extensionProviders[]``: a name and one provider block (ext_authz, tracing, ...)."""

    name: str
    envoy_ext_authz_http: Json = None
    envoy_ext_authz_grpc: Json = None
    zipkin: Json = None
    lightstep: Json = None
    datadog: Json = None
    stackdriver: Json = None
    opencensus: Json = None
    skywalking: Json = None
    opentelemetry: Json = None
    prometheus: Json = None
    envoy_file_access_log: Json = None
    envoy_http_als: Json = None
    envoy_tcp_als: Json = None
    envoy_otel_als: Json = None
    sds: Json = None

    def _check(self, v: Checker) -> None:
        if not self.name:
            v.error("extension provider name must not be empty", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshConfig:
    """Istio MeshConfig field names; defaults are Istio's (``pkg/config/mesh/mesh.go``)."""

    # Acted on by pymesh.
    trust_domain: str = "cluster.local"
    trust_domain_aliases: tuple[str, ...] = ()
    root_namespace: str = "istio-system"
    outbound_traffic_policy: OutboundTrafficPolicy = field(default_factory=OutboundTrafficPolicy)
    path_normalization: PathNormalization = field(default_factory=PathNormalization)
    default_http_retry_policy: HTTPRetry | None = None
    connect_timeout: Duration = 10.0
    enable_auto_mtls: bool = True
    enable_tracing: bool = True
    access_log_file: str = ""
    access_log_format: str = ""
    access_log_encoding: Literal["TEXT", "JSON"] = "TEXT"
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    extension_providers: tuple[ExtensionProvider, ...] = ()
    default_providers: Json = None
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE"
    # Accepted so a real ConfigMap loads; not enforced.
    proxy_listen_port: int | None = None
    proxy_inbound_listen_port: int | None = None
    proxy_http_port: int | None = None
    protocol_detection_timeout: Json = None
    tcp_keepalive: Json = None
    ingress_class: str = ""
    ingress_service: str = ""
    ingress_controller_mode: str = ""
    ingress_selector: str = ""
    enable_envoy_access_log_service: bool = False
    disable_envoy_listener_log: bool = False
    default_config: Json = None
    inbound_traffic_policy: Json = None
    config_sources: Json = None
    ca_certificates: Json = None
    default_service_export_to: tuple[str, ...] = ()
    default_virtual_service_export_to: tuple[str, ...] = ()
    default_destination_rule_export_to: tuple[str, ...] = ()
    dns_refresh_rate: Json = None
    inbound_cluster_stat_name: str = ""
    outbound_cluster_stat_name: str = ""
    certificates: Json = None
    service_settings: Json = None
    enable_prometheus_merge: bool | None = None
    verify_certificate_at_client: bool | None = None
    ca: Json = None
    discovery_selectors: Json = None
    mesh_mtls: Json = None
    tls_defaults: Json = None
    service_scope_configs: Json = None
    thrift_config: Json = None
    default_traffic_policy: Json = None
    # Istio 1.0/1.1 fields, removed since; seed-era ConfigMaps carry them.
    mixer_check_server: str = field(default="", deprecated="mixerCheckServer is an Istio 1.x field; pymesh ignores it")
    mixer_report_server: str = field(default="", deprecated="mixerReportServer is an Istio 1.x field; ignored")
    disable_policy_checks: bool | None = field(default=None, deprecated="disablePolicyChecks is an Istio 1.x field")
    policy_check_fail_open: bool | None = field(default=None, deprecated="policyCheckFailOpen is an Istio 1.x field")
    sidecar_to_telemetry_session_affinity: bool | None = field(default=None, deprecated="an Istio 1.x field")
    auth_policy: Literal["NONE", "MUTUAL_TLS"] | None = field(
        default=None, deprecated="authPolicy is the Istio 1.0 mesh-wide mTLS switch; use PeerAuthentication")
    rds_refresh_delay: Json = field(default=None, deprecated="rdsRefreshDelay is an Istio 1.0 field")
    mixer_address: str = field(default="", deprecated="mixerAddress is an Istio 1.0 field")
    enable_client_side_policy_check: bool | None = field(default=None, deprecated="an Istio 1.x field")
    sds_uds_path: str = field(default="", deprecated="sdsUdsPath is an Istio 1.x field")
    sds_refresh_delay: Json = field(default=None, deprecated="sdsRefreshDelay is an Istio 1.x field")
    enable_sds_token_mount: bool | None = field(default=None, deprecated="an Istio 1.x field")
    # pymesh's own settings (only in `apiVersion: pymesh/v1, kind: MeshConfig`).
    shadow_host_suffix: bool = False  # Istio <= 1.27 appended "-shadow" to a mirrored request's host

    def _check(self, v: Checker) -> None:
        if not self.trust_domain:
            v.error("trustDomain must not be empty", "trustDomain")
        problem = check_dns_label(self.root_namespace, "rootNamespace")
        if problem:
            v.error(problem, "rootNamespace")
        names = [p.name for p in self.extension_providers]
        for i, name in enumerate(names):
            if name in names[:i]:
                v.error(f"duplicate extension provider name {name!r}", "extensionProviders", i, "name")
