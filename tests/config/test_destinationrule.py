"""DestinationRule models: decoded values, Istio's validation rules, and the conformance corpus."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.config.decode import INVALID, Report, decode
from pymesh.config.networking.destinationrule import (
    KINDS,
    DestinationRule,
    TrafficPolicy,
)

SPECS: dict[str, type[Any]] = {k.kind: k.spec for k in KINDS}


def load(text: str, namespace: str = "default") -> tuple[Any, Report]:
    r = Report("t.yaml", 0)
    r.namespace = namespace
    node = yaml.compose(textwrap.dedent(text))
    assert node is not None
    return decode(DestinationRule, node, r, ("spec",)), r


def errors(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "error"]


def warnings(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "warning"]


def test_kinds() -> None:
    assert [(k.group, k.kind, k.versions) for k in KINDS] == [
        ("networking.istio.io", "DestinationRule", ("v1", "v1beta1", "v1alpha3")),
    ]
    assert SPECS["DestinationRule"] is DestinationRule


# -- valid input, decoded values ------------------------------------------------------------------


def test_full_rule_values() -> None:
    spec, r = load("""
        host: reviews.prod.svc.cluster.local
        exportTo: ["."]
        trafficPolicy:
          loadBalancer:
            consistentHash:
              httpCookie: {name: user, path: /, ttl: 0s, attributes: [{name: SameSite, value: Strict}]}
              ringHash: {minimumRingSize: 2048}
            localityLbSetting:
              distribute:
              - from: us-west/zone1/*
                to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
            warmup: {duration: 1m, minimumPercent: 5, aggression: 2}
          connectionPool:
            tcp:
              maxConnections: 100
              connectTimeout: 30ms
              tcpKeepalive: {probes: 3, time: 2h, interval: 75s}
              idleTimeout: 0s
            http:
              http1MaxPendingRequests: 1
              maxRequestsPerConnection: 1
              h2UpgradePolicy: UPGRADE
              http2KeepAlive: {interval: 15s, timeout: 5s}
          outlierDetection:
            consecutive5xxErrors: 0
            consecutiveGatewayErrors: 7
            interval: 5.000s
            baseEjectionTime: 3m
            maxEjectionPercent: 100
            outlierDetectionHttpErrorCodes: [503, 429]
          tls: {mode: SIMPLE, sni: reviews.example.com, insecureSkipVerify: false}
          retryBudget: {percent: 25, minRetryConcurrency: 5, budgetInterval: 0s}
        subsets:
        - name: v1
          labels: {version: v1}
        - name: v2
          labels: {version: v2}
          trafficPolicy: {loadBalancer: {simple: RANDOM}}
    """)
    assert errors(r) == []
    assert warnings(r) == []
    assert spec.host == "reviews.prod.svc.cluster.local"
    assert spec.export_to == (".",)
    tp = spec.traffic_policy
    ch = tp.load_balancer.consistent_hash
    assert tp.load_balancer.simple is None
    assert ch.http_cookie.name == "user"
    assert ch.http_cookie.ttl == 0.0
    assert ch.http_cookie.attributes[0].value == "Strict"
    assert ch.ring_hash.minimum_ring_size == 2048
    assert ch.maglev is None
    assert tp.load_balancer.locality_lb_setting.distribute[0].from_ == "us-west/zone1/*"
    assert tp.load_balancer.locality_lb_setting.distribute[0].to == {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
    assert tp.load_balancer.warmup.duration == 60.0
    assert tp.load_balancer.warmup.minimum_percent == 5.0
    assert tp.load_balancer.warmup.aggression == 2.0
    tcp = tp.connection_pool.tcp
    assert tcp.max_connections == 100
    assert tcp.connect_timeout == pytest.approx(0.03)
    assert tcp.tcp_keepalive.time == 7200.0
    assert tcp.tcp_keepalive.probes == 3
    assert tcp.idle_timeout == 0.0
    assert tcp.max_connection_duration is None
    http = tp.connection_pool.http
    assert http.http1_max_pending_requests == 1
    assert http.http2_max_requests == 0
    assert http.h2_upgrade_policy == "UPGRADE"
    assert (http.http2_keep_alive.interval, http.http2_keep_alive.timeout) == (15.0, 5.0)
    od = tp.outlier_detection
    # UInt32Value wrappers: an explicit 0 differs from unset.
    assert od.consecutive_5xx_errors == 0
    assert od.consecutive_gateway_errors == 7
    assert od.consecutive_local_origin_failures is None
    assert od.consecutive_errors is None
    assert od.interval == 5.0
    assert od.base_ejection_time == 180.0
    assert od.max_ejection_percent == 100
    assert od.outlier_detection_http_error_codes == (503, 429)
    assert tp.tls.mode == "SIMPLE"
    assert tp.tls.insecure_skip_verify is False
    assert tp.retry_budget.percent == 25.0
    assert tp.retry_budget.budget_interval == 0.0
    assert [s.name for s in spec.subsets] == ["v1", "v2"]
    assert spec.subsets[0].traffic_policy is None
    assert spec.subsets[1].traffic_policy.load_balancer.simple == "RANDOM"
    assert spec.subset("v2") is spec.subsets[1]
    assert spec.subset("v3") is None


def test_defaults_are_unset() -> None:
    spec, r = load("""
        host: "*"
        trafficPolicy: {outlierDetection: {}, tls: {}}
    """)
    assert errors(r) == []
    od = spec.traffic_policy.outlier_detection
    assert (od.consecutive_5xx_errors, od.consecutive_gateway_errors, od.interval) == (None, None, None)
    assert spec.traffic_policy.tls.mode == "DISABLE"
    assert spec.traffic_policy.tls.insecure_skip_verify is None
    assert spec.subsets == ()
    assert spec.workload_selector is None


def test_for_port_first_match_wins() -> None:
    spec, r = load("""
        host: www.googleapis.com
        trafficPolicy:
          loadBalancer: {simple: ROUND_ROBIN}
          portLevelSettings:
          - port: {number: 443}
            tls: {mode: SIMPLE}
          - port: {number: 80}
            loadBalancer: {simple: RANDOM}
          - port: {number: 443}
            tls: {mode: DISABLE}
    """)
    assert errors(r) == []
    assert warnings(r) == [("spec.trafficPolicy.portLevelSettings[2].port",
                            "portLevelSettings has another entry for port 443; only the first one applies")]
    tp: TrafficPolicy = spec.traffic_policy
    entry = tp.for_port(443)
    assert entry is tp.port_level_settings[0]
    assert entry.tls is not None
    assert entry.tls.mode == "SIMPLE"
    assert entry.load_balancer is None
    assert tp.for_port(80) is tp.port_level_settings[1]
    assert tp.for_port(8080) is None
    assert TrafficPolicy().for_port(80) is None


def test_for_port_legacy_name_selector() -> None:
    spec, r = load("""
        host: reviews
        trafficPolicy:
          portLevelSettings:
          - port: {name: http}
            connectionPool: {tcp: {maxConnections: 5}}
    """)
    assert errors(r) == []
    assert warnings(r) == [("spec.trafficPolicy.portLevelSettings[0].port.name",
                            "port selection by name was removed after Istio 1.1; use number")]
    tp = spec.traffic_policy
    assert tp.for_port(9080) is None
    assert tp.for_port(9080, name="http") is tp.port_level_settings[0]


def test_consecutive_errors_is_deprecated_but_kept() -> None:
    spec, r = load("""
        host: recommendation
        trafficPolicy:
          outlierDetection: {consecutiveErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
    """)
    assert errors(r) == []
    assert warnings(r) == [(
        "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        "current Istio ignores consecutiveErrors since 1.7; pymesh honours it as gateway errors, "
        "as Istio 1.1–1.6 did",
    )]
    assert spec.traffic_policy.outlier_detection.consecutive_errors == 1
    assert spec.traffic_policy.outlier_detection.consecutive_gateway_errors is None


@pytest.mark.parametrize(("text", "path", "fragment"), [
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {simple: LEAST_CONN}}",
                 "spec.trafficPolicy.loadBalancer.simple", "use LEAST_REQUEST", id="least-conn"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {minimumRingSize: 1024}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize", "ringHash.minimumRingSize",
                 id="minimum-ring-size"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {warmupDurationSecs: 10s}}",
                 "spec.trafficPolicy.loadBalancer.warmupDurationSecs", "use warmup.duration", id="warmup-secs"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}]}}}",
                 "spec.trafficPolicy.loadBalancer", "outlier detection policy must be provided", id="failover"),
    pytest.param("host: a.b\nworkloadSelector: {}\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL}}",
                 "spec.workloadSelector", "without labels", id="empty-selector"),
])
def test_warnings(text: str, path: str, fragment: str) -> None:
    spec, r = load(text)
    assert spec is not INVALID
    assert errors(r) == []
    assert [(p, fragment in m) for p, m in warnings(r)] == [(path, True)]


def test_snake_case_and_locality_settings() -> None:
    spec, r = load("""
        host: "*.tutorial.svc.cluster.local"
        traffic_policy:
          outlier_detection: {consecutive_5xx_errors: 3, split_external_local_origin_errors: true,
                              consecutive_local_origin_failures: 2}
          load_balancer:
            locality_lb_setting:
              enabled: true
              failover: [{from: us-east, to: eu-west}]
              failover_priority: [topology.istio.io/network]
    """)
    assert errors(r) == []
    assert warnings(r) == []
    tp = spec.traffic_policy
    assert tp.outlier_detection.consecutive_5xx_errors == 3
    assert tp.outlier_detection.consecutive_local_origin_failures == 2
    loc = tp.load_balancer.locality_lb_setting
    assert loc.enabled is True
    assert loc.failover[0].from_ == "us-east"
    assert loc.failover[0].to == "eu-west"


def test_maglev_and_tunnel() -> None:
    spec, r = load("""
        host: db.example.com
        trafficPolicy:
          loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}
          tunnel: {targetHost: proxy.example.com, targetPort: 8443}
    """)
    assert errors(r) == []
    tp = spec.traffic_policy
    assert tp.load_balancer.consistent_hash.maglev.table_size == 65537
    assert tp.tunnel.protocol == "CONNECT"
    assert tp.tunnel.target_port == 8443


def test_workload_selector_own_namespace() -> None:
    spec, r = load("""
        host: ratings
        workloadSelector: {matchLabels: {app: productpage}}
        exportTo: [bookinfo]
        trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
    """, namespace="bookinfo")
    assert errors(r) == []
    assert warnings(r) == []
    assert spec.workload_selector.match_labels == {"app": "productpage"}


# -- invalid input --------------------------------------------------------------------------------

INVALID_CASES = [
    pytest.param("host: foo_bar.com", "spec.host", "invalid", id="host-underscore"),
    pytest.param("host: 1.2.3.4", "spec.host", "all-numeric", id="host-ip"),
    pytest.param("trafficPolicy: {tls: {mode: SIMPLE}}", "spec.host", "missing required field", id="no-host"),
    pytest.param("host: a.b\ntrafficPolicy: {}", "spec.trafficPolicy", "at least one field", id="empty-policy"),
    pytest.param("host: a.b\nsubsets: [{name: v1}, {name: v1}]", "spec.subsets[1].name",
                 "duplicate subset names: v1", id="duplicate-subset"),
    pytest.param("host: a.b\nsubsets: [{name: v1.0}]", "spec.subsets[0].name", "subset name is invalid",
                 id="subset-not-dns-label"),
    pytest.param("host: a.b\nsubsets: [{name: ''}]", "spec.subsets[0].name", "cannot be empty", id="subset-empty"),
    pytest.param("host: a.b\nsubsets: [{labels: {a: b}}]", "spec.subsets[0].name", "missing required field",
                 id="subset-no-name"),
    pytest.param("host: a.b\nsubsets: [{name: v1, labels: {version: 'not ok'}}]", "spec.subsets[0].labels",
                 "invalid value", id="subset-labels"),
    pytest.param("host: a.b\nsubsets: [{name: v1, trafficPolicy: {}}]", "spec.subsets[0].trafficPolicy",
                 "at least one field", id="subset-empty-policy"),
    pytest.param("host: a.b\ntrafficPolicy: {connectionPool: {}}", "spec.trafficPolicy.connectionPool",
                 "connection pool must have at least one field", id="empty-pool"),
    pytest.param("host: a.b\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
                 "spec.trafficPolicy.connectionPool.tcp.maxConnections", "must be non-negative, got -1",
                 id="negative-max-conn"),
    pytest.param("host: a.b\ntrafficPolicy: {connectionPool: {http: {maxRetries: 2147483648}}}",
                 "spec.trafficPolicy.connectionPool.http.maxRetries", "at most 2147483647", id="int32-overflow"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {consecutive5xxErrors: -1}}",
                 "spec.trafficPolicy.outlierDetection.consecutive5xxErrors", "must be non-negative",
                 id="negative-5xx"),
    pytest.param("host: a.b\ntrafficPolicy: {connectionPool: {tcp: {connectTimeout: 500us}}}",
                 "spec.trafficPolicy.connectionPool.tcp.connectTimeout", "at least 1ms", id="sub-ms-timeout"),
    pytest.param("host: a.b\ntrafficPolicy: {connectionPool: {http: {idleTimeout: 0s}}}",
                 "spec.trafficPolicy.connectionPool.http.idleTimeout", "at least 1ms", id="http-idle-zero"),
    pytest.param("host: a.b\ntrafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 1s}}}}",
                 "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout", "missing required field",
                 id="keepalive-no-timeout"),
    pytest.param("host: a.b\ntrafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, "
                 "useClientProtocol: true}}}", "spec.trafficPolicy.connectionPool.http.useClientProtocol",
                 "must not be true when H2UpgradePolicy is UPGRADE", id="upgrade-and-client-protocol"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}",
                 "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "out of range 0..100",
                 id="ejection-percent"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {minHealthPercent: -1}}",
                 "spec.trafficPolicy.outlierDetection.minHealthPercent", "out of range 0..100",
                 id="health-percent"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
                 "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
                 "split external local origin errors is set to false", id="local-origin-without-split"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [600]}}",
                 "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[0]", "out of range 100..599",
                 id="error-code"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {baseEjectionTime: 1.5ms}}",
                 "spec.trafficPolicy.outlierDetection.baseEjectionTime", "millisecond precision", id="ejection-us"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: ''}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "name required for HttpCookie",
                 id="cookie-empty-name"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "missing required field",
                 id="cookie-no-name"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: u, "
                 "attributes: [{name: a}, {name: a}]}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name",
                 "duplicate cookie attribute name", id="cookie-attribute-twice"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, "
                 "useSourceIp: true}}}", "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp",
                 "only one hash key", id="two-hash-keys"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, "
                 "minimumRingSize: 10, ringHash: {minimumRingSize: 10}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
                 "only one of MinimumRingSize or Maglev/Ringhash", id="ring-size-twice"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, "
                 "ringHash: {}, maglev: {tableSize: 7}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.maglev", "only one of ringHash or maglev",
                 id="ring-and-maglev"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "tableSize must be set",
                 id="maglev-no-size"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, "
                 "maglev: {tableSize: 65536}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "prime", id="maglev-not-prime"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, "
                 "maglev: {tableSize: 5000011}}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "less than 5000011",
                 id="maglev-too-big"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
                 "spec.trafficPolicy.loadBalancer.consistentHash", "only one of simple or consistentHash",
                 id="simple-and-hash"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}",
                 "spec.trafficPolicy.loadBalancer.simple", "is not one of", id="unknown-lb"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: "
                 "[{from: us/*, to: {us/a/*: 60, us/b/*: 30}}]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "total locality weight 90",
                 id="distribute-sum"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: "
                 "[{from: us/*, to: {us/a/*: 0, us/b/*: 100}}]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to['us/a/*']",
                 "locality weight must be in range [1, 100]", id="distribute-zero-weight"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: "
                 "[{from: us/*, to: {us/a: 50, us/a/b: 50}}]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "overlap",
                 id="distribute-overlap"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: "
                 "[{from: '*/a', to: {us: 100}}]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute", "must be in the end",
                 id="distribute-inner-star"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {}, loadBalancer: {localityLbSetting: {"
                 "distribute: [{from: us, to: {eu: 100}}], failover: [{from: us, to: eu}]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.failover", "can not simultaneously specify",
                 id="distribute-and-failover"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {}, loadBalancer: {localityLbSetting: {"
                 "failover: [{from: us, to: us}]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "must specify different regions",
                 id="failover-same-region"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {}, loadBalancer: {localityLbSetting: {"
                 "failover: [{from: us/a, to: eu}]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "only specify region",
                 id="failover-zone"),
    pytest.param("host: a.b\ntrafficPolicy: {outlierDetection: {}, loadBalancer: {localityLbSetting: {"
                 "failover: [{from: us, to: eu}], failoverPriority: [topology.kubernetes.io/region]}}}",
                 "spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[0]", "topology label",
                 id="failover-and-topology-priority"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {localityLbSetting: {}, zoneAwareLbSetting: {}}}",
                 "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting", "only one of localityLbSetting",
                 id="locality-and-zone-aware"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {zoneAwareLbSetting: {minClusterSize: 0}}}",
                 "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.minClusterSize", "must be >= 1",
                 id="zone-aware-min-size"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {warmup: {duration: 10s, minimumPercent: 101}}}",
                 "spec.trafficPolicy.loadBalancer.warmup.minimumPercent", "out of range 0..100",
                 id="warmup-percent"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {warmup: {duration: 10s, aggression: 0}}}",
                 "spec.trafficPolicy.loadBalancer.warmup.aggression", "greater than 0", id="warmup-aggression"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {warmup: {duration: 0s}}}",
                 "spec.trafficPolicy.loadBalancer.warmup.duration", "at least 1ms", id="warmup-zero"),
    pytest.param("host: a.b\ntrafficPolicy: {loadBalancer: {warmupDurationSecs: 5s, warmup: {duration: 5s}}}",
                 "spec.trafficPolicy.loadBalancer.warmupDurationSecs", "only one of warmupDurationSecs or warmup",
                 id="warmup-twice"),
    pytest.param("host: a.b\ntrafficPolicy: {tls: {mode: MUTUAL, privateKey: /k.pem}}",
                 "spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls",
                 id="mutual-no-cert"),
    pytest.param("host: a.b\ntrafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem}}",
                 "spec.trafficPolicy.tls.privateKey", "private key required for mutual tls", id="mutual-no-key"),
    pytest.param("host: a.b\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem}}",
                 "spec.trafficPolicy.tls.clientCertificate", "ISTIO_MUTUAL uses the mesh certificates",
                 id="istio-mutual-cert"),
    pytest.param("host: a.b\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: s, caCertificates: /ca.pem}}",
                 "spec.trafficPolicy.tls.caCertificates", "If credentialName is set", id="credential-and-file"),
    pytest.param("host: a.b\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, "
                 "subjectAltNames: [a.b]}}", "spec.trafficPolicy.tls.insecureSkipVerify",
                 "when InsecureSkipVerify is set true", id="skip-verify-with-sans"),
    pytest.param("host: a.b\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: 'configmap://other/ca'}}",
                 "spec.trafficPolicy.tls.credentialName", "must match the configuration namespace",
                 id="configmap-other-namespace"),
    pytest.param("host: a.b\ntrafficPolicy: {tls: {mode: STRICT}}", "spec.trafficPolicy.tls.mode",
                 "is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL", id="tls-mode"),
    pytest.param("host: a.b\ntrafficPolicy: {portLevelSettings: [{tls: {mode: SIMPLE}}]}",
                 "spec.trafficPolicy.portLevelSettings[0].port", "must have valid port", id="port-policy-no-port"),
    pytest.param("host: a.b\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}]}",
                 "spec.trafficPolicy.portLevelSettings[0]", "port traffic policy must have at least one field",
                 id="port-policy-empty"),
    pytest.param("host: a.b\ntrafficPolicy: {portLevelSettings: [{port: {number: 0}, tls: {mode: SIMPLE}}]}",
                 "spec.trafficPolicy.portLevelSettings[0].port.number", "out of range 1..65535",
                 id="port-policy-port-zero"),
    pytest.param("host: a.b\ntrafficPolicy: {portLevelSettings: [{port: {}, tls: {mode: SIMPLE}}]}",
                 "spec.trafficPolicy.portLevelSettings[0].port.number", "number is required",
                 id="port-policy-port-empty"),
    pytest.param("host: a.b\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}, tunnel: {}}]}",
                 "spec.trafficPolicy.portLevelSettings[0].tunnel", "unknown field 'tunnel'",
                 id="port-policy-tunnel"),
    pytest.param("host: a.b\ntrafficPolicy: {tunnel: {targetHost: a.b, targetPort: 80}, proxyProtocol: {}}",
                 "spec.trafficPolicy.proxyProtocol", "tunnel and proxyProtocol must not be set together",
                 id="tunnel-and-proxy-protocol"),
    pytest.param("host: a.b\ntrafficPolicy: {tunnel: {targetHost: 'bad host', targetPort: 80}}",
                 "spec.trafficPolicy.tunnel.targetHost", "valid FQDN or IP", id="tunnel-host"),
    pytest.param("host: a.b\ntrafficPolicy: {tunnel: {targetHost: a.b, targetPort: 0}}",
                 "spec.trafficPolicy.tunnel.targetPort", "out of range 1..65535", id="tunnel-port"),
    pytest.param("host: a.b\ntrafficPolicy: {tunnel: {protocol: GET, targetHost: a.b, targetPort: 80}}",
                 "spec.trafficPolicy.tunnel.protocol", "is not one of CONNECT, POST", id="tunnel-protocol"),
    pytest.param("host: a.b\ntrafficPolicy: {retryBudget: {percent: 120}}",
                 "spec.trafficPolicy.retryBudget.percent", "out of range 0..100", id="retry-budget"),
    pytest.param("host: a.b\nexportTo: [default, .]", "spec.exportTo[1]", ". and current namespace",
                 id="export-dot-and-namespace"),
    pytest.param("host: a.b\nexportTo: [foo, foo]", "spec.exportTo[1]", "duplicate entries in exportTo for entry foo",
                 id="export-twice"),
    pytest.param("host: a.b\nexportTo: ['*', foo]", "spec.exportTo", "both public (*) and non-public",
                 id="export-star-and-more"),
    pytest.param("host: a.b\nexportTo: ['~']", "spec.exportTo[0]", "~ (none) is not allowed", id="export-none"),
    pytest.param("host: a.b\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [other]", "spec.exportTo",
                 "cannot have exportTo beyond current namespace", id="selector-export"),
    pytest.param("host: a.b\nworkloadSelector: {matchLabels: {app: '*'}}", "spec.workloadSelector.matchLabels",
                 "invalid value '*'", id="selector-wildcard"),
    pytest.param("host: a.b\ntrafficPolicy: {loadbalancer: {simple: RANDOM}}",
                 "spec.trafficPolicy.loadbalancer", "did you mean 'loadBalancer'", id="unknown-field"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), INVALID_CASES)
def test_invalid(text: str, path: str, fragment: str) -> None:
    _, r = load(text)
    errs = errors(r)
    assert errs, f"expected an error at {path}"
    assert errs[0][0] == path
    assert fragment in errs[0][1]


def test_all_errors_reported_together() -> None:
    _, r = load("""
        host: a_b
        subsets: [{name: v1}, {name: v1}]
        trafficPolicy: {outlierDetection: {interval: 1s}, tls: {mode: MUTUAL}}
    """)
    assert sorted(p for p, _ in errors(r)) == [
        "spec.host",
        "spec.subsets[1].name",
        "spec.trafficPolicy.tls.clientCertificate",
        "spec.trafficPolicy.tls.privateKey",
    ]


def test_structural_error_stops_enclosing_checks() -> None:
    # A value that does not decode makes its parents INVALID; their cross-field rules do not run,
    # but siblings are still checked.
    spec, r = load("""
        host: a.b
        subsets: [{name: v1}, {name: v1}]
        trafficPolicy: {outlierDetection: {maxEjectionPercent: 200}, tls: {mode: MUTUAL}}
    """)
    assert spec is INVALID
    assert sorted(p for p, _ in errors(r)) == [
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "spec.trafficPolicy.tls.clientCertificate",
        "spec.trafficPolicy.tls.privateKey",
    ]


# -- the conformance corpus -------------------------------------------------------------------------


def _documents(files: list[Path]) -> list[tuple[str, int, yaml.Node, str]]:
    out: list[tuple[str, int, yaml.Node, str]] = []
    for f in files:
        for i, doc in enumerate(yaml.compose_all(f.read_text())):
            if doc is None:
                continue
            mapping = {k.value: v for k, v in doc.value if k.value != "_err"}
            kind = mapping.get("kind")
            if kind is None or kind.value not in SPECS:
                continue
            spec: yaml.Node | None = mapping.get("spec")
            if spec is None or (isinstance(spec, yaml.ScalarNode) and spec.tag.endswith(":null")):
                spec = yaml.compose("{}")
            assert spec is not None
            meta = {k.value: v for k, v in mapping["metadata"].value} if "metadata" in mapping else {}
            namespace = meta["namespace"].value if "namespace" in meta else "default"
            out.append((f"{f.parent.name}/{f.name}", i, spec, namespace))
    return out


def _decode_doc(kind_doc: tuple[str, int, yaml.Node, str]) -> Report:
    name, index, spec, namespace = kind_doc
    r = Report(name, index)
    r.namespace = namespace
    decode(DestinationRule, spec, r, ("spec",))
    return r


def test_corpus_valid(conformance: Path) -> None:
    files = sorted([
        *conformance.glob("bookinfo/*.yaml"), *conformance.glob("istio-tutorial/*.yml"),
        *conformance.glob("istio-tutorial/*.yaml"), *conformance.glob("legacy/*"),
        *conformance.glob("validation/*-valid.yaml"),
    ])
    docs = _documents(files)
    assert len(docs) >= 26  # the corpus has 26 DestinationRules
    for doc in docs:
        r = _decode_doc(doc)
        assert errors(r) == [], f"{doc[0]} document {doc[1]}"


def test_corpus_invalid(conformance: Path) -> None:
    docs = _documents(sorted(conformance.glob("validation/*-invalid.yaml")))
    assert len(docs) == 3
    for doc in docs:
        assert errors(_decode_doc(doc)), f"{doc[0]} document {doc[1]} should be rejected"
