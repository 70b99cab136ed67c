"""What pymesh does with each kind and field: the table behind ``docs/configuration.md``.

Four statuses:

``enforced``
    pymesh acts on it.
``accepted``
    validated and loaded, not yet acted on; ``area`` names the work that will act on it.
``ignored``
    accepted, with no effect by design (stats names, Kubernetes bookkeeping, fields Istio
    never used); ``note`` says why.
``rejected``
    pymesh refuses it on purpose (the decoder reports an error); ``note`` says why.

Keys are patterns: ``Kind`` (the default for every field of a kind), ``Kind.a.b`` (that
field only) and ``Kind.a.*`` (that field and everything under it). Paths use the YAML
(lowerCamel) field names relative to ``spec``; list items add no segment
(``http.route.destination`` is ``spec.http[i].route[j].destination``) and a map value adds
``<key>`` (``http.match.headers.<key>.exact``). The most specific pattern wins: a longer
path beats a shorter one, and ``Kind.a.b`` beats ``Kind.a.b.*`` for ``a.b`` itself. The
pseudo-kind ``metadata`` covers the Kubernetes ``metadata`` every document carries.

``tests/test_config_reference.py`` checks that every pattern names a real kind and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["METADATA", "SUPPORT", "Status", "Support", "lookup", "parse_pattern", "support_for"]

Status = Literal["enforced", "accepted", "ignored", "rejected"]
METADATA = "metadata"  # the pseudo-kind for ObjectMeta


@dataclass(frozen=True, slots=True)
class Support:
    status: Status
    area: str = ""  # accepted: the work that will act on it
    note: str = ""

    def __post_init__(self) -> None:
        if (self.status == "accepted") != bool(self.area):
            raise ValueError("an accepted entry names its area, and only an accepted entry does")
        if self.status in ("ignored", "rejected") and not self.note:
            raise ValueError(f"an {self.status} entry says why in its note")

    def __str__(self) -> str:
        return f"accepted ({self.area})" if self.area else self.status


def _enforced(note: str = "") -> Support:
    return Support("enforced", note=note)


def _accepted(area: str, note: str = "") -> Support:
    return Support("accepted", area=area, note=note)


def _ignored(note: str) -> Support:
    return Support("ignored", note=note)


def _rejected(note: str) -> Support:
    return Support("rejected", note=note)


ROUTING = "outbound routing"
L4 = "TCP/TLS routing"
CORS = "CORS"
RESILIENCE = "resilience"
BALANCING = "load balancing"
MTLS = "mTLS"
JWT = "JWT authentication"
AUTHZ = "authorization"
TELEMETRY = "telemetry"
GATEWAY = "gateway"
LEGACY = "legacy translation"

_STATS_ONLY = "Names Envoy stats; pymesh emits Istio's standard metrics, not Envoy stats"
_K8S_ONLY = "Kubernetes or istiod setting with no meaning for an in-process proxy"
_ENVOY_ONLY = "Envoy or sidecar-injection setting with no meaning for an in-process proxy"
_TARGET_REF = ("Kind `Service` selects workloads whose name or `app` label is the Service name; see "
               "[Differences from Istio](differences.md)")
_DR_MERGE = ("The snapshot picks the DestinationRule for each client and merges port-level and subset "
             "policies as Istio does; the rows below say which settings inside are acted on")
_PORT_BY_NAME = "The snapshot picks port-level settings by number only"
_DEST_PORT_BY_NAME = ("Istio 1.0 field; pymesh picks the destination port by number only (unset: the request's "
                      "port, or the service's only port)")
_ROUTE_NAME = ("Names the rule in `mesh.route()` and `pymesh explain`; access logs and metrics (telemetry) do not "
               "carry it yet")
_CALLER = "Decided once, against the mesh's `Workload`"
_WARMUP = ("`pymesh/outbound/balancer.py` implements Envoy's slow start, but the runtime rebuilds a cluster's "
           "balancer without the endpoints' join times, so a new endpoint ramps together with the old ones and "
           "gets its full share at once")
_MAX_CONNECTIONS = ("The cluster's connections, over all its endpoints and clients (an endpoint with none may "
                    "always open one, as in Envoy); beyond it requests wait for a connection, and requests in "
                    "flight beyond it plus `http.http1MaxPendingRequests` get 503 UO at once")
_MIN_CLUSTER_SIZE = ("Envoy's zone-aware routing inside the client's region needs the client's own cluster "
                     "membership; pymesh balances the region's zones as one level")
_RETRY_BUDGET = ("Retries in flight may reach `max(minRetryConcurrency, percent% x requests in flight)`, "
                 "replacing `maxRetries` (Envoy's rule); on top, pymesh's own per-second budget (see resilience docs)")


def _traffic_components(prefix: str) -> dict[str, Support]:
    """The entries for ``loadBalancer``, ``connectionPool``, ``outlierDetection`` and ``tls`` under ``prefix``.

    ``prefix`` is a TrafficPolicy or a port-level entry; all four hold the same messages.
    """
    lb, pool = f"{prefix}.loadBalancer", f"{prefix}.connectionPool"
    return {
        f"{lb}.*": _enforced(),
        f"{lb}.zoneAwareLbSetting.minClusterSize": _accepted(BALANCING, _MIN_CLUSTER_SIZE),
        f"{lb}.warmupDurationSecs": _accepted(BALANCING, _WARMUP),
        f"{lb}.warmup.*": _accepted(BALANCING, _WARMUP),
        pool: _enforced(),
        f"{pool}.*": _accepted(RESILIENCE),
        f"{pool}.tcp.maxConnections": _enforced(_MAX_CONNECTIONS),
        f"{pool}.tcp.connectTimeout": _enforced("Caps each connection attempt (else MeshConfig `connectTimeout`)"),
        f"{pool}.http.maxRequestsPerConnection": _enforced("A connection closes after that many requests; "
                                                           "1 turns keep-alive off"),
        f"{pool}.http.idleTimeout": _enforced("An idle connection older than it is closed before reuse "
                                              "(unset: 5 s, httpx's default, not Istio's 1 h)"),
        f"{pool}.http": _enforced(),
        f"{pool}.http.http1MaxPendingRequests": _enforced("With `tcp.maxConnections`: requests in flight beyond "
                                                          "the two together get 503 UO at once (never queued); "
                                                          "without it nothing is pending, as in Envoy"),
        f"{pool}.http.http2MaxRequests": _enforced("Requests in flight beyond it get 503 UO at once"),
        f"{pool}.http.maxRetries": _enforced("Retries in flight beyond it are not made (flag UO)"),
        f"{prefix}.outlierDetection.*": _enforced(),
        f"{prefix}.tls.*": _enforced(),
        f"{prefix}.tls.credentialName": _ignored("Names a Kubernetes secret; give the files "
                                                 "(`clientCertificate`, `privateKey`, `caCertificates`)"),
        f"{prefix}.tls.caCrl": _accepted(MTLS, "Certificate revocation lists are not checked yet"),
    }


_TABLE: dict[str, Support] = {
    # -- every document ------------------------------------------------------------------
    "metadata": _ignored("Kubernetes bookkeeping"),
    "metadata.name": _enforced("With kind and namespace, the identity: a later document with the same "
                               "identity replaces the earlier, as `kubectl apply` does"),
    "metadata.namespace": _enforced("Unset: the namespace the loader is given"),
    "metadata.creationTimestamp": _enforced("Orders the oldest-wins decisions (VirtualService host ownership, "
                                            "DestinationRule merging)"),
    "metadata.labels": _ignored("Labels on config objects select nothing"),
    "metadata.annotations": _enforced("Istio acts only on `istio.io/dry-run` (AuthorizationPolicy): such a "
                                      "policy is evaluated (its verdict kept apart) but never enforced"),
    # -- networking.istio.io -------------------------------------------------------------------
    "VirtualService": _accepted(ROUTING),
    "VirtualService.hosts": _enforced("Short names expand in the VirtualService's namespace; for sidecars "
                                      "the oldest VirtualService owns a host"),
    "VirtualService.gateways": _enforced("Decides whether the rules apply at sidecars (`mesh`) or to the "
                                         "named gateways"),
    "VirtualService.exportTo": _enforced(),
    "VirtualService.http": _enforced("Tried in order, the first rule whose `match` holds wins; a host a "
                                     "VirtualService owns that no rule matches gets 404 NR"),
    "VirtualService.http.name": _enforced(_ROUTE_NAME),
    "VirtualService.http.match.*": _enforced(),
    "VirtualService.http.match.name": _enforced(_ROUTE_NAME),
    "VirtualService.http.match.sourceLabels": _enforced(_CALLER),
    "VirtualService.http.match.sourceNamespace": _enforced(_CALLER),
    "VirtualService.http.match.gateways": _enforced(_CALLER),
    "VirtualService.http.match.statPrefix": _ignored(_STATS_ONLY),
    "VirtualService.http.route.*": _enforced(),
    "VirtualService.http.route.destination.port.name": _accepted(ROUTING, _DEST_PORT_BY_NAME),
    "VirtualService.http.redirect.*": _enforced(),
    "VirtualService.http.directResponse.*": _enforced(),
    "VirtualService.http.delegate.*": _enforced(),
    "VirtualService.http.rewrite.*": _enforced(),
    "VirtualService.http.headers.*": _enforced(),
    "VirtualService.http.appendHeaders": _enforced(),
    "VirtualService.http.removeResponseHeaders": _enforced(),
    "VirtualService.http.appendResponseHeaders": _enforced(),
    "VirtualService.http.removeRequestHeaders": _enforced(),
    "VirtualService.http.appendRequestHeaders": _enforced(),
    "VirtualService.http.timeout": _enforced("Caps every try and backoff until the response headers arrive (not "
                                             "the body; see [Differences from Istio](differences.md)); it starts "
                                             "after an injected delay, as in Envoy"),
    "VirtualService.http.retries.*": _enforced(),
    "VirtualService.http.retries.retryOn": _enforced("`retriable-headers` and `http3-post-connect-failure` match "
                                                     "nothing"),
    "VirtualService.http.retries.retryIgnorePreviousHosts": _enforced("Dropped when the destination uses "
                                                                      "consistent hashing, as in Istio"),
    "VirtualService.http.fault.*": _enforced(),
    "VirtualService.http.fault.delay.exponentialDelay": _rejected("Istio does not support it either"),
    "VirtualService.http.fault.abort.http2Error": _rejected("Istio does not support it either"),
    "VirtualService.http.mirror.*": _enforced(),
    "VirtualService.http.mirror.port.name": _accepted(ROUTING, _DEST_PORT_BY_NAME),
    "VirtualService.http.mirrors.*": _enforced(),
    "VirtualService.http.mirrors.destination.port.name": _accepted(ROUTING, _DEST_PORT_BY_NAME),
    "VirtualService.http.mirrorPercentage.*": _enforced(),
    "VirtualService.http.mirrorPercent": _enforced(),
    "VirtualService.http.corsPolicy.*": _accepted(CORS, "Shown by `mesh.route()` and `pymesh explain`; no "
                                                  "preflight answers or CORS response headers yet"),
    "VirtualService.http.websocketUpgrade": _ignored("WebSocket upgrades are always allowed"),
    "VirtualService.tcp.*": _accepted(L4),
    "VirtualService.tcp.match.sourceSubnet": _ignored("Hidden in Istio's API and never used"),
    "VirtualService.tls.*": _accepted(L4),
    "VirtualService.tls.match.sourceSubnet": _ignored("Never used by Istio"),
    "DestinationRule": _accepted(RESILIENCE),
    "DestinationRule.host": _enforced("Short names expand in the DestinationRule's namespace; the most "
                                      "specific host wins"),
    "DestinationRule.exportTo": _enforced(),
    "DestinationRule.workloadSelector.*": _enforced(),
    "DestinationRule.subsets": _enforced(),
    "DestinationRule.subsets.name": _enforced(),
    "DestinationRule.subsets.labels": _enforced(),
    "DestinationRule.trafficPolicy": _enforced(_DR_MERGE),
    "DestinationRule.trafficPolicy.portLevelSettings": _enforced(),
    "DestinationRule.trafficPolicy.portLevelSettings.port": _enforced(),
    "DestinationRule.trafficPolicy.portLevelSettings.port.number": _enforced(),
    "DestinationRule.trafficPolicy.portLevelSettings.port.name": _accepted(ROUTING, _PORT_BY_NAME),
    **_traffic_components("DestinationRule.trafficPolicy"),
    **_traffic_components("DestinationRule.trafficPolicy.portLevelSettings"),
    "DestinationRule.trafficPolicy.tunnel.*": _accepted(L4),
    "DestinationRule.trafficPolicy.proxyProtocol.*": _accepted(L4),
    "DestinationRule.trafficPolicy.retryBudget.*": _enforced(_RETRY_BUDGET),
    "DestinationRule.subsets.trafficPolicy": _enforced(_DR_MERGE),
    "DestinationRule.subsets.trafficPolicy.portLevelSettings": _enforced(),
    "DestinationRule.subsets.trafficPolicy.portLevelSettings.port": _enforced(),
    "DestinationRule.subsets.trafficPolicy.portLevelSettings.port.number": _enforced(),
    "DestinationRule.subsets.trafficPolicy.portLevelSettings.port.name": _accepted(ROUTING, _PORT_BY_NAME),
    **_traffic_components("DestinationRule.subsets.trafficPolicy"),
    **_traffic_components("DestinationRule.subsets.trafficPolicy.portLevelSettings"),
    "DestinationRule.subsets.trafficPolicy.tunnel.*": _accepted(L4),
    "DestinationRule.subsets.trafficPolicy.proxyProtocol.*": _accepted(L4),
    "DestinationRule.subsets.trafficPolicy.retryBudget.*": _enforced(_RETRY_BUDGET),
    "ServiceEntry": _accepted(ROUTING),
    "ServiceEntry.hosts": _enforced("Short names expand in the ServiceEntry's namespace"),
    "ServiceEntry.ports.*": _enforced(),
    "ServiceEntry.resolution": _enforced("DNS with no endpoints: the host itself is resolved"),
    "ServiceEntry.endpoints.*": _enforced(),
    "ServiceEntry.workloadSelector.*": _enforced("Selects WorkloadEntries in the ServiceEntry's namespace"),
    "ServiceEntry.exportTo": _enforced(),
    "ServiceEntry.addresses": _accepted(L4),
    "ServiceEntry.location": _accepted(MTLS),
    "ServiceEntry.subjectAltNames": _enforced("Expected server identities for ISTIO_MUTUAL (secure naming)"),
    "WorkloadEntry": _enforced("An endpoint of the ServiceEntries whose workloadSelector selects it"),
    "Gateway": _accepted(GATEWAY),
    "Gateway.servers.port.targetPort": _rejected("Has no effect on a Gateway; a non-zero value is an error, "
                                                 "as in Istio"),
    # -- security.istio.io -----------------------------------------------------------------------
    "PeerAuthentication": _enforced("By the inbound middleware and `pymesh.serve` (at the TLS layer)"),
    "RequestAuthentication": _enforced("By the inbound middleware"),
    "RequestAuthentication.targetRef.kind": _accepted(JWT, _TARGET_REF),
    "RequestAuthentication.targetRefs.kind": _accepted(JWT, _TARGET_REF),
    "AuthorizationPolicy": _enforced("By the inbound middleware"),
    "AuthorizationPolicy.targetRef.kind": _accepted(AUTHZ, _TARGET_REF),
    "AuthorizationPolicy.targetRefs.kind": _accepted(AUTHZ, _TARGET_REF),
    # -- Istio 1.0/1.1 APIs ------------------------------------------------------------------------
    "Policy": _enforced("Translated at load; enforced by the inbound middleware"),
    "Policy.targets.labels": _ignored("Never implemented by Istio"),
    "MeshPolicy": _enforced("Translated at load; enforced by the inbound middleware"),
    "MeshPolicy.targets.labels": _ignored("Never implemented by Istio"),
    "ClusterRbacConfig": _enforced("Translated at load; enforced by the inbound middleware"),
    "ClusterRbacConfig.inclusion.workloadSelectors.*": _ignored("Never implemented by Istio"),
    "ClusterRbacConfig.exclusion.workloadSelectors.*": _ignored("Never implemented by Istio"),
    "RbacConfig": _enforced("Translated at load; enforced by the inbound middleware"),
    "RbacConfig.inclusion.workloadSelectors.*": _ignored("Never implemented by Istio"),
    "RbacConfig.exclusion.workloadSelectors.*": _ignored("Never implemented by Istio"),
    "ServiceRole": _enforced("Translated at load; enforced by the inbound middleware"),
    "ServiceRoleBinding": _enforced("Translated at load; enforced by the inbound middleware"),
    "rule": _enforced("Translated at load; enforced by the inbound middleware"),
    "handler": _enforced("Translated at load; enforced by the inbound middleware"),
    "instance": _enforced("Translated at load; enforced by the inbound middleware"),
    "listchecker": _enforced("Translated at load; enforced by the inbound middleware; a `providerUrl` list is "
                             "fetched every `refreshInterval` and dropped after `ttl`"),
    "listchecker.cachingInterval": _ignored("Every request is checked afresh; nothing to cache"),
    "listchecker.cachingUseCount": _ignored("Every request is checked afresh; nothing to cache"),
    "denier": _enforced("Translated at load; enforced by the inbound middleware"),
    "listentry": _enforced("Translated at load; enforced by the inbound middleware"),
    "checknothing": _enforced("Translated at load; enforced by the inbound middleware"),
    # -- MeshConfig --------------------------------------------------------------------------------
    "MeshConfig": _ignored("Kubernetes, istiod or Envoy settings with no meaning for an in-process proxy"),
    "MeshConfig.trustDomain": _enforced(),
    "MeshConfig.rootNamespace": _enforced("Policies and DestinationRules here apply mesh-wide"),
    "MeshConfig.trustDomainAliases": _enforced("Peers from these trust domains verify as if from the mesh's own"),
    "MeshConfig.outboundTrafficPolicy.*": _enforced("`REGISTRY_ONLY`: a host outside the registry gets 502 NR"),
    "MeshConfig.pathNormalization.*": _enforced("Escaped slashes the level keeps are refused with 400"),
    "MeshConfig.defaultHttpRetryPolicy.*": _enforced("For routes without `retries` and services without a "
                                                     "VirtualService; a route's `retries` replaces it whole"),
    "MeshConfig.connectTimeout": _accepted(RESILIENCE),
    "MeshConfig.tcpKeepalive": _accepted(RESILIENCE),
    "MeshConfig.defaultTrafficPolicy": _accepted(RESILIENCE),
    "MeshConfig.enableAutoMtls": _enforced("mTLS toward endpoints labelled `security.istio.io/tlsMode: "
                                           "istio` when the workload has an identity"),
    "MeshConfig.caCertificates": _accepted(MTLS),
    "MeshConfig.verifyCertificateAtClient": _accepted(MTLS),
    "MeshConfig.meshMtls": _accepted(MTLS),
    "MeshConfig.tlsDefaults": _accepted(MTLS),
    "MeshConfig.enableTracing": _accepted(TELEMETRY),
    "MeshConfig.accessLogFile": _accepted(TELEMETRY),
    "MeshConfig.accessLogFormat": _accepted(TELEMETRY),
    "MeshConfig.accessLogEncoding": _accepted(TELEMETRY),
    "MeshConfig.defaultProviders": _accepted(TELEMETRY),
    "MeshConfig.extensionProviders.*": _accepted(AUTHZ, "CUSTOM AuthorizationPolicy providers; tracing and "
                                                 "access-log providers for telemetry"),
    "MeshConfig.extensionProviders.envoyExtAuthzHttp.*": _enforced("The CUSTOM AuthorizationPolicy authorizer, "
                                                                   "asked over HTTP through the mesh's client"),
    "MeshConfig.extensionProviders.envoyExtAuthzGrpc.*": _accepted(AUTHZ, "gRPC authorizers are not called: "
                                                                   "a CUSTOM policy naming one denies"),
    "MeshConfig.localityLbSetting.*": _enforced("A DestinationRule's `localityLbSetting` or `zoneAwareLbSetting` "
                                                "replaces it whole"),
    "MeshConfig.h2UpgradePolicy": _accepted(ROUTING),
    "MeshConfig.dnsRefreshRate": _accepted(ROUTING),
    "MeshConfig.serviceSettings": _accepted(ROUTING),
    "MeshConfig.defaultServiceExportTo": _accepted(ROUTING),
    "MeshConfig.defaultVirtualServiceExportTo": _accepted(ROUTING),
    "MeshConfig.defaultDestinationRuleExportTo": _accepted(ROUTING),
    "MeshConfig.shadowHostSuffix": _enforced("pymesh's own setting: Istio 1.27 and earlier append `-shadow` to a "
                                             "mirrored request's host"),
    "MeshConfig.proxyListenPort": _ignored(_ENVOY_ONLY),
    "MeshConfig.proxyInboundListenPort": _ignored(_ENVOY_ONLY),
    "MeshConfig.proxyHttpPort": _ignored(_ENVOY_ONLY),
    "MeshConfig.protocolDetectionTimeout": _ignored(_ENVOY_ONLY),
    "MeshConfig.enableEnvoyAccessLogService": _ignored(_ENVOY_ONLY),
    "MeshConfig.disableEnvoyListenerLog": _ignored(_ENVOY_ONLY),
    "MeshConfig.defaultConfig": _ignored(_ENVOY_ONLY),
    "MeshConfig.inboundTrafficPolicy": _ignored(_ENVOY_ONLY),
    "MeshConfig.ingressClass": _ignored(_K8S_ONLY),
    "MeshConfig.ingressService": _ignored(_K8S_ONLY),
    "MeshConfig.ingressControllerMode": _ignored(_K8S_ONLY),
    "MeshConfig.ingressSelector": _ignored(_K8S_ONLY),
    "MeshConfig.configSources": _ignored(_K8S_ONLY),
    "MeshConfig.certificates": _ignored(_K8S_ONLY),
    "MeshConfig.ca": _ignored(_K8S_ONLY),
    "MeshConfig.discoverySelectors": _ignored(_K8S_ONLY),
    "MeshConfig.enablePrometheusMerge": _ignored(_K8S_ONLY),
    "MeshConfig.serviceScopeConfigs": _ignored(_K8S_ONLY),
    "MeshConfig.thriftConfig": _ignored(_ENVOY_ONLY),
    "MeshConfig.inboundClusterStatName": _ignored(_STATS_ONLY),
    "MeshConfig.outboundClusterStatName": _ignored(_STATS_ONLY),
    "MeshConfig.disablePolicyChecks": _accepted(LEGACY),
    "MeshConfig.policyCheckFailOpen": _accepted(LEGACY),
    "MeshConfig.authPolicy": _accepted(LEGACY),
    "MeshConfig.mixerCheckServer": _ignored("Mixer is not a separate server in pymesh"),
    "MeshConfig.mixerReportServer": _ignored("Mixer is not a separate server in pymesh"),
    "MeshConfig.mixerAddress": _ignored("Mixer is not a separate server in pymesh"),
    "MeshConfig.enableClientSidePolicyCheck": _ignored("Mixer is not a separate server in pymesh"),
    "MeshConfig.sidecarToTelemetrySessionAffinity": _ignored("Mixer is not a separate server in pymesh"),
    "MeshConfig.rdsRefreshDelay": _ignored(_ENVOY_ONLY),
    "MeshConfig.sdsUdsPath": _ignored(_ENVOY_ONLY),
    "MeshConfig.sdsRefreshDelay": _ignored(_ENVOY_ONLY),
    "MeshConfig.enableSdsTokenMount": _ignored(_ENVOY_ONLY),
}

SUPPORT: Mapping[str, Support] = MappingProxyType(_TABLE)


def parse_pattern(pattern: str) -> tuple[str, str, bool]:
    """``"Kind.a.b.*"`` -> ``("Kind", "a.b", True)``: kind, field path, and whether it covers a subtree.

    ``"Kind"`` (the kind's default) is ``("Kind", "", True)``.
    """
    kind, _, path = pattern.partition(".")
    if not path or path == "*":
        return kind, "", True
    if path.endswith(".*"):
        return kind, path[:-2], True
    return kind, path, False


_EXACT: dict[tuple[str, str], tuple[str, Support]] = {}
_SUBTREE: dict[tuple[str, str], tuple[str, Support]] = {}
for _pattern, _support in _TABLE.items():
    _kind, _path, _subtree = parse_pattern(_pattern)
    (_SUBTREE if _subtree else _EXACT)[(_kind, _path)] = (_pattern, _support)


def lookup(kind: str, path: str = "") -> tuple[str, Support]:
    """The pattern that decides field ``path`` of ``kind`` (dotted wire names, "" for the kind), and its entry.

    Raises ``KeyError`` for a kind the table does not list.
    """
    exact = _EXACT.get((kind, path))
    if exact is not None:
        return exact
    while path:
        found = _SUBTREE.get((kind, path))
        if found is not None:
            return found
        path = path.rpartition(".")[0]
    return _SUBTREE[(kind, "")]


def support_for(kind: str, path: str = "") -> Support:
    """The support status of field ``path`` of ``kind`` (see :func:`lookup`)."""
    return lookup(kind, path)[1]
