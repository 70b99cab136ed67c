"""Gateway models: decoded values, Istio's validation rules, and the conformance corpus."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.config.decode import Report, decode
from pymesh.config.networking.gateway import KINDS, Gateway

SPECS: dict[str, type[Any]] = {k.kind: k.spec for k in KINDS}


def load(text: str) -> tuple[Any, Report]:
    r = Report("t.yaml", 0)
    r.namespace = "default"
    node = yaml.compose(textwrap.dedent(text))
    assert node is not None
    return decode(Gateway, node, r, ("spec",)), r


def errors(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "error"]


def warnings(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "warning"]


def gateway(server: str) -> str:
    """A one-server Gateway spec around the given server mapping (flow style)."""
    return f"selector: {{istio: ingressgateway}}\nservers: [{server}]"


def test_kinds() -> None:
    assert [(k.group, k.kind, k.versions) for k in KINDS] == [
        ("networking.istio.io", "Gateway", ("v1", "v1beta1", "v1alpha3")),
    ]
    assert SPECS["Gateway"] is Gateway


# -- valid input, decoded values ------------------------------------------------------------------


def test_gateway_values() -> None:
    spec, r = load("""
        selector: {istio: ingressgateway}
        servers:
        - port: {number: 80, name: http, protocol: http}
          hosts: ["*"]
          tls: {httpsRedirect: true}
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: [bookinfo/reviews.example.com, "./*.example.com", "*/api.example.com"]
          name: main-https
          tls:
            mode: SIMPLE
            credentialName: reviews-cert
            minProtocolVersion: TLSV1_2
            cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]
        - port: {number: 8443, name: tls-pass, protocol: TLS}
          hosts: ["*.internal.example.com"]
          tls: {mode: PASSTHROUGH}
        - port: {number: 15443, name: mtls, protocol: tls}
          hosts: ["*.local"]
          tls: {mode: MUTUAL, serverCertificate: /s.pem, privateKey: /k.pem, caCertificates: /ca.pem,
                subjectAltNames: [client.example.com]}
        - port: {number: 0, name: uds, protocol: HTTP}
          bind: unix:///var/run/gw.sock
          hosts: [uds.example.com]
        - port: {number: 9000, name: tcp, protocol: TCP}
          bind: 10.0.0.1
          hosts: ["*"]
    """)
    assert errors(r) == []
    assert warnings(r) == []
    assert spec.selector == {"istio": "ingressgateway"}
    http, https, passthrough, mtls, uds, tcp = spec.servers
    assert (http.port.number, http.port.name, http.port.protocol) == (80, "http", "HTTP")
    assert http.tls is not None
    assert http.tls.https_redirect
    assert http.tls.mode == "PASSTHROUGH"
    assert https.name == "main-https"
    assert https.hosts[0] == "bookinfo/reviews.example.com"
    assert https.tls is not None
    assert https.tls.mode == "SIMPLE"
    assert https.tls.credential_name == "reviews-cert"
    assert https.tls.min_protocol_version == "TLSV1_2"
    assert https.tls.max_protocol_version == "TLS_AUTO"
    assert passthrough.tls is not None
    assert passthrough.tls.is_passthrough
    assert mtls.port.protocol == "TLS"
    assert mtls.tls is not None
    assert mtls.tls.subject_alt_names == ("client.example.com",)
    assert uds.bind == "unix:///var/run/gw.sock"
    assert uds.port.number == 0
    assert tcp.bind == "10.0.0.1"
    assert tcp.tls is None
    assert tcp.port.target_port == 0


def test_tls_certificates_and_credential_names() -> None:
    spec, r = load(gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, "
        "tlsCertificates: [{serverCertificate: /rsa.pem, privateKey: /rsa.key}, "
        "{serverCertificate: /ec.pem, privateKey: /ec.key}]}}"
    ))
    assert errors(r) == []
    assert [c.server_certificate for c in spec.servers[0].tls.tls_certificates] == ["/rsa.pem", "/ec.pem"]
    spec, r = load(gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: OPTIONAL_MUTUAL, "
        "credentialNames: [rsa, ecdsa]}}"
    ))
    assert errors(r) == []
    assert spec.servers[0].tls.credential_names == ("rsa", "ecdsa")


@pytest.mark.parametrize(("server", "path", "fragment"), [
    pytest.param("{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.b.c], "
                 "tls: {mode: SIMPLE, credentialName: c, cipherSuites: [NOT-A-CIPHER]}}",
                 "spec.servers[0].tls.cipherSuites", "ignoring invalid cipher suites", id="bad-cipher"),
    pytest.param("{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.b.c], "
                 "tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_1}}",
                 "spec.servers[0].tls.minProtocolVersion", "below TLSV1_2", id="old-tls"),
    pytest.param("{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.b.c], "
                 "tls: {mode: PASSTHROUGH, serverCertificate: /s.pem}}",
                 "spec.servers[0].tls.mode", "does not use certificates", id="passthrough-certs"),
    pytest.param("{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.b.c], "
                 "tls: {httpsRedirect: true, mode: SIMPLE, credentialName: c}}",
                 "spec.servers[0].tls.httpsRedirect", "only be used with http servers", id="redirect-on-https"),
])
def test_warnings(server: str, path: str, fragment: str) -> None:
    _, r = load(gateway(server))
    assert errors(r) == []
    assert [(p, fragment in m) for p, m in warnings(r)] == [(path, True)]


# -- invalid input --------------------------------------------------------------------------------

HTTP80 = "port: {number: 80, name: http, protocol: HTTP}"
HTTPS = "port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com]"

INVALID_CASES = [
    pytest.param("selector: {istio: ingressgateway}", "spec.servers", "at least one server", id="no-servers"),
    pytest.param(gateway("{hosts: ['*']}"), "spec.servers[0].port", "missing required field 'port'", id="no-port"),
    pytest.param(gateway(f"{{{HTTP80}}}"), "spec.servers[0].hosts", "missing required field 'hosts'",
                 id="no-hosts"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: []}}"), "spec.servers[0].hosts", "at least one host",
                 id="empty-hosts"),
    pytest.param(gateway("{port: {number: 80, name: http}, hosts: ['*']}"), "spec.servers[0].port.protocol",
                 "missing required field 'protocol'", id="no-protocol"),
    pytest.param(gateway("{port: {number: 80, name: http, protocol: ''}, hosts: ['*']}"),
                 "spec.servers[0].port.protocol", "protocol must be set", id="empty-protocol"),
    pytest.param(gateway("{port: {number: 80, name: http, protocol: QUIC}, hosts: ['*']}"),
                 "spec.servers[0].port.protocol", "unsupported protocol 'QUIC'", id="unknown-protocol"),
    pytest.param(gateway("{port: {number: 80, protocol: HTTP}, hosts: ['*']}"), "spec.servers[0].port.name",
                 "missing required field 'name'", id="no-port-name"),
    pytest.param(gateway("{port: {number: 80, name: '', protocol: HTTP}, hosts: ['*']}"),
                 "spec.servers[0].port.name", "port name must be set", id="empty-port-name"),
    pytest.param(gateway("{port: {number: 0, name: http, protocol: HTTP}, hosts: ['*']}"),
                 "spec.servers[0].port.number", "must be in the range 1..65535", id="port-zero"),
    pytest.param(gateway("{port: {number: 70000, name: http, protocol: HTTP}, hosts: ['*']}"),
                 "spec.servers[0].port.number", "must be in the range 1..65535", id="port-high"),
    pytest.param(gateway("{port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}, hosts: ['*']}"),
                 "spec.servers[0].port.targetPort", "targetPort has no impact on Gateways", id="target-port"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: [reviews]}}"), "spec.servers[0].hosts[0]",
                 "short names (non FQDN) are not allowed", id="short-name"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: [ns/reviews]}}"), "spec.servers[0].hosts[0]",
                 "short names (non FQDN) are not allowed", id="short-name-with-ns"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: ['foo*.example.com']}}"), "spec.servers[0].hosts[0]",
                 "invalid", id="partial-wildcard-label"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: ['*foo.example.com']}}"), "spec.servers[0].hosts[0]",
                 "partial wildcard '*foo.example.com' not allowed", id="partial-wildcard-prefix"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: ['Not_A_Namespace/a.example.com']}}"), "spec.servers[0].hosts[0]",
                 "invalid namespace value", id="bad-namespace"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: ['/a.example.com']}}"), "spec.servers[0].hosts[0]",
                 "cannot be empty", id="empty-namespace"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: ['a_b.example.com']}}"), "spec.servers[0].hosts[0]",
                 "invalid", id="bad-dns"),
    pytest.param("servers: [{" + HTTP80 + ", hosts: ['*']}, {port: {number: 81, name: http, protocol: HTTP}, "
                 "hosts: ['*']}]", "spec.servers[1].port.name", "port names in servers must be unique",
                 id="duplicate-port-name"),
    pytest.param(gateway(f"{{{HTTPS}}}"), "spec.servers[0].tls", "must have TLS settings for HTTPS/TLS",
                 id="https-without-tls"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: ['*'], tls: {{mode: SIMPLE, credentialName: c}}}}"),
                 "spec.servers[0].tls", "cannot have TLS settings for plain text HTTP ports", id="http-with-tls"),
    pytest.param(gateway("{port: {number: 9000, name: tcp, protocol: TCP}, hosts: ['*'], "
                         "tls: {httpsRedirect: true}}"),
                 "spec.servers[0].tls", "cannot have TLS settings for non HTTPS/TLS ports", id="tcp-with-tls"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: SIMPLE, privateKey: /k.pem}}}}"),
                 "spec.servers[0].tls.serverCertificate", "SIMPLE TLS requires a server certificate",
                 id="simple-no-cert"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: SIMPLE, serverCertificate: /s.pem}}}}"),
                 "spec.servers[0].tls.privateKey", "SIMPLE TLS requires a private key", id="simple-no-key"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: MUTUAL, serverCertificate: /s.pem, privateKey: /k.pem}}}}"),
                 "spec.servers[0].tls.caCertificates", "MUTUAL TLS requires a client CA bundle", id="mutual-no-ca"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: ISTIO_MUTUAL, serverCertificate: /s.pem}}}}"),
                 "spec.servers[0].tls.serverCertificate", "ISTIO_MUTUAL TLS cannot have associated serverCertificate",
                 id="istio-mutual-cert"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: SIMPLE, credentialName: c, serverCertificate: /s.pem, "
                         "privateKey: /k.pem}}"),
                 "spec.servers[0].tls", "only one of credential_name, credential_names", id="two-cert-sources"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: SIMPLE, credentialNames: [a, b, c]}}}}"),
                 "spec.servers[0].tls.credentialNames", "at most 2", id="three-credential-names"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: SIMPLE, tlsCertificates: [{{serverCertificate: /s.pem}}]}}}}"),
                 "spec.servers[0].tls.tlsCertificates[0].privateKey", "requires a private key",
                 id="tls-certificate-no-key"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: SIMPLE, serverCertificate: /s.pem, privateKey: /k.pem, "
                         "caCrl: /crl.pem}}"),
                 "spec.servers[0].tls.caCrl", "CRL is not supported with SIMPLE TLS", id="simple-crl"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: MUTUAL, credentialName: c, caCrl: /crl.pem}}}}"),
                 "spec.servers[0].tls.caCrl", "CRL is not supported with credentialName", id="credential-crl"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: STRICT}}}}"), "spec.servers[0].tls.mode", "is not one of",
                 id="tls-mode"),
    pytest.param(gateway(f"{{{HTTPS}, tls: {{mode: SIMPLE, credentialName: c, maxProtocolVersion: TLSV1_4}}}}"),
                 "spec.servers[0].tls.maxProtocolVersion", "is not one of", id="tls-version"),
    pytest.param(gateway("{port: {number: 80, name: http, protocol: HTTP}, bind: 'unix:///gw.sock', hosts: ['*']}"),
                 "spec.servers[0].port.number", "must be 0 for unix domain socket", id="uds-with-port"),
    pytest.param(gateway("{port: {number: 0, name: http, protocol: HTTP}, bind: 'unix://gw.sock', hosts: ['*']}"),
                 "spec.servers[0].bind", "UDS must be an absolute path", id="uds-relative"),
    pytest.param(gateway(f"{{{HTTP80}, bind: localhost, hosts: ['*']}}"), "spec.servers[0].bind",
                 "is not a valid IP", id="bind-hostname"),
    pytest.param(gateway(f"{{{HTTP80}, hosts: ['*'], tlsSettings: {{}}}}"), "spec.servers[0].tlsSettings",
                 "unknown field", id="unknown-field"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), INVALID_CASES)
def test_invalid(text: str, path: str, fragment: str) -> None:
    _, r = load(text)
    errs = errors(r)
    assert errs, f"expected an error at {path}"
    assert errs[0][0] == path
    assert fragment in errs[0][1]


# -- the conformance corpus -------------------------------------------------------------------------


def test_corpus_valid(conformance: Path) -> None:
    files = sorted([
        *conformance.glob("bookinfo/*.yaml"), *conformance.glob("istio-tutorial/*.yml"),
        *conformance.glob("istio-tutorial/*.yaml"), *conformance.glob("legacy/*"),
        *conformance.glob("validation/*-valid.yaml"),
    ])
    seen = []
    for f in files:
        for i, doc in enumerate(yaml.compose_all(f.read_text())):
            if doc is None:
                continue
            mapping = {k.value: v for k, v in doc.value}
            if "kind" not in mapping or mapping["kind"].value != "Gateway":
                continue
            r = Report(f.name, i)
            r.namespace = "default"
            node = mapping.get("spec") or yaml.compose("{}")
            assert node is not None
            spec = decode(Gateway, node, r, ("spec",))
            assert errors(r) == [], f"{f.name} document {i}"
            seen.append((f.name, spec.servers[0].port.protocol))
    # Istio has no Gateway validation YAML in the corpus; the three sample gateways must load.
    assert sorted(seen) == [("bookinfo-gateway.yaml", "HTTP"), ("customer-Gateway.yml", "HTTP"),
                            ("httpbin-gateway.yaml", "HTTP")]
