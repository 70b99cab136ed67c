"""Invalid configurations, every kind, through the real loader: where each finding points and what it says.

Each case is a complete ``kubectl apply``-ready YAML text loaded with
``load([Text(text, "case.yaml")], namespace="default")``. The line the finding must point
at is marked in the text with ``# <-``; the case gives the field path, the document's
kind/namespace/name and a distinctive part of the one-line reason. Two tests read the
table: one checks *where and what* (path, line, reason), the other *whose* (kind,
namespace, name), so a shortfall in one does not hide the other.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import pymesh
from pymesh.config.load import Config, Text, load
from pymesh.errors import ConfigError, Issue, MeshError

MARK = "# <-"
FILE = "case.yaml"


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    path: str
    reason: str
    kind: str
    name: str
    namespace: str = "default"
    document: int = 0
    # A known library shortfall, shown as a strict xfail: set to the BUG's description.
    bug_where: str = ""  # path/line/reason wrong
    bug_whose: str = ""  # kind/namespace/name wrong

    @property
    def yaml(self) -> str:
        return textwrap.dedent(self.text).lstrip("\n")

    @property
    def line(self) -> int:
        lines = [n for n, text in enumerate(self.yaml.splitlines(), 1) if MARK in text]
        assert len(lines) == 1, f"case {self.id}: mark exactly one line with {MARK!r}"
        return lines[0]


def rejected(text: str, namespace: str = "default", name: str = FILE) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load([Text(text, name)], namespace=namespace)
    return info.value


def the_error(case: Case) -> Issue:
    err = rejected(case.yaml)
    errors = err.errors
    assert len(errors) == 1, f"expected exactly one error, got:\n{err}"
    return errors[0]


VS_OK = """\
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata:
      name: reviews
    spec:
      hosts: [reviews]
      http:
      - route:
        - destination: {host: reviews}
"""

CASES: list[Case] = [
    # -- the envelope ----------------------------------------------------------------------------
    Case("envelope-missing-apiVersion", """
        kind: VirtualService  # <-
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
        """, "apiVersion", "missing apiVersion", "VirtualService", "reviews"),
    Case("envelope-missing-kind", """
        apiVersion: networking.istio.io/v1  # <-
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
        """, "kind", "missing kind", "", "reviews"),
    Case("envelope-null-kind", """
        apiVersion: networking.istio.io/v1
        kind:  # <-
        metadata:
          name: reviews
        """, "kind", "missing kind", "", "reviews"),
    Case("envelope-list-document", """
        - apiVersion: networking.istio.io/v1  # <-
          kind: VirtualService
        """, "", "must be a mapping with apiVersion, kind, metadata and spec", "", "", namespace=""),
    Case("envelope-scalar-document", """
        just some text  # <-
        """, "", "must be a mapping", "", "", namespace=""),
    Case("envelope-unknown-top-level-field", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        specs:  # <-
          hosts: [reviews]
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
        """, "specs", "unknown top-level field 'specs'", "VirtualService", "reviews"),
    Case("envelope-unsupported-networking-version", """
        apiVersion: networking.istio.io/v2  # <-
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
        """, "apiVersion", "unsupported apiVersion 'networking.istio.io/v2' for VirtualService",
         "VirtualService", "reviews"),
    Case("envelope-unsupported-security-version", """
        apiVersion: security.istio.io/v1alpha1  # <-
        kind: PeerAuthentication
        metadata:
          name: default
        spec:
          mtls: {mode: STRICT}
        """, "apiVersion", "(accepted: security.istio.io/v1, security.istio.io/v1beta1)",
         "PeerAuthentication", "default"),
    Case("envelope-bad-metadata-name", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: Reviews_V1  # <-
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
        """, "metadata.name", "metadata.name 'Reviews_V1' is not a valid name", "VirtualService", "Reviews_V1"),
    Case("envelope-metadata-name-too-long", f"""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: {'a' * 254}  # <-
        spec:
          host: reviews
        """, "metadata.name", "longer than 253 characters", "DestinationRule", "a" * 254),
    Case("envelope-bad-metadata-namespace", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
          namespace: Prod  # <-
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
        """, "metadata.namespace", "namespace 'Prod' is not a DNS-1123 label", "VirtualService", "reviews",
         namespace="Prod"),
    Case("envelope-missing-metadata", """
        apiVersion: networking.istio.io/v1  # <-
        kind: DestinationRule
        spec:
          host: reviews
        """, "metadata", "missing metadata", "DestinationRule", ""),
    Case("envelope-metadata-without-name", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          namespace: prod  # <-
        spec:
          host: reviews
        """, "metadata.name", "metadata.name is required", "DestinationRule", "", namespace="prod"),
    Case("envelope-metadata-is-a-list", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
        - name: reviews  # <-
        spec:
          host: reviews
        """, "metadata", "expected a mapping, got a list", "DestinationRule", ""),
    Case("envelope-bad-label-value", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
          labels:
            app: "not a label!"  # <-
        spec:
          host: reviews
        """, "metadata.labels", "invalid value 'not a label!' for label 'app'", "DestinationRule", "reviews"),
    Case("envelope-spec-is-a-list", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
        - host: reviews  # <-
        """, "spec", "expected a mapping, got a list", "DestinationRule", "reviews"),
    Case("envelope-duplicate-key-in-spec", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          host: ratings  # <-
        """, "spec.host", "duplicate key 'host' (first at line 6)", "DestinationRule", "reviews"),
    Case("envelope-duplicate-top-level-key", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        metadata:  # <-
          name: ratings
        spec:
          host: reviews
        """, "metadata", "duplicate key 'metadata' (first at line 3)", "DestinationRule", "reviews"),
    Case("envelope-yaml-syntax-error", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews: ratings  # <-
        """, "", "YAML syntax: mapping values are not allowed", "", "", namespace=""),
    Case("envelope-merge-key", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          <<: {subsets: []}  # <-
        """, "spec", "YAML merge keys (<<) are not supported", "DestinationRule", "reviews"),
    Case("envelope-flow-mapping-key", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          ? [a, b]  # <-
          : c
        """, "spec", "a field name must be a plain value", "DestinationRule", "reviews"),
    # -- YAML 1.1 surprises and spelling ---------------------------------------------------------
    Case("yaml11-on-for-a-string", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          subsets:
          - name: on  # <-
        """, "spec.subsets[0].name", "YAML reads on as a boolean; quote it ('on')", "DestinationRule", "reviews"),
    Case("yaml11-NO-as-a-label-value", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: gw
        spec:
          selector:
            country: NO  # <-
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
            hosts: ["*.example.com"]
        """, "spec.selector.country", "YAML reads NO as a boolean", "Gateway", "gw"),
    Case("yaml11-octal-010-for-a-number", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries:
              attempts: 010  # <-
        """, "spec.http[0].retries.attempts",
         "010 is not a plain decimal integer (no leading 0", "VirtualService", "reviews"),
    Case("yaml11-hex-port", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts: [api.example.com]
          ports:
          - number: 0x50  # <-
            name: http
            protocol: HTTP
        """, "spec.ports[0].number", "0x50 is not a plain decimal integer", "ServiceEntry", "ext"),
    Case("yaml11-base60-for-a-string", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - match:
            - headers:
                x-slot:
                  exact: 1:30  # <-
            route: [{destination: {host: reviews}}]
        """, "spec.http[0].match[0].headers['x-slot'].exact", "YAML 1.1 reads 1:30 as a number",
         "VirtualService", "reviews"),
    Case("yaml11-yes-for-a-bool", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - match:
            - uri: {prefix: /api}
              ignoreUriCase: yes  # <-
            route: [{destination: {host: reviews}}]
        """, "spec.http[0].match[0].ignoreUriCase", "write true or false, not 'yes'", "VirtualService", "reviews"),
    Case("yaml-float-as-a-label-value", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          subsets:
          - name: v1
            labels:
              version: 1.10  # <-
        """, "spec.subsets[0].labels.version", "expected a string, got the number '1.10'",
         "DestinationRule", "reviews"),
    Case("spelling-did-you-mean-perTryTimeout", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries:
              attempts: 3
              perTryTimout: 2s  # <-
        """, "spec.http[0].retries.perTryTimout", "unknown field 'perTryTimout' (did you mean 'perTryTimeout'?)",
         "VirtualService", "reviews"),
    Case("spelling-snake-and-camel-twice", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries:
              attempts: 3
              perTryTimeout: 2s
              per_try_timeout: 1s  # <-
        """, "spec.http[0].retries.perTryTimeout", "'per_try_timeout' repeats 'perTryTimeout'",
         "VirtualService", "reviews"),
    Case("spelling-enum-did-you-mean", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            loadBalancer:
              simple: ROUND_ROBBIN  # <-
        """, "spec.trafficPolicy.loadBalancer.simple", "(did you mean 'ROUND_ROBIN'?)", "DestinationRule", "reviews"),
    Case("spelling-enum-lowercase", """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata:
          name: default
          namespace: istio-system
        spec:
          mtls:
            mode: strict  # <-
        """, "spec.mtls.mode", "'strict' is not one of UNSET, DISABLE, PERMISSIVE, STRICT (did you mean 'STRICT'?)",
         "PeerAuthentication", "default", namespace="istio-system"),
    Case("spelling-wrong-case-field", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          TrafficPolicy:  # <-
            loadBalancer: {simple: RANDOM}
        """, "spec.TrafficPolicy", "(did you mean 'trafficPolicy'?)", "DestinationRule", "reviews"),
    # -- VirtualService ---------------------------------------------------------------------------
    Case("vs-negative-weight", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
              weight: 80
            - destination: {host: reviews, subset: v2}
              weight: -20  # <-
        """, "spec.http[0].route[1].weight", "weight -20 must be >= 0", "VirtualService", "reviews"),
    Case("vs-total-weight-zero", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}  # <-
              weight: 0
            - destination: {host: reviews, subset: v2}
              weight: 0
        """, "spec.http[0].route", "total destination weight = 0", "VirtualService", "reviews"),
    Case("vs-route-without-action", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - match:  # <-
            - uri: {prefix: /api}
        """, "spec.http[0]", "an HTTP route needs one of route, redirect, directResponse or delegate",
         "VirtualService", "reviews"),
    Case("vs-redirect-and-route", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - redirect: {uri: /v2}
            route:
            - destination: {host: reviews}  # <-
        """, "spec.http[0].route", "cannot contain both route and redirect", "VirtualService", "reviews"),
    Case("vs-bad-timeout", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            timeout: 10 seconds  # <-
        """, "spec.http[0].timeout", "invalid duration '10 seconds'", "VirtualService", "reviews"),
    Case("vs-timeout-below-1ms", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            timeout: 500us  # <-
        """, "spec.http[0].timeout", "must be at least 1ms", "VirtualService", "reviews"),
    Case("vs-timeout-as-number", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            timeout: 10  # <-
        """, "spec.http[0].timeout", "expected a string, got the number '10'", "VirtualService", "reviews"),
    Case("vs-retry-on-with-spaces", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries:
              attempts: 3
              retryOn: 5xx, connect-failure  # <-
        """, "spec.http[0].retries.retryOn", "not a valid retryOn policy (remove the spaces)",
         "VirtualService", "reviews"),
    Case("vs-retries-disabled-with-per-try-timeout", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries:
              attempts: 0
              perTryTimeout: 1s  # <-
        """, "spec.http[0].retries.perTryTimeout", "attempts are set to 0 (disabled)", "VirtualService", "reviews"),
    Case("vs-abort-status-out-of-range", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: ratings
        spec:
          hosts: [ratings]
          http:
          - fault:
              abort:
                percentage: {value: 100}
                httpStatus: 700  # <-
            route: [{destination: {host: ratings}}]
        """, "spec.http[0].fault.abort.httpStatus", "abort httpStatus 700 is not in range 200..600",
         "VirtualService", "ratings"),
    Case("vs-empty-fault", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: ratings
        spec:
          hosts: [ratings]
          http:
          - fault: {}  # <-
            route: [{destination: {host: ratings}}]
        """, "spec.http[0].fault", "fault injection must have an abort and/or a delay", "VirtualService", "ratings"),
    Case("vs-mirror-percentage-over-100", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: ratings
        spec:
          hosts: [ratings]
          http:
          - route: [{destination: {host: ratings, subset: v1}}]
            mirror: {host: ratings, subset: v2}
            mirrorPercentage:
              value: 150  # <-
        """, "spec.http[0].mirrorPercentage.value", "percentage 150.0 is out of range 0..100",
         "VirtualService", "ratings"),
    Case("vs-invalid-header-regex", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - match:
            - headers:
                user-agent:
                  regex: "(Firefox"  # <-
            route: [{destination: {host: reviews}}]
        """, "spec.http[0].match[0].headers['user-agent'].regex", "invalid RE2 regex '(Firefox'",
         "VirtualService", "reviews"),
    Case("vs-wildcard-host-on-mesh", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: everything
        spec:
          hosts:
          - "*"  # <-
          http:
          - route: [{destination: {host: reviews}}]
        """, "spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh gateway",
         "VirtualService", "everything"),
    Case("vs-bad-destination-host", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination:
                host: reviews..svc  # <-
        """, "spec.http[0].route[0].destination.host", "invalid destination host", "VirtualService", "reviews"),
    Case("vs-direct-response-status", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - directResponse:
              status: 100  # <-
        """, "spec.http[0].directResponse.status", "direct response status 100 is not in range 200..600",
         "VirtualService", "reviews"),
    Case("vs-hosts-is-a-string", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: reviews  # <-
          http:
          - route: [{destination: {host: reviews}}]
        """, "spec.hosts", "expected a list, got the string 'reviews'", "VirtualService", "reviews"),
    Case("vs-cors-unknown-method", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            corsPolicy:
              allowOrigins: [{exact: "https://example.com"}]
              allowMethods:
              - GET
              - FETCH  # <-
        """, "spec.http[0].corsPolicy.allowMethods[1]", "'FETCH' is not a supported HTTP method",
         "VirtualService", "reviews"),
    Case("vs-bad-gateway-name", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: bookinfo
        spec:
          hosts: ["bookinfo.example.com"]
          gateways:
          - istio-system/Bad_Gateway  # <-
          http:
          - route: [{destination: {host: productpage}}]
        """, "spec.gateways[0]", "invalid value for gateway name: 'Bad_Gateway'", "VirtualService", "bookinfo"),
    Case("vs-tcp-route-without-destination", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: mongo
        spec:
          hosts: [mongo]
          tcp:
          - match:  # <-
            - port: 27017
        """, "spec.tcp[0].route", "TCP route is required", "VirtualService", "mongo"),
    Case("vs-set-host-header", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
              headers:
                response:
                  set:
                    Host: example.com  # <-
        """, "spec.http[0].route[0].headers.response.set.Host", "cannot set Host header", "VirtualService", "reviews"),
    Case("vs-no-routes-at-all", """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]  # <-
        """, "spec", "http, tcp or tls must be provided in virtual service", "VirtualService", "reviews"),
    # -- DestinationRule --------------------------------------------------------------------------
    Case("dr-missing-host", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          subsets:  # <-
          - name: v1
            labels: {version: v1}
        """, "spec.host", "missing required field 'host'", "DestinationRule", "reviews"),
    Case("dr-duplicate-subset", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          subsets:
          - name: v1
            labels: {version: v1}
          - name: v1  # <-
            labels: {version: v2}
        """, "spec.subsets[1].name", "duplicate subset names: v1", "DestinationRule", "reviews"),
    Case("dr-subset-name-not-dns-label", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          subsets:
          - name: version_1  # <-
            labels: {version: v1}
        """, "spec.subsets[0].name", "subset name is invalid: version_1", "DestinationRule", "reviews"),
    Case("dr-maglev-not-prime", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            loadBalancer:
              consistentHash:
                httpHeaderName: x-user
                maglev:
                  tableSize: 1000  # <-
        """, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "must be a prime number",
         "DestinationRule", "reviews"),
    Case("dr-istio-mutual-with-certificate", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            tls:
              mode: ISTIO_MUTUAL
              clientCertificate: /etc/certs/cert.pem  # <-
        """, "spec.trafficPolicy.tls.clientCertificate", "ISTIO_MUTUAL uses the mesh certificates",
         "DestinationRule", "reviews"),
    Case("dr-mutual-without-private-key", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: external
        spec:
          host: api.example.com
          trafficPolicy:
            tls:
              mode: MUTUAL  # <-
              clientCertificate: /etc/certs/cert.pem
        """, "spec.trafficPolicy.tls.privateKey", "private key required for mutual tls", "DestinationRule", "external"),
    Case("dr-empty-connection-pool", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            connectionPool: {}  # <-
        """, "spec.trafficPolicy.connectionPool", "connection pool must have at least one field",
         "DestinationRule", "reviews"),
    Case("dr-negative-max-connections", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            connectionPool:
              tcp:
                maxConnections: -1  # <-
        """, "spec.trafficPolicy.connectionPool.tcp.maxConnections", "must be non-negative, got -1",
         "DestinationRule", "reviews"),
    Case("dr-max-ejection-over-100", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            outlierDetection:
              maxEjectionPercent: 150  # <-
        """, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "percentage 150 is out of range 0..100",
         "DestinationRule", "reviews"),
    Case("dr-locality-weights-not-100", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            loadBalancer:
              localityLbSetting:
                distribute:
                - from: us-west/zone1/*
                  to:
                    "us-west/zone1/*": 60  # <-
                    "us-west/zone2/*": 30
            outlierDetection: {consecutive5xxErrors: 5}
        """, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "total locality weight 90 != 100",
         "DestinationRule", "reviews"),
    Case("dr-empty-traffic-policy", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy: {}  # <-
        """, "spec.trafficPolicy", "traffic policy must have at least one field", "DestinationRule", "reviews"),
    Case("dr-two-hash-keys", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            loadBalancer:
              consistentHash:
                httpHeaderName: x-user
                useSourceIp: true  # <-
        """, "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp",
         "only one hash key may be set, got httpHeaderName and useSourceIp", "DestinationRule", "reviews"),
    # -- ServiceEntry -----------------------------------------------------------------------------
    Case("se-no-hosts", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          ports:  # <-
          - {number: 443, name: https, protocol: HTTPS}
          resolution: DNS
        """, "spec.hosts", "missing required field 'hosts'", "ServiceEntry", "ext"),
    Case("se-host-star", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts:
          - "*"  # <-
          ports:
          - {number: 443, name: https, protocol: HTTPS}
        """, "spec.hosts[0]", "hostname cannot be wildcard", "ServiceEntry", "ext"),
    Case("se-port-out-of-range", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts: [api.example.com]
          ports:
          - number: 99999  # <-
            name: https
            protocol: HTTPS
          resolution: DNS
        """, "spec.ports[0].number", "port 99999 is out of range 1..65535", "ServiceEntry", "ext"),
    Case("se-static-with-hostname-endpoint", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts: [api.example.com]
          ports:
          - {number: 80, name: http, protocol: HTTP}
          resolution: STATIC
          endpoints:
          - address: backend.example.com  # <-
        """, "spec.endpoints[0].address", "resolution STATIC needs IPs", "ServiceEntry", "ext"),
    Case("se-duplicate-port-number", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts: [api.example.com]
          ports:
          - {number: 80, name: http, protocol: HTTP}
          - {number: 80, name: http-alt, protocol: HTTP}  # <-
          resolution: DNS
        """, "spec.ports[1].number", "service entry port 80 already defined", "ServiceEntry", "ext"),
    Case("se-resolution-lowercase", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts: [api.example.com]
          ports:
          - {number: 80, name: http, protocol: HTTP}
          resolution: dns  # <-
        """, "spec.resolution", "(did you mean 'DNS'?)", "ServiceEntry", "ext"),
    Case("se-unsupported-protocol", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts: [api.example.com]
          ports:
          - number: 443
            name: h3
            protocol: HTTP3  # <-
          resolution: DNS
        """, "spec.ports[0].protocol", "unsupported protocol 'HTTP3'", "ServiceEntry", "ext"),
    Case("se-dns-round-robin-two-endpoints", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
        spec:
          hosts: [api.example.com]
          ports:
          - {number: 80, name: http, protocol: HTTP}
          resolution: DNS_ROUND_ROBIN
          endpoints:
          - address: a.example.com  # <-
          - address: b.example.com
        """, "spec.endpoints", "DNS_ROUND_ROBIN mode cannot have multiple endpoints", "ServiceEntry", "ext"),
    Case("se-endpoint-port-not-declared", """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext
          namespace: egress
        spec:
          hosts: [api.example.com]
          ports:
          - {number: 80, name: http, protocol: HTTP}
          resolution: STATIC
          endpoints:
          - address: 10.0.0.1
            ports:
              grpc: 9090  # <-
        """, "spec.endpoints[0].ports.grpc", "no port named 'grpc'", "ServiceEntry", "ext", namespace="egress"),
    # -- WorkloadEntry ----------------------------------------------------------------------------
    Case("we-missing-address", """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: vm1
        spec:
          labels: {app: ratings}  # <-
        """, "spec.address", "Address is required", "WorkloadEntry", "vm1"),
    Case("we-relative-unix-socket", """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: vm1
        spec:
          address: unix://var/run/app.sock  # <-
        """, "spec.address", "UDS must be an absolute path or abstract socket", "WorkloadEntry", "vm1"),
    Case("we-bad-port-name", """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: vm1
        spec:
          address: 10.0.0.7
          ports:
            http_port: 8080  # <-
        """, "spec.ports.http_port", "invalid port name 'http_port'", "WorkloadEntry", "vm1"),
    Case("we-negative-weight", """
        apiVersion: networking.istio.io/v1beta1
        kind: WorkloadEntry
        metadata:
          name: vm1
        spec:
          address: 10.0.0.7
          weight: -3  # <-
        """, "spec.weight", "value -3 must be >= 0", "WorkloadEntry", "vm1"),
    # -- Gateway ----------------------------------------------------------------------------------
    Case("gw-no-servers", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: bookinfo-gateway
        spec:
          selector:  # <-
            istio: ingressgateway
        """, "spec.servers", "gateway must have at least one server", "Gateway", "bookinfo-gateway"),
    Case("gw-https-without-tls", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: bookinfo-gateway
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 443, name: https, protocol: HTTPS}  # <-
            hosts: ["bookinfo.example.com"]
        """, "spec.servers[0].tls", "server must have TLS settings for HTTPS/TLS protocols", "Gateway",
         "bookinfo-gateway"),
    Case("gw-short-host-name", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: bookinfo-gateway
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
            hosts:
            - bookinfo  # <-
        """, "spec.servers[0].hosts[0]", "short names (non FQDN) are not allowed: 'bookinfo'", "Gateway",
         "bookinfo-gateway"),
    Case("gw-port-without-protocol", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: bookinfo-gateway
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port:
              number: 80  # <-
              name: http
            hosts: ["*"]
        """, "spec.servers[0].port.protocol", "missing required field 'protocol'", "Gateway", "bookinfo-gateway"),
    Case("gw-duplicate-port-names", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: bookinfo-gateway
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
            hosts: ["*"]
          - port:
              number: 8080
              name: http  # <-
              protocol: HTTP
            hosts: ["*"]
        """, "spec.servers[1].port.name", "port names in servers must be unique: duplicate name http", "Gateway",
         "bookinfo-gateway"),
    Case("gw-simple-tls-without-key", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: bookinfo-gateway
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: ["bookinfo.example.com"]
            tls:
              mode: SIMPLE  # <-
              serverCertificate: /etc/certs/server.pem
        """, "spec.servers[0].tls.privateKey", "SIMPLE TLS requires a private key", "Gateway", "bookinfo-gateway"),
    # -- PeerAuthentication -----------------------------------------------------------------------
    Case("pa-bad-mode", """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata:
          name: default
          namespace: foo
        spec:
          mtls:
            mode: BLAH  # <-
        """, "spec.mtls.mode", "'BLAH' is not one of UNSET, DISABLE, PERMISSIVE, STRICT", "PeerAuthentication",
         "default", namespace="foo"),
    Case("pa-port-level-without-selector", """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata:
          name: default
        spec:
          mtls: {mode: STRICT}
          portLevelMtls:
            "8080": {mode: DISABLE}  # <-
        """, "spec.portLevelMtls", "portLevelMtls requires selector", "PeerAuthentication", "default"),
    Case("pa-port-level-key-not-a-number", """
        apiVersion: security.istio.io/v1beta1
        kind: PeerAuthentication
        metadata:
          name: ratings
        spec:
          selector:
            matchLabels: {app: ratings}
          portLevelMtls:
            http: {mode: DISABLE}  # <-
        """, "spec.portLevelMtls", "portLevelMtls key 'http' is not a port number", "PeerAuthentication", "ratings"),
    # -- RequestAuthentication --------------------------------------------------------------------
    Case("ra-jwks-uri-without-scheme", """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata:
          name: jwt
        spec:
          jwtRules:
          - issuer: testing@secure.istio.io
            jwksUri: raw.githubusercontent.com/istio/istio/jwks.json  # <-
        """, "spec.jwtRules[0].jwksUri", "url must have scheme http:// or https://", "RequestAuthentication", "jwt"),
    Case("ra-claim-to-pseudo-header", """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata:
          name: jwt
        spec:
          jwtRules:
          - issuer: testing@secure.istio.io
            outputClaimToHeaders:
            - header: ":authority"  # <-
              claim: sub
        """, "spec.jwtRules[0].outputClaimToHeaders[0].header", "header name ':authority' is not a valid header name",
         "RequestAuthentication", "jwt"),
    Case("ra-selector-and-target-ref", """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata:
          name: jwt
        spec:
          selector:
            matchLabels: {app: productpage}
          targetRef:
            kind: Service  # <-
            group: ""
            name: productpage
        """, "spec.targetRef", "only one of targetRefs or selector can be set", "RequestAuthentication", "jwt"),
    Case("ra-inline-jwks-not-json", """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata:
          name: jwt
        spec:
          jwtRules:
          - issuer: testing@secure.istio.io
            jwks: "{keys: ["  # <-
        """, "spec.jwtRules[0].jwks", "jwks parse error: not valid JSON", "RequestAuthentication", "jwt"),
    # -- AuthorizationPolicy ----------------------------------------------------------------------
    Case("authz-deny-without-rules", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: deny-all
        spec:
          action: DENY  # <-
        """, "spec.rules", "DENY action without `rules` is meaningless", "AuthorizationPolicy", "deny-all"),
    Case("authz-unknown-condition-key", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: allow-get
        spec:
          rules:
          - when:
            - key: request.header[x-user]  # <-
              values: [alice]
        """, "spec.rules[0].when[0].key", "unknown attribute 'request.header[x-user]'", "AuthorizationPolicy",
         "allow-get"),
    Case("authz-named-port", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: allow-http
        spec:
          rules:
          - to:
            - operation:
                ports:
                - http  # <-
        """, "spec.rules[0].to[0].operation.ports[0]", "bad port 'http'", "AuthorizationPolicy", "allow-http"),
    Case("authz-bad-ip-block", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: allow-office
        spec:
          rules:
          - from:
            - source:
                ipBlocks:
                - 10.0.0.0/33  # <-
        """, "spec.rules[0].from[0].source.ipBlocks[0]", "bad CIDR range '10.0.0.0/33'", "AuthorizationPolicy",
         "allow-office"),
    Case("authz-action-typo", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: allow-all
        spec:
          action: ALOW  # <-
          rules: [{}]
        """, "spec.action", "(did you mean 'ALLOW'?)", "AuthorizationPolicy", "allow-all"),
    Case("authz-empty-from", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: allow-nobody
        spec:
          rules:
          - from: []  # <-
        """, "spec.rules[0].from", "`from` must not be empty", "AuthorizationPolicy", "allow-nobody"),
    Case("authz-custom-without-provider", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: ext-authz
        spec:
          action: CUSTOM  # <-
          rules: [{}]
        """, "spec.provider", "`provider.name` must not be empty", "AuthorizationPolicy", "ext-authz"),
    # -- authentication.istio.io/v1alpha1 Policy and MeshPolicy ----------------------------------
    Case("authn-policy-target-not-a-label", """
        apiVersion: authentication.istio.io/v1alpha1
        kind: Policy
        metadata:
          name: reviews-policy
        spec:
          targets:
          - name: reviews.default  # <-
          peers:
          - mtls: {}
        """, "spec.targets[0].name", "target name 'reviews.default' must be a valid label", "Policy",
         "reviews-policy"),
    Case("authn-policy-without-targets-not-default", """
        apiVersion: authentication.istio.io/v1alpha1
        kind: Policy
        metadata:
          name: namespace-wide
        spec:
          peers:  # <-
          - mtls: {}
        """, "spec", "authentication policy with no target rules must be named 'default'", "Policy",
         "namespace-wide"),
    Case("authn-mesh-policy-not-default", """
        apiVersion: authentication.istio.io/v1alpha1
        kind: MeshPolicy
        metadata:
          name: mesh-wide
        spec:
          peers:  # <-
          - mtls: {}
        """, "spec", "cluster-scoped authentication policy name must be 'default'", "MeshPolicy", "mesh-wide",
         namespace=""),
    Case("authn-jwt-without-issuer", """
        apiVersion: authentication.istio.io/v1alpha1
        kind: Policy
        metadata:
          name: default
        spec:
          origins:
          - jwt:
              jwksUri: https://example.com/jwks.json  # <-
        """, "spec.origins[0].jwt.issuer", "issuer must be set", "Policy", "default"),
    Case("authn-mtls-mode-typo", """
        apiVersion: authentication.istio.io/v1alpha1
        kind: MeshPolicy
        metadata:
          name: default
        spec:
          peers:
          - mtls:
              mode: STRICTLY  # <-
        """, "spec.peers[0].mtls.mode", "'STRICTLY' is not one of STRICT, PERMISSIVE", "MeshPolicy", "default",
         namespace=""),
    # -- rbac.istio.io/v1alpha1 -------------------------------------------------------------------
    Case("rbac-mode-ON-unquoted", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ClusterRbacConfig
        metadata:
          name: rbac
        spec:
          mode: ON  # <-
        """, "spec.mode", "YAML reads ON as a boolean", "ClusterRbacConfig", "rbac", namespace=""),
    Case("rbac-cluster-config-name", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ClusterRbacConfig
        metadata:
          name: rbac
        spec:
          mode: "ON"  # <-
        """, "spec", "ClusterRbacConfig has invalid name 'rbac', name must be 'default'", "ClusterRbacConfig",
         "rbac", namespace=""),
    Case("rbac-inclusion-missing", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: RbacConfig
        metadata:
          name: default
        spec:
          mode: ON_WITH_INCLUSION  # <-
        """, "spec.inclusion", "inclusion cannot be null", "RbacConfig", "default"),
    Case("rbac-config-mode-typo", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: RbacConfig
        metadata:
          name: default
        spec:
          mode: ON_WITH_INCLUDE  # <-
          inclusion: {namespaces: [default]}
        """, "spec.mode", "(did you mean 'ON_WITH_INCLUSION'?)", "RbacConfig", "default"),
    # -- ServiceRole ------------------------------------------------------------------------------
    Case("servicerole-empty-rules", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata:
          name: viewer
        spec:
          rules: []  # <-
        """, "spec.rules", "at least 1 rule must be specified", "ServiceRole", "viewer"),
    Case("servicerole-rule-without-services", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata:
          name: viewer
        spec:
          rules:
          - methods: [GET]  # <-
        """, "spec.rules[0].services", "at least 1 service must be specified for a rule", "ServiceRole", "viewer"),
    Case("servicerole-methods-and-not-methods", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata:
          name: viewer
        spec:
          rules:
          - services: ["*"]
            methods: [GET]
            notMethods: [POST]  # <-
        """, "spec.rules[0].notMethods", "cannot have both regular and *not* attributes", "ServiceRole", "viewer"),
    Case("servicerole-port-out-of-range", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRole
        metadata:
          name: viewer
          namespace: bookinfo
        spec:
          rules:
          - services: ["*"]
            ports:
            - 70000  # <-
        """, "spec.rules[0].ports[0]", "port 70000 is not in the range of [0, 65535]", "ServiceRole", "viewer",
         namespace="bookinfo"),
    # -- ServiceRoleBinding -----------------------------------------------------------------------
    Case("binding-without-subjects", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata:
          name: bind-viewer
        spec:
          roleRef:  # <-
            kind: ServiceRole
            name: viewer
        """, "spec.subjects", "at least 1 subject must be specified", "ServiceRoleBinding", "bind-viewer"),
    Case("binding-role-ref-kind", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata:
          name: bind-viewer
        spec:
          subjects:
          - user: "*"
          roleRef:
            kind: Role  # <-
            name: viewer
        """, "spec.roleRef.kind", "kind set to 'Role', currently the only supported value is 'ServiceRole'",
         "ServiceRoleBinding", "bind-viewer"),
    Case("binding-star-in-names", """
        apiVersion: rbac.istio.io/v1alpha1
        kind: ServiceRoleBinding
        metadata:
          name: bind-viewer
        spec:
          subjects:
          - names:
            - "*"  # <-
          roleRef: {kind: ServiceRole, name: viewer}
        """, "spec.subjects[0].names[0]", "do not use * in names", "ServiceRoleBinding", "bind-viewer"),
    # -- Mixer (config.istio.io/v1alpha2) ---------------------------------------------------------
    Case("mixer-rule-without-actions", """
        apiVersion: config.istio.io/v1alpha2
        kind: rule
        metadata:
          name: deny-reviews
        spec:
          match: destination.labels["app"] == "reviews"  # <-
        """, "spec.actions", "no valid actions found in rule", "rule", "deny-reviews"),
    Case("mixer-action-without-handler", """
        apiVersion: config.istio.io/v1alpha2
        kind: rule
        metadata:
          name: deny-reviews
        spec:
          actions:
          - instances: [denyrequest.checknothing]  # <-
        """, "spec.actions[0].handler", "action needs a handler", "rule", "deny-reviews"),
    Case("mixer-listchecker-refresh-too-short", """
        apiVersion: config.istio.io/v1alpha2
        kind: listchecker
        metadata:
          name: whitelist
        spec:
          providerUrl: https://lists.example.com/v1
          refreshInterval: 500ms  # <-
          ttl: 10s
        """, "spec.refreshInterval", "refresh interval must be at least 1 second", "listchecker", "whitelist"),
    Case("mixer-listchecker-bad-ip-override", """
        apiVersion: config.istio.io/v1alpha2
        kind: listchecker
        metadata:
          name: whitelistip
        spec:
          entryType: IP_ADDRESSES
          overrides:
          - 10.57.0.0/16
          - not-an-ip  # <-
        """, "spec.overrides[1]", "could not parse ip address override 'not-an-ip'", "listchecker", "whitelistip"),
    Case("mixer-listentry-unknown-field", """
        apiVersion: config.istio.io/v1alpha2
        kind: listentry
        metadata:
          name: appversion
        spec:
          value: source.labels["version"]
          values: [v1]  # <-
        """, "spec.values", "unknown field 'values' (did you mean 'value'?)", "listentry", "appversion"),
    Case("mixer-denier-code-is-a-string", """
        apiVersion: config.istio.io/v1alpha2
        kind: denier
        metadata:
          name: denyall
        spec:
          status:
            code: PERMISSION_DENIED  # <-
            message: Not allowed
        """, "spec.status.code", "expected an integer, got the string 'PERMISSION_DENIED'", "denier", "denyall"),
    Case("mixer-handler-without-adapter", """
        apiVersion: config.istio.io/v1alpha2
        kind: handler
        metadata:
          name: denyall
        spec:
          params:  # <-
            status: {code: 7}
        """, "spec.compiledAdapter", "handler must name its adapter", "handler", "denyall"),
    Case("mixer-handler-listchecker-params", """
        apiVersion: config.istio.io/v1alpha2
        kind: handler
        metadata:
          name: whitelist
        spec:
          compiledAdapter: listchecker
          params:
            overrides: [v1, v2]
            blacklist: "no"  # <-
        """, "spec.params.blacklist", "expected true or false, got the string 'no'", "handler", "whitelist"),
    Case("mixer-instance-without-template", """
        apiVersion: config.istio.io/v1alpha2
        kind: instance
        metadata:
          name: appversion
        spec:
          params:  # <-
            value: source.labels["version"]
        """, "spec.compiledTemplate", "missing compiled template", "instance", "appversion"),
    # -- MeshConfig: ConfigMap `istio` data.mesh, and pymesh/v1 MeshConfig -----------------------
    Case("meshconfig-configmap-on-for-trust-domain", """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: istio
          namespace: istio-system
        data:
          mesh: |-
            enableTracing: false
            trustDomain: on  # <-
        """, "data.mesh.trustDomain", "YAML reads on as a boolean", "ConfigMap", "istio", namespace="istio-system"),
    Case("meshconfig-configmap-outbound-mode", """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: istio
        data:
          mesh: |
            outboundTrafficPolicy:
              mode: REGISTRY  # <-
        """, "data.mesh.outboundTrafficPolicy.mode", "(did you mean 'REGISTRY_ONLY'?)", "ConfigMap", "istio"),
    Case("meshconfig-configmap-unknown-field", """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: istio
          namespace: istio-system
        data:
          mesh: |-
            accessLogFile: /dev/stdout
            enableTracng: true  # <-
        """, "data.mesh.enableTracng", "unknown field 'enableTracng' (did you mean 'enableTracing'?)", "ConfigMap",
         "istio", namespace="istio-system"),
    Case("meshconfig-configmap-embedded-yaml-syntax", """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: istio
          namespace: istio-system
        data:
          mesh: |-
            accessLogFile: /dev/stdout
            defaultConfig: {discoveryAddress: istiod.istio-system.svc: 15012}  # <-
        """, "", "YAML syntax", "ConfigMap", "istio", namespace="istio-system"),
    Case("meshconfig-pymesh-connect-timeout-number", """
        apiVersion: pymesh/v1
        kind: MeshConfig
        metadata:
          name: mesh
        spec:
          connectTimeout: 10  # <-
        """, "spec.connectTimeout", "expected a string, got the number '10'", "MeshConfig", "mesh", namespace=""),
    Case("meshconfig-pymesh-root-namespace", """
        apiVersion: pymesh/v1
        kind: MeshConfig
        metadata:
          name: mesh
        spec:
          rootNamespace: Istio_System  # <-
        """, "spec.rootNamespace", "rootNamespace 'Istio_System' is not a DNS-1123 label", "MeshConfig", "mesh",
         namespace=""),
    Case("meshconfig-pymesh-duplicate-provider", """
        apiVersion: pymesh/v1
        kind: MeshConfig
        metadata:
          name: mesh
        spec:
          extensionProviders:
          - name: ext-authz
            envoyExtAuthzHttp: {service: authz.foo.svc.cluster.local, port: 8000}
          - name: ext-authz  # <-
            envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}
        """, "spec.extensionProviders[1].name", "duplicate extension provider name 'ext-authz'", "MeshConfig", "mesh",
         namespace=""),
    Case("meshconfig-pymesh-unsupported-version", """
        apiVersion: pymesh/v2  # <-
        kind: MeshConfig
        metadata:
          name: mesh
        spec:
          trustDomain: example.org
        """, "apiVersion", "unsupported apiVersion 'pymesh/v2' for MeshConfig (accepted: pymesh/v1)", "MeshConfig",
         "mesh", namespace=""),
    Case("meshconfig-pymesh-retry-policy", """
        apiVersion: pymesh/v1
        kind: MeshConfig
        metadata:
          name: mesh
        spec:
          defaultHttpRetryPolicy:
            attempts: 2
            retryOn: 5xx,bogus-condition  # <-
        """, "spec.defaultHttpRetryPolicy.retryOn", "'bogus-condition' is not a valid retryOn policy", "MeshConfig",
         "mesh", namespace=""),
]


def _params(attr: str) -> list[pytest.ParameterSet]:
    out = []
    for case in CASES:
        bug = getattr(case, attr)
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug)] if bug else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def test_the_table_is_big_and_covers_every_kind() -> None:
    assert len(CASES) >= 70
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    kinds = {c.kind for c in CASES}
    for kind in ("VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Gateway",
                 "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy", "Policy", "MeshPolicy",
                 "RbacConfig", "ClusterRbacConfig", "ServiceRole", "ServiceRoleBinding", "rule", "listchecker",
                 "listentry", "denier", "handler", "instance", "ConfigMap", "MeshConfig"):
        assert kind in kinds, kind


@pytest.mark.parametrize("case", _params("bug_where"))
def test_rejected_with_path_line_and_reason(case: Case) -> None:
    issue = the_error(case)
    assert issue.severity == "error"
    assert issue.file == FILE
    assert issue.document == case.document
    assert issue.path == case.path
    assert issue.line == case.line, f"points at line {issue.line}, expected {case.line}: {issue}"
    assert case.reason in issue.message
    assert issue.message.strip()
    assert "\n" not in issue.message, "the reason is one line"


@pytest.mark.parametrize("case", _params("bug_whose"))
def test_rejected_naming_the_document(case: Case) -> None:
    issue = the_error(case)
    assert (issue.kind, issue.namespace, issue.name) == (case.kind, case.namespace, case.name)


# -- whole-load behaviour --------------------------------------------------------------------------

THREE_ERRORS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -1
    timeout: soon
    retries:
      attempts: 3
      retryOn: sometimes
"""


def test_every_finding_of_a_document_is_reported_at_once() -> None:
    err = rejected(THREE_ERRORS)
    found = sorted((i.path, i.line) for i in err.errors)
    assert found == [
        ("spec.http[0].retries.retryOn", 15),
        ("spec.http[0].route[0].weight", 11),
        ("spec.http[0].timeout", 12),
    ]
    assert {(i.kind, i.namespace, i.name, i.document) for i in err.errors} == {
        ("VirtualService", "bookinfo", "reviews", 0)
    }
    assert str(err).startswith("3 error(s) in mesh config:")


def test_findings_in_several_documents_and_files_are_all_reported() -> None:
    first = THREE_ERRORS + "---\n" + textwrap.dedent(VS_OK)
    second = textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: ratings
        spec:
          host: ratings
          subsets:
          - name: version_1
        """)
    with pytest.raises(ConfigError) as info:
        load([Text(first, "a.yaml"), Text(second, "b.yaml")])
    where = sorted({(i.file, i.document) for i in info.value.errors})
    assert where == [("a.yaml", 0), ("b.yaml", 0)]
    assert len(info.value.errors) == 4


GOOD = textwrap.dedent(VS_OK) + textwrap.dedent("""\
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata:
      name: reviews
    spec:
      host: reviews
      subsets:
      - {name: v1, labels: {version: v1}}
    """)
BAD = textwrap.dedent("""\
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata:
      name: deny-all
    spec:
      action: DENY
    """)


def test_one_bad_document_among_good_ones_fails_the_whole_load() -> None:
    assert len(load([Text(GOOD)]).resources) == 2  # the good part alone is fine
    err = rejected(GOOD + BAD)
    assert [(i.document, i.kind, i.name, i.path) for i in err.errors] == [
        (2, "AuthorizationPolicy", "deny-all", "spec.rules")
    ]
    with pytest.raises(ConfigError):
        pymesh.Mesh.from_yaml(GOOD + BAD)


def test_a_failed_reload_keeps_serving_the_last_good_config(tmp_path: Path) -> None:
    src = tmp_path / "mesh.yaml"
    src.write_text(GOOD)
    mesh = pymesh.Mesh.from_path(src)
    before = mesh.snapshot
    src.write_text(GOOD.replace("v1}}", "v1}}\n  - {name: v2, labels: {version: v2}}") + BAD)
    with pytest.raises(ConfigError):
        mesh.reload()
    assert mesh.snapshot is before
    assert [s.name for s in mesh.config.of_kind("DestinationRule")[0].spec.subsets] == ["v1"]


def test_documents_without_a_namespace_take_the_namespace_argument() -> None:
    text = textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: recommendation
        spec:
          host: recommendation
          subsets:
          - name: v_2
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: preference
          namespace: other
        spec:
          host: preference
          subsets:
          - name: v_2
        """)
    err = rejected(text, namespace="tutorial")
    assert sorted((i.document, i.namespace, i.name) for i in err.errors) == [
        (0, "tutorial", "recommendation"),
        (1, "other", "preference"),
    ]
    config: Config = load([Text(text.replace("v_2", "v2"))], namespace="tutorial")
    assert sorted((r.namespace, r.name) for r in config.resources) == [
        ("other", "preference"),
        ("tutorial", "recommendation"),
    ]


def test_cluster_scoped_kinds_ignore_the_namespace_argument() -> None:
    text = textwrap.dedent("""\
        apiVersion: authentication.istio.io/v1alpha1
        kind: MeshPolicy
        metadata:
          name: everything
        spec:
          peers:
          - mtls: {}
        """)
    err = rejected(text, namespace="tutorial")
    assert [(i.kind, i.namespace, i.name) for i in err.errors] == [("MeshPolicy", "", "everything")]


def test_issue_renders_as_file_line_col_document_kind_ns_name_path_reason() -> None:
    text = textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: reviews
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
              weight: 90
            - destination: {host: reviews, subset: v2}
              weight: -10
        """)
    # An empty document still counts: the reviews document is number 2.
    first = "---\n# nothing here\n---\n" + textwrap.dedent(VS_OK).replace("reviews", "ratings") + "---\n"
    err = rejected(first + text, namespace="bookinfo", name="mesh/reviews.yaml")
    (issue,) = err.errors
    assert str(issue) == (
        "mesh/reviews.yaml:25:15: document 2: VirtualService bookinfo/reviews: "
        "spec.http[0].route[1].weight: weight -10 must be >= 0"
    )
    assert issue.location == "mesh/reviews.yaml:25:15"
    assert issue.resource == "VirtualService bookinfo/reviews"
    assert str(issue) in str(err)


def test_config_error_is_a_mesh_error_and_a_value_error() -> None:
    err = rejected(GOOD + BAD)
    assert isinstance(err, MeshError)
    assert isinstance(err, ValueError)
    assert isinstance(err, pymesh.ConfigError)
    assert err.errors
    assert all(i.severity == "error" for i in err.errors)


def test_unknown_kinds_are_skipped_with_a_warning_not_an_error() -> None:
    text = GOOD + textwrap.dedent("""\
        ---
        apiVersion: config.istio.io/v1alpha2
        kind: fluentd
        metadata:
          name: handler
        spec: {}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: reviews-v1
        spec: {replicas: 1}
        ---
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata:
          name: lua
        spec: {}
        """)
    config = load([Text(text)])
    assert len(config.resources) == 2
    messages = [w.message for w in config.warnings if w.path == "kind"]
    assert len(messages) == 3
    assert "check the spelling" in messages[0]
    assert "check the spelling" not in messages[1]
    assert "check the spelling" not in messages[2]


@pytest.mark.parametrize(("api_version", "kind", "hint"), [
    ("security.istio.io/v1", "AuthorisationPolicy", "did you mean AuthorizationPolicy?"),
    ("networking.istio.io/v1", "VirtualServise", "did you mean VirtualService?"),
    ("security.istio.io/v1", "Firewall", ""),
])
def test_an_unknown_kind_in_an_istio_group_is_an_error(api_version: str, kind: str, hint: str) -> None:
    # Skipping it would silently drop what may be a misspelt DENY policy; the API server refuses it.
    text = GOOD + textwrap.dedent(f"""\
        ---
        apiVersion: {api_version}
        kind: {kind}
        metadata:
          name: deny-admin
        spec:
          action: DENY
          rules: [{{to: [{{operation: {{paths: ["/admin/*"]}}}}]}}]
        """)
    with pytest.raises(ConfigError) as err:
        load([Text(text)])
    [issue] = [i for i in err.value.issues if i.severity == "error"]
    assert (issue.path, issue.kind, issue.name) == ("kind", kind, "deny-admin")
    assert f"has no kind {kind!r}" in issue.message
    assert hint in issue.message
    assert issue.line is not None
    assert issue.line > 1


def test_a_warning_alone_does_not_fail_but_travels_with_an_error() -> None:
    deprecated = textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
          trafficPolicy:
            outlierDetection: {consecutiveErrors: 5}
        """)
    config = load([Text(deprecated)])
    assert any("consecutiveErrors" in w.message for w in config.warnings)
    err = rejected(deprecated + BAD)
    assert {i.severity for i in err.issues} == {"error", "warning"}
    assert len(err.errors) == 1


# -- ConfigMap `istio`: data.mesh is YAML inside a string; findings must point into the file ----------

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    trustDomain: on
"""


def test_configmap_mesh_findings_point_at_the_file_line() -> None:
    (issue,) = rejected(CONFIGMAP).errors
    assert (issue.path, issue.line) == ("data.mesh.trustDomain", 9)


def test_configmap_mesh_findings_point_at_the_file_column() -> None:
    (issue,) = rejected(CONFIGMAP).errors
    assert issue.column == CONFIGMAP.splitlines()[8].index("on") + 1  # 18, not 14


def test_configmap_mesh_duplicate_key_names_file_lines() -> None:
    text = CONFIGMAP.replace("trustDomain: on", "accessLogFile: /dev/null")
    (issue,) = rejected(text).errors
    assert issue.line == 9
    assert "first at line 8" in issue.message, issue.message


def test_configmap_mesh_as_a_quoted_string_points_at_the_string() -> None:
    text = CONFIGMAP.split("  mesh:")[0] + '  mesh: "accessLogFile: /dev/stdout\\ntrustDomain: on"\n'
    assert text.count("\n") == 7
    (issue,) = rejected(text).errors
    assert issue.path == "data.mesh.trustDomain"
    assert issue.line == 7
